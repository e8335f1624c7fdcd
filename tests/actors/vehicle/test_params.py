"""Randomization: ranges, rejection checks, a clear error when nothing passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from actors.vehicle.config import RandomizationConfig
from actors.vehicle.params import (
    SamplingError,
    acceptance,
    draw_candidates,
    launch_accel,
    sample_vehicles,
    steady_speed,
)


def test_sampled_vehicles_pass_every_check_and_stay_in_range():
    cfg = RandomizationConfig()
    p = sample_vehicles(np.random.default_rng(0), cfg, 500)
    assert len(p) == 500 and acceptance(p, cfg).all()
    assert launch_accel(p).min() >= 2.5 and steady_speed(p).min() >= 20.0
    assert (p.motor_voltage / p.armature_resistance).max() <= 2000.0
    for name in ("mass", "armature_inductance", "brake_lag", "speed_noise"):
        low, high = getattr(cfg, name)
        values = getattr(p, name)
        assert low <= values.min() and values.max() <= high


def test_log_uniform_draws_spread_over_decades():
    cfg = RandomizationConfig()
    c = draw_candidates(np.random.default_rng(1), cfg, 20000)
    # log-uniform on [1e-4, 1e-2]: half the draws below 1e-3; uniform would put 9 % there
    assert np.mean(c.armature_inductance < 1e-3) == pytest.approx(0.5, abs=0.02)
    assert np.mean(c.mass < 3750.0) == pytest.approx(0.5, abs=0.02)


def test_impossible_ranges_fail_with_a_clear_error_after_bounded_attempts():
    cfg = dataclasses.replace(RandomizationConfig(), min_top_speed=500.0, max_attempts=20)
    with pytest.raises(SamplingError, match=r"accepted 0 of 3 vehicles in 60 draws.*max_attempts=20"):
        sample_vehicles(np.random.default_rng(0), cfg, 3)

