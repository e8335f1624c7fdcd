"""Gymnasium environments behind the vector interface: ids, flattening, per-environment resets."""

from __future__ import annotations

import numpy as np
import pytest

from actors.gym_env import GymVectorEnv, pack_samples, samples_of


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


SAMPLES_ENV = "tests.actors.samples_env:SamplesEnv"


def test_dynamics_samples_arrive_per_environment_padded_with_a_presence_mask():
    env = GymVectorEnv(SAMPLES_ENV, 2)
    env.reset(0)
    first, second, third = (env.step(np.zeros((2, 1), np.float32)) for _ in range(3))
    assert env.dt == 0.05 and env.reports_samples
    assert first.dynamics_samples.shape == (2, 1, 4) and first.dynamics_present.tolist() == [[True], [True]]
    assert first.dynamics_samples[:, 0].tolist() == [[1.0, 10.0, 0.5, 0.0]] * 2
    assert second.dynamics_present.tolist() == [[True, True]] * 2  # step 2: two samples each
    assert second.dynamics_samples[0, :, 1].tolist() == [10.0, 11.0]
    assert third.dynamics_samples is None and third.dynamics_present is None  # step 3: none at all


def test_the_last_step_of_an_episode_is_read_from_final_info():
    env = GymVectorEnv(SAMPLES_ENV, 1)
    env.reset(0)
    last = [env.step(np.zeros((1, 1), np.float32)) for _ in range(4)][-1]
    assert last.truncated.tolist() == [True]  # same-step autoreset: info holds the reset, final_info the step
    assert last.dynamics_samples.tolist() == [[[4.0, 10.0, 0.5, 0.0]]] and last.dynamics_present.tolist() == [[True]]


def test_a_malformed_entry_becomes_one_non_finite_sample():
    env = GymVectorEnv(SAMPLES_ENV, 1, {"malformed": True})
    env.reset(0)
    env.step(np.zeros((1, 1), np.float32))
    step = env.step(np.zeros((1, 1), np.float32))
    assert step.dynamics_present.tolist() == [[True]] and np.isnan(step.dynamics_samples).all()


def test_samples_of_and_pack_samples():
    assert samples_of([1, 2, 3, 4]).tolist() == [[1.0, 2.0, 3.0, 4.0]]  # one sample as a flat 4-vector
    assert samples_of(np.zeros((0, 4))).shape == (0, 4)
    assert np.isnan(samples_of([[1, 2, 3]])).all() and np.isnan(samples_of({"u": 1})).all()
    samples, present = pack_samples([np.ones((2, 4)), None, np.zeros((0, 4))])
    assert samples.shape == (3, 2, 4) and present.tolist() == [[True, True], [False, False], [False, False]]
    assert pack_samples([None, np.zeros((0, 4))]) == (None, None)


def test_an_environment_without_samples_says_so():
    env = GymVectorEnv("Pendulum-v1", 1)
    env.reset(0)
    step = env.step(np.zeros((1, 1), np.float32))
    assert (step.dynamics_samples, env.reports_samples, env.dt) == (None, False, 0.05)  # Pendulum's own dt
