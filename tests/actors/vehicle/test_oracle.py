"""The oracle context: true vehicle parameters, normalized over their ranges, following each environment's vehicle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actors.vehicle.config import RandomizationConfig, VehicleConfig
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.oracle import OracleContext, normalized_params
from actors.vehicle.params import LOG_UNIFORM, PARAM_NAMES, VehicleParams


def vehicles() -> VehicleParams:
    """Three vehicles: every parameter at the low end, the middle (geometric for log-uniform) and the high end."""
    cfg = RandomizationConfig()
    values = {}
    for name in PARAM_NAMES:
        low, high = getattr(cfg, name)
        middle = math.sqrt(low * high) if name in LOG_UNIFORM else (low + high) / 2
        values[name] = np.array([low, middle, high])
    return VehicleParams(**values)


def test_ends_of_each_range_map_to_minus_and_plus_one_and_the_middle_to_zero():
    context = normalized_params(vehicles(), RandomizationConfig())
    assert context.shape == (3, 17) and context.dtype == np.float32
    assert context[0].tolist() == [-1.0] * 17 and context[2].tolist() == [1.0] * 17
    assert np.abs(context[1]).max() == pytest.approx(0.0, abs=1e-6)  # log-uniform ones in log space


def test_the_context_follows_each_environments_vehicle():
    config = VehicleConfig(episode_steps=3)
    env = VehicleVectorEnv(2, config, seed=5)
    oracle = OracleContext(env, config.randomization)
    env.reset(5)
    oracle.reset(np.arange(2))
    first = oracle.context()
    assert np.array_equal(first, normalized_params(env.true_params, config.randomization))
    assert oracle.context_dim == 17 and np.abs(first).max() <= 1.0
    for _ in range(3):  # the episodes end; the env draws new vehicles
        step = env.step(np.zeros((2, 1)))
    assert step.truncated.all()
    assert np.array_equal(oracle.context(), first)  # nothing changes until the worker says which envs reset
    oracle.reset(np.array([1]))
    now = oracle.context()
    assert np.array_equal(now[0], first[0]) and not np.array_equal(now[1], first[1])
    assert np.array_equal(now[1], normalized_params(env.true_params, config.randomization)[1])
