"""The ``VectorEnv`` contract, held by both environments: shapes, dtypes, self-resetting copies, ``final_obs``."""

import dataclasses

import numpy as np
import pytest

from actors.envs import VecStep
from actors.gym_env import GymVectorEnv
from actors.vehicle.config import VehicleConfig
from actors.vehicle.env import VehicleVectorEnv

N = 3


def pendulum() -> GymVectorEnv:
    return GymVectorEnv("Pendulum-v1", N, {"max_episode_steps": 2})


def vehicle() -> VehicleVectorEnv:
    return VehicleVectorEnv(N, VehicleConfig(episode_steps=2), seed=0)


def test_vec_step_extras_default_to_none_and_it_is_frozen():
    step = VecStep(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool))
    assert step.dynamics_samples is None and step.speed_error is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.reward = np.ones(2)


@pytest.mark.parametrize(("make", "obs_dim", "extras"), [(pendulum, 3, False), (vehicle, 34, True)])
def test_reset_step_and_reset_envs_have_the_interface_shapes(make, obs_dim: int, extras: bool):
    env = make()
    assert (env.num_envs, env.observation_dim, env.action_dim) == (N, obs_dim, 1)
    assert env.action_low.shape == env.action_high.shape == (1,)
    obs = env.reset(0)
    assert obs.shape == (N, obs_dim) and obs.dtype == np.float32
    step = env.step(np.zeros((N, 1), np.float32))
    assert step.obs.shape == step.final_obs.shape == (N, obs_dim)
    assert step.reward.shape == (N,) and step.terminated.dtype == step.truncated.dtype == np.bool_
    assert (step.dynamics_samples is not None, step.speed_error is not None) == (extras, extras)
    if extras:
        assert step.dynamics_samples.shape == (N, 4) and step.speed_error.shape == (N,)
    assert env.reset_envs(np.array([2])).shape == (1, obs_dim)


@pytest.mark.parametrize("make", [pendulum, vehicle])
def test_a_finished_copy_reports_its_true_last_observation_and_acts_on_the_reset_one(make):
    env = make()
    env.reset(1)
    first = env.step(np.full((N, 1), 0.5, np.float32))
    assert not first.truncated.any() and np.array_equal(first.obs, first.final_obs)
    second = env.step(np.full((N, 1), 0.5, np.float32))  # the time limit of 2 steps
    assert second.truncated.tolist() == [True] * N and not second.terminated.any()
    assert all(not np.array_equal(second.obs[i], second.final_obs[i]) for i in range(N))
