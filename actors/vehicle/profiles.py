"""Reference speed profiles (feasible for the vehicle that gets them) and road grade over distance.

Both are drawn whole at a vehicle's reset from the environment's generator:
the reference as ``[k, steps]`` speeds, the grade as ``[k, points]`` values on
a distance grid. The grade is then read at the position actually reached, so
a vehicle that drives faster sees more of the road.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.vehicle.config import GradeConfig, ReferenceConfig
from actors.vehicle.params import GRAVITY, VehicleParams, drive_force_quadratic, equivalent_mass, steady_speed


@dataclass(frozen=True)
class ReferenceLimits:
    """What the reference may ask of each vehicle (arrays ``[k]``)."""

    v_cap: np.ndarray
    """Highest target: the safety fraction of the full-drive top speed on the steepest uphill."""
    accel_poly: tuple[np.ndarray, np.ndarray, np.ndarray]
    """``(a0, a1, a2)``: allowed acceleration at speed v is ``min(accel_max, a0 − a1 v − a2 v²)``."""
    decel: np.ndarray
    """Allowed deceleration (positive), braking on the steepest downhill within the safety fraction."""
    jerk: np.ndarray
    """Allowed jerk (positive)."""


def reference_limits(p: VehicleParams, cfg: ReferenceConfig, grade_clip: float) -> ReferenceLimits:
    """Limits from the vehicle's drive and brake capability on the worst grade, times the safety fraction."""
    sf = cfg.safety_fraction
    meq = equivalent_mass(p)
    c0, c1, c2 = drive_force_quadratic(p, 1.0, np.sin(grade_clip))
    brake_cap = (p.brake_decel * p.mass - p.mass * GRAVITY * np.sin(grade_clip)) / meq
    decel = np.minimum(cfg.decel_max, sf * brake_cap)
    return ReferenceLimits(
        v_cap=sf * steady_speed(p, 1.0, grade_clip),
        accel_poly=(sf * c0 / meq, sf * c1 / meq, sf * c2 / meq),
        decel=decel,
        jerk=np.minimum(cfg.jerk_max, sf * brake_cap / p.brake_lag),
    )


def draw_targets(rng: np.random.Generator, cfg: ReferenceConfig, v_cap: np.ndarray, steps: int) -> np.ndarray:
    """``[k, steps]`` piecewise-constant targets: a new one with probability ``p_change`` per step."""
    k = v_cap.shape[0]
    change = rng.random((k, steps)) < cfg.p_change
    change[:, 0] = True
    top = np.minimum(cfg.v_max_sample, v_cap)[:, None]
    values = rng.random((k, steps)) * top
    values[rng.random((k, steps)) < cfg.p_zero_stop] = 0.0
    last_change = np.maximum.accumulate(np.where(change, np.arange(steps), 0), axis=1)
    return np.take_along_axis(values, last_change, axis=1)


def filter_reference(targets: np.ndarray, lim: ReferenceLimits, cfg: ReferenceConfig, dt: float) -> np.ndarray:
    """Critically damped second-order low-pass of ``targets`` with jerk and speed-dependent acceleration limits.

    State: reference speed ``v`` and acceleration ``a`` (from rest). The filter's
    jerk ``ω²(target − v) − 2ω a`` is clipped to ``±jerk``, then ``a`` to
    ``[−decel, accel(v)]``; ``v`` never goes negative, and with a zero target it
    snaps to exactly zero below ``stop_snap`` (so stops are exact).
    """
    k, steps = targets.shape
    w = cfg.natural_freq
    a0, a1, a2 = lim.accel_poly
    a_cap = np.minimum(cfg.accel_max, a0)  # accel(v) <= a0 for v >= 0
    v = np.zeros(k)
    a = np.zeros(k)
    out = np.empty((steps, k))
    columns = np.ascontiguousarray(targets.T)  # time-major: each step reads one contiguous row
    zero = columns == 0.0
    for t in range(steps):
        out[t] = v
        jerk = np.minimum(np.maximum(w * w * (columns[t] - v) - 2.0 * w * a, -lim.jerk), lim.jerk)
        a_up = np.maximum(np.minimum(a_cap, a0 - (a1 + a2 * v) * v), 0.0)
        a = np.minimum(np.maximum(a + jerk * dt, -lim.decel), a_up)
        v = v + a * dt
        stop = (v < 0.0) | (zero[t] & (v < cfg.stop_snap))
        v = np.where(stop, 0.0, v)
        a = np.where(stop, np.where(zero[t], 0.0, np.maximum(a, 0.0)), a)
    return out.T.copy()


def generate_reference(
    rng: np.random.Generator, p: VehicleParams, cfg: ReferenceConfig, grade_clip: float, steps: int, dt: float
) -> np.ndarray:
    """``[k, steps]`` feasible reference speeds for the vehicles ``p``."""
    lim = reference_limits(p, cfg, grade_clip)
    return filter_reference(draw_targets(rng, cfg, lim.v_cap, steps), lim, cfg, dt)


def ar1(noise: np.ndarray, rho: float) -> np.ndarray:
    """``x_j = rho x_{j-1} + noise_j`` along axis 1 from ``x_{-1} = 0``, ``0 <= rho < 1``.

    Vectorized in blocks of scaled cumulative sums: within a block,
    ``x_j = rho^(j+1) (x_prev + Σ_{i<=j} rho^(-i-1) noise_i)``. Blocks are short
    enough that ``rho^(-block) <= 1e6``, so rounding stays at machine precision
    relative to the process scale.
    """
    if rho < 1e-6:
        return noise.copy()
    k, n = noise.shape
    out = np.empty((k, n))
    block = max(1, int(13.8 / -np.log(rho)))
    prev = np.zeros(k)
    for start in range(0, n, block):
        stop = min(start + block, n)
        powers = rho ** np.arange(1, stop - start + 1)
        out[:, start:stop] = powers * (prev[:, None] + np.cumsum(noise[:, start:stop] / powers, axis=1))
        prev = out[:, stop - 1]
    return out


def grade_grid(rng: np.random.Generator, cfg: GradeConfig, k: int) -> np.ndarray:
    """``[k, points]`` stationary OU grade (rad) every ``spacing`` metres from s = 0, clipped to ``±clip``.

    Exact OU transition between grid points: ``x_{j+1} = rho x_j + std sqrt(1 − rho²) ξ``
    with ``rho = exp(−spacing / correlation_length)`` and ``x_0 ~ N(0, std²)``.
    """
    points = int(np.ceil(cfg.max_distance / cfg.spacing)) + 1
    rho = float(np.exp(-cfg.spacing / cfg.correlation_length))
    noise = rng.standard_normal((k, points)) * (cfg.std * np.sqrt(1.0 - rho * rho))
    noise[:, 0] = rng.standard_normal(k) * cfg.std
    return np.clip(ar1(noise, rho), -cfg.clip, cfg.clip)


def grade_at(grid: np.ndarray, s: np.ndarray, spacing: float) -> np.ndarray:
    """Grade at positions ``s`` ([n]) by linear interpolation on each row of ``grid``; held beyond both ends."""
    n, points = grid.shape
    x = np.minimum(np.maximum(s * (1.0 / spacing), 0.0), points - 1.0)
    i0 = np.minimum(x.astype(np.int64), points - 2)
    frac = x - i0
    flat = grid.reshape(-1)
    base = np.arange(n) * points + i0
    left = flat[base]
    return left + frac * (flat[base + 1] - left)
