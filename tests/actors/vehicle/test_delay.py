"""Actuation delay (``randomization.actuation_delay``): the plant applies the command given that long ago."""

from __future__ import annotations

import numpy as np
import pytest

from actors.vehicle.config import RandomizationConfig, VehicleConfig
from actors.vehicle.env import VehicleVectorEnv, delay_steps
from actors.vehicle.oracle import OracleContext, normalized_params
from actors.vehicle.params import PARAM_NAMES


def delayed(low: float, high: float, **kw) -> VehicleConfig:
    return VehicleConfig(randomization=RandomizationConfig(actuation_delay=(low, high)), **kw)


def test_delay_rounds_to_whole_control_steps():
    assert delay_steps(np.array([0.0, 0.04, 0.06, 0.2, 0.249]), 0.1).tolist() == [0, 0, 1, 2, 2]


def test_a_fixed_delay_draws_no_random_numbers_so_the_same_seed_gives_the_same_vehicles_and_roads():
    plain, late = VehicleVectorEnv(4, VehicleConfig(), seed=3), VehicleVectorEnv(4, delayed(0.2, 0.2), seed=3)
    for name in PARAM_NAMES:
        if name != "actuation_delay":
            assert np.array_equal(getattr(plain.true_params, name), getattr(late.true_params, name)), name
    assert plain.true_params.actuation_delay.tolist() == [0.0] * 4
    assert late.true_params.actuation_delay.tolist() == [0.2] * 4
    assert np.array_equal(plain.reference, late.reference)


def test_a_two_step_delay_drives_the_vehicle_as_the_same_commands_two_steps_later():
    """Same seed, same vehicles and noise: commands c0..c9 through a 0.2 s delay move the vehicle exactly as
    0, 0, c0..c7 without one; the dynamics samples carry the applied command, the observation the given one."""
    commands = np.linspace(0.9, -0.3, 10)
    plain, late = VehicleVectorEnv(3, VehicleConfig(), seed=11), VehicleVectorEnv(3, delayed(0.2, 0.2), seed=11)
    shifted = np.concatenate([[0.0, 0.0], commands[:-2]])
    for given, applied in zip(commands, shifted, strict=True):
        a = late.step(np.full((3, 1), given))
        b = plain.step(np.full((3, 1), applied))
        assert np.array_equal(late.speed, plain.speed)
        assert a.dynamics_samples[:, 0].tolist() == [applied] * 3
        assert a.obs[:, 2] == pytest.approx(np.full(3, given))  # u_prev: the command the controller gave
        assert np.array_equal(a.dynamics_samples[:, 2], b.dynamics_samples[:, 2])
    assert late.speed.max() > 1.0  # the commands did move the vehicles


def test_a_new_vehicle_starts_with_no_pending_commands():
    env = VehicleVectorEnv(2, delayed(0.3, 0.3, episode_steps=4), seed=2)
    for _ in range(4):
        env.step(np.ones((2, 1)))  # the episodes end: new vehicles, at rest
    step = env.step(np.ones((2, 1)))
    assert step.dynamics_samples[:, 0].tolist() == [0.0, 0.0]  # nothing given 3 steps before this vehicle's start


def test_the_oracle_shows_the_delay_only_when_it_is_randomized():
    spec = VehicleConfig()
    assert OracleContext(VehicleVectorEnv(2, spec, seed=0), spec.randomization).context_dim == 17
    config = delayed(0.0, 0.4)
    env = VehicleVectorEnv(64, config, seed=0)
    oracle = OracleContext(env, config.randomization)
    assert oracle.context_dim == 18
    context = normalized_params(env.true_params, config.randomization)
    assert np.allclose(context[:, -1], env.true_params.actuation_delay / 0.2 - 1.0, atol=1e-6)
    assert set(delay_steps(env.true_params.actuation_delay, 0.1)) == {0, 1, 2, 3, 4}  # every delay drawn


def test_a_negative_delay_is_refused_naming_the_key():
    from cluster.config import ConfigError, config_from

    with pytest.raises(ConfigError, match=r"study.yaml.*actuation_delay\[0\]: must be >= 0"):
        config_from({"env": {"kind": "vehicle"}}, "study.yaml", ["env.vehicle.randomization.actuation_delay=[-0.1,0.2]"])
