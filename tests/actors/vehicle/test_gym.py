"""The single-vehicle gymnasium wrapper."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

import actors.vehicle  # noqa: F401  registers dmsac/Vehicle-v0
from actors.vehicle.config import VehicleConfig


def test_registered_and_passes_the_env_checker():
    env = gym.make("dmsac/Vehicle-v0")
    assert env.observation_space.shape == (34,) and env.action_space.shape == (1,)
    check_env(env.unwrapped, skip_render_check=True)


def test_truncates_after_the_episode_and_reset_is_seeded():
    env = gym.make("dmsac/Vehicle-v0", config=VehicleConfig(episode_steps=20))
    obs_a, _ = env.reset(seed=4)
    obs_b, _ = env.reset(seed=4)
    assert np.array_equal(obs_a, obs_b)
    total = 0.0
    for k in range(20):
        obs, reward, terminated, truncated, info = env.step(np.array([0.5], dtype=np.float32))
        total += reward
        assert not terminated and truncated == (k == 19)
    assert obs[2] == np.float32(0.5)  # the true last observation, not a reset one
    assert np.isfinite(total) and total < 0.0 and "speed_error" in info
