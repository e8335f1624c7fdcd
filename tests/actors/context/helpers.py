"""Synthetic maps and sample streams for the context tests (no vehicle needed)."""

from __future__ import annotations

import numpy as np

from actors.context.buffer import GRAVITY, SampleBuffer
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


def checked_rebuilds(reconstruction, config: ContextConfig, num_envs: int, steps: int, reset_step: int,
                     check_every: int, accel_mean: float = 0.0, accel_std: float = 3.0):  # fmt: skip
    """Drive ``reconstruction`` with random samples (u, v a little off the grid, 10 % of them absent), a new vehicle
    in env 1 at ``reset_step``, a rebuild every ``update_every`` steps; yields ``(step, buffer, estimate)`` at the
    first rebuild of every ``check_every`` steps, for a test to compare against a from-scratch reference."""
    rng = np.random.default_rng(1)
    buffer = SampleBuffer(num_envs, config.capacity, slack=config.update_every)
    for step in range(steps):
        accel = accel_mean + accel_std * rng.normal(size=num_envs)
        buffer.add(rng.uniform(-1.2, 1.2, num_envs), rng.uniform(-1, 32, num_envs), accel, step, rng.random(num_envs) < 0.9)
        if step == reset_step:
            buffer.clear(np.array([1]))
            reconstruction.reset(np.array([1]))
        if step % config.update_every == config.update_every - 1:
            estimate = reconstruction.rebuild(buffer, step)
            if step % check_every < config.update_every:
                yield step, buffer, estimate
