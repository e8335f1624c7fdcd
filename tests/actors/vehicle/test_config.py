"""The vehicle environment's settings: the spec's defaults, ranges that are ranges, errors that name the key."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest

from actors.vehicle.config import GradeConfig, RandomizationConfig, RewardConfig, VehicleConfig
from cluster.config import Config
from tests.config_errors import error_of


def test_defaults_are_the_spec_table():
    vehicle = Config().env.vehicle
    assert (vehicle.episode_steps, vehicle.dt, vehicle.substeps, vehicle.preview_steps) == (2048, 0.1, 5, 30)
    assert vehicle.observation_dim == 34  # v, v_prev, u_prev, pitch + 30 preview steps
    r = vehicle.randomization
    assert (r.mass, r.gear_ratio, r.gearbox_efficiency, r.brake_exponent) == ((1500.0, 6000.0), (4.0, 20.0),
                                                                              (0.85, 0.98), (1.0, 1.8))  # fmt: skip
    assert (vehicle.grade.std, vehicle.grade.clip, vehicle.reward.w_smooth, vehicle.reward.clip) == (0.03, 0.08, 15.0, 1e4)


def test_a_range_must_be_ordered_and_positive():
    err = error_of(RandomizationConfig, mass=[5000.0, 1000.0])
    assert (err.key, err.message) == ("mass", "low 5000.0 must be <= high 1000.0 (got [5000.0, 1000.0])")
    assert error_of(RandomizationConfig, wheel_radius=[0.0, 0.3]).key == "wheel_radius[0]"
    assert error_of(RandomizationConfig, mass=[1500.0]).key == "mass[1]"  # a pair, not a list of any length


def test_efficiency_is_at_most_one_and_the_brake_exponent_at_least_one():
    assert error_of(RandomizationConfig, gearbox_efficiency=[0.9, 1.2]).key == "gearbox_efficiency[1]"
    assert error_of(RandomizationConfig, brake_exponent=[0.5, 1.5]).key == "brake_exponent[0]"
    assert RandomizationConfig(gearbox_efficiency=(0.9, 1.0)).gearbox_efficiency == (0.9, 1.0)  # 1 itself is fine


def test_grade_road_covers_two_points_and_rewards_are_not_negative():
    err = error_of(GradeConfig, spacing=10.0, max_distance=15.0)
    assert (err.key, err.message) == ("max_distance", "must cover at least two grade points (2 x spacing = 20.0)")
    assert error_of(GradeConfig, clip=1.5).key == "clip"
    assert error_of(RewardConfig, w_jerk=-0.1).key == "w_jerk"
    assert error_of(RewardConfig, clip=0.0).key == "clip"


def test_nested_errors_name_the_whole_path_and_no_invalid_object_exists():
    err = error_of(Config, env={"vehicle": {"randomization": {"mass": [2.0, 1.0]}}})
    assert err.key == "env.vehicle.randomization.mass"
    with pytest.raises(pydantic.ValidationError):
        dataclasses.replace(VehicleConfig(), dt=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        VehicleConfig().dt = 0.2  # type: ignore[misc]
