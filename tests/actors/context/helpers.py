"""Synthetic maps and sample streams for the context tests (no vehicle needed)."""

from __future__ import annotations

import numpy as np

from actors.context.buffer import GRAVITY
from actors.context.config import ContextConfig
from actors.context.grid import cell_centers


def synthetic_accel(u: np.ndarray, v: np.ndarray, drive: float = 4.0, brake: float = 9.0) -> np.ndarray:
    """A smooth vehicle-like map: drive fades with speed, brake is linear in |u|, drag grows with v^2."""
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return np.where(u > 0, drive * u * np.clip(1.0 - v / 40.0, 0.0, None), brake * u) - 0.1 - 0.002 * v**2


def synthetic_map(config: ContextConfig, **kwargs: float) -> np.ndarray:
    u_grid, v_grid = cell_centers(config)
    return synthetic_accel(u_grid[:, None], v_grid[None, :], **kwargs)


def sample_stream(rng: np.random.Generator, num_envs: int, steps: int, noise: float = 0.3, **kwargs: float):
    """``[steps, num_envs, 4]`` samples (u, v, a_meas, theta): uniform (u, v), random grade, noisy accel."""
    u = rng.uniform(-1, 1, (steps, num_envs))
    v = rng.uniform(0, 30, (steps, num_envs))
    theta = rng.uniform(-0.08, 0.08, (steps, num_envs))
    a_meas = synthetic_accel(u, v, **kwargs) - GRAVITY * np.sin(theta) + noise * rng.standard_normal(u.shape)
    return np.stack([u, v, a_meas, theta], axis=-1)
