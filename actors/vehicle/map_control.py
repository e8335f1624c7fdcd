"""A speed controller that inverts the vehicle's acceleration map ``a(u, v)``: what a dynamics map is for.

The wanted acceleration is the previewed reference's slope plus gravity on the measured pitch plus feedback on the
speed error (in m/s² per m/s, so one set of gains fits every vehicle); the command is the map's inverse at that
acceleration and the filtered speed. Given each vehicle's true map it is the "oracle" controller of
``bench/task_headroom.py``; given the map the dynamics-map context estimates online, it is what that estimate is
worth to a controller; under ``env.vehicle.action: residual_map`` it is the base a residual policy corrects.
"""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import MapControlGains

GRAVITY = 9.81


def curves_at(maps: np.ndarray, v_grid: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``maps [n, U, V]`` on ``v_grid`` → each vehicle's ``a(u)`` at its speed ``v [n]``, ``[n, U]`` float64, interpolated
    linearly in v (clamped to the grid) and made non-decreasing in u for the inverse (flat where it is not)."""
    x = (np.clip(v, v_grid[0], v_grid[-1]) - v_grid[0]) / (v_grid[1] - v_grid[0])
    j = np.minimum(x.astype(int), len(v_grid) - 2)
    w = (x - j)[:, None]
    rows = np.arange(v.size)
    curves = maps[rows, :, j] * (1 - w) + maps[rows, :, j + 1] * w
    return np.maximum.accumulate(curves, axis=1)


def invert_curves(curves: np.ndarray, u_grid: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The command ``u [n]`` at which each non-decreasing curve ``[n, U]`` reaches ``wanted [n]``: ``np.interp(wanted,
    curve, u_grid)`` row by row (the grid's ends outside the curve's range), vectorized."""
    last = curves.shape[1] - 2
    j = np.clip((curves <= wanted[:, None]).sum(axis=1) - 1, 0, last)
    rows = np.arange(curves.shape[0])
    low, high = curves[rows, j], curves[rows, j + 1]
    rise = high - low
    t = np.clip(np.divide(wanted - low, rise, out=np.zeros_like(rise), where=rise > 0), 0.0, 1.0)
    t = np.where((rise <= 0) & (wanted >= high), 1.0, t)  # a flat last stretch at or below the wanted value
    return u_grid[j] + t * (u_grid[j + 1] - u_grid[j])


class MapController:
    """``__call__(obs [n, obs_dim], maps [n, U, V], u_grid [U], v_grid [V]) -> commands [n, 1]``; ``reset(env_ids)``
    clears finished environments' filter and integrator. Reads only the observation (the noisy speed) and the maps."""

    def __init__(self, num_envs: int, gains: MapControlGains | None = None, dt: float = 0.1) -> None:
        self.gains, self.dt = gains or MapControlGains(), dt
        self.integral = np.zeros(num_envs)
        self.v_filt = np.zeros(num_envs)
        self.fresh = np.ones(num_envs, dtype=bool)

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        ids = slice(None) if env_ids is None else np.asarray(env_ids)
        self.integral[ids] = 0.0
        self.fresh[ids] = True

    def __call__(self, obs: np.ndarray, maps: np.ndarray, u_grid: np.ndarray, v_grid: np.ndarray) -> np.ndarray:
        g = self.gains
        obs = np.asarray(obs, dtype=np.float64)
        v_meas, pitch, preview = obs[:, 0], obs[:, 3], obs[:, 4:]
        self.v_filt = np.where(self.fresh, v_meas, g.noise_filter * v_meas + (1 - g.noise_filter) * self.v_filt)
        self.fresh[:] = False
        ahead = min(g.lookahead, preview.shape[1] - 2)
        error = preview[:, ahead] - self.v_filt
        wanted = (preview[:, ahead + 1] - preview[:, ahead]) / self.dt + GRAVITY * np.sin(pitch)
        wanted += g.kp_accel * error + g.ki_accel * self.integral
        curves = curves_at(maps, v_grid, self.v_filt)  # float64 from here (the maps may be float32: not copied)
        u = invert_curves(curves, u_grid, wanted)
        reachable = (wanted > curves[:, 0]) & (wanted < curves[:, -1])
        self.integral = np.where(reachable, self.integral + error * self.dt, self.integral)  # anti-windup
        stop = (preview[:, 0] <= 0.0) & (preview[:, ahead] <= 0.0) & (self.v_filt < g.hold_speed)
        return np.where(stop, np.minimum(u, g.hold_brake), u).reshape(-1, 1)
