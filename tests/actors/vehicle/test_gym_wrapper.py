"""The single-vehicle gymnasium wrapper."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import actors.vehicle  # noqa: F401  registers dmsac/Vehicle-v0
from actors.vehicle.config import VehicleConfig
from actors.vehicle.gym_wrapper import GYM_ID, VehicleGymEnv, register_gym_env


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


def test_info_carries_the_steps_dynamics_sample_and_speed_error():
    env = VehicleGymEnv(VehicleConfig(episode_steps=5))
    obs, _ = env.reset(seed=1)
    v_start = env.vector_env.speed[0]  # the true speed, never observed
    _, _, _, _, info = env.step(np.array([0.25], dtype=np.float32))
    (u, v_meas, accel, theta_meas), = info["dynamics_samples"]  # one sample [1, 4] a step
    # the command, and the speed and pitch measured at step start (the observation holds them in float32)
    assert (u, np.float32(v_meas), np.float32(theta_meas)) == (0.25, obs[0], obs[3])
    # the true mean acceleration over the step, and the true speed's distance from the reference after it
    v_end, v_ref = env.vector_env.speed[0], env.vector_env.reference[0, 1]
    assert accel == pytest.approx((v_end - v_start) / env.config.dt, rel=1e-12) and accel != 0.0
    assert info["speed_error"] == pytest.approx(abs(v_end - v_ref), rel=1e-12)


def test_the_vector_env_underneath_is_one_vehicle():
    env = VehicleGymEnv()
    inner = env.vector_env
    assert inner.num_envs == 1 and inner.observation_dim == env.observation_space.shape[0]
    assert inner.true_dynamics_map(np.array([-0.5, 0.5]), np.array([5.0, 10.0, 15.0])).shape == (1, 2, 3)


def test_registration_is_idempotent_and_names_the_wrapper():
    register_gym_env()
    register_gym_env()
    assert sum(name == GYM_ID for name in gym.registry) == 1
    assert gym.spec(GYM_ID).entry_point == "actors.vehicle.gym_wrapper:VehicleGymEnv"
