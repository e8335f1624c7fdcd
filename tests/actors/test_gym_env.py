"""Gymnasium environments behind the vector interface: ids, flattening, per-environment resets."""

from __future__ import annotations

import numpy as np
import pytest

from actors.gym_env import GymVectorEnv


def test_reset_envs_resets_only_the_named_environments():
    env = GymVectorEnv("Pendulum-v1", 3)
    env.reset(0)
    for _ in range(5):
        step = env.step(np.ones((3, 1), np.float32))
    inner = [e.unwrapped for e in env.envs.envs]
    states = [e.state.copy() for e in inner]
    rows = env.reset_envs(np.array([2]))
    assert rows.shape == (1, 3) and rows.dtype == np.float32
    theta, theta_dot = inner[2].state
    assert rows[0].tolist() == pytest.approx([np.cos(theta), np.sin(theta), theta_dot])  # its new start state
    assert not np.allclose(inner[2].state, states[2])
    assert all(np.array_equal(inner[i].state, states[i]) for i in (0, 1))  # the others go on where they were
    assert np.isfinite(step.obs).all()


def test_a_discrete_action_space_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"SAC needs a continuous \(Box\) action space; CartPole-v1 has Discrete\(2\)"):
        GymVectorEnv("CartPole-v1", 1)
