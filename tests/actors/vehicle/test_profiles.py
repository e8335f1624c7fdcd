"""Reference profiles are feasible for their vehicle; the grade is the OU process it claims to be."""

from __future__ import annotations

import numpy as np
import pytest

from actors.vehicle.config import GradeConfig, VehicleConfig
from actors.vehicle.params import steady_speed
from actors.vehicle.profiles import ar1, generate_reference, grade_at, grade_grid, reference_limits
from tests.actors.vehicle.helpers import sampled


def test_reference_respects_the_vehicle_and_comfort_limits():
    cfg = VehicleConfig()
    p = sampled(32, seed=5)
    ref = generate_reference(np.random.default_rng(1), p, cfg.reference, cfg.grade.clip, 2078, cfg.dt)
    lim = reference_limits(p, cfg.reference, cfg.grade.clip)
    v_top_uphill = steady_speed(p, 1.0, cfg.grade.clip)
    assert np.all(lim.v_cap == pytest.approx(0.8 * v_top_uphill))
    assert np.all(ref.max(axis=1) <= np.minimum(lim.v_cap, 30.0) + 1e-9)
    assert ref.min() == 0.0 and np.all(ref[:, 0] == 0.0)
    accel = np.diff(ref, axis=1) / cfg.dt
    a0, a1, a2 = (x[:, None] for x in lim.accel_poly)
    speed = ref[:, :-1]
    assert np.all(accel <= np.minimum(2.0, a0 - (a1 + a2 * speed) * speed) + 1e-9)
    assert np.all(accel >= -lim.decel[:, None] - 1e-9) and lim.decel.max() <= 3.0
    jerk = np.diff(accel, axis=1) / cfg.dt
    assert np.abs(jerk).max() <= 1.1 * cfg.reference.jerk_max  # snaps to an exact stop add at most 0.2 m/s³
    stops = (ref == 0.0).mean()
    assert 0.02 < stops < 0.3  # exact stops exist (p_zero_stop = 0.15 of the targets)


def test_full_drive_capability_exceeds_the_reference_everywhere():
    """Safety margin: at the cap, full drive on the steepest uphill still accelerates the car."""
    cfg = VehicleConfig()
    p = sampled(64, seed=6)
    lim = reference_limits(p, cfg.reference, cfg.grade.clip)
    a0, a1, a2 = lim.accel_poly
    at_cap = a0 - (a1 + a2 * lim.v_cap) * lim.v_cap  # already scaled by the safety fraction 0.8
    assert np.all(at_cap > 0.0)


def test_ar1_matches_the_recursion():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((3, 5000))
    rho = float(np.exp(-5.0 / 300.0))
    expected = np.empty_like(noise)
    x = np.zeros(3)
    for j in range(noise.shape[1]):
        x = rho * x + noise[:, j]
        expected[:, j] = x
    assert np.abs(ar1(noise, rho) - expected).max() < 1e-9


def test_grade_has_the_configured_std_correlation_and_clip():
    cfg = GradeConfig(std=0.03, correlation_length=300.0, clip=1.0, spacing=5.0, max_distance=20000.0)
    grid = grade_grid(np.random.default_rng(3), cfg, 200)
    assert grid.std() == pytest.approx(0.03, rel=0.03)
    lag = 60  # 300 m
    corr = np.mean(grid[:, :-lag] * grid[:, lag:]) / grid.var()
    assert corr == pytest.approx(np.exp(-1.0), abs=0.03)
    clipped = grade_grid(np.random.default_rng(3), GradeConfig(), 50)
    assert np.abs(clipped).max() == pytest.approx(0.08)


def test_grade_is_read_at_the_position_reached():
    grid = np.array([[0.0, 0.01, 0.03, 0.02], [0.05, 0.05, -0.05, 0.0]])
    s = np.array([7.5, 12.0])  # spacing 5 m: 1.5 and 2.4 grid points
    assert grade_at(grid, s, 5.0) == pytest.approx([0.02, -0.05 + 0.4 * 0.05])
    assert grade_at(grid, np.array([-3.0, 1e6]), 5.0) == pytest.approx([0.0, 0.0])  # held beyond both ends
