"""An exploring driver and an episode recorder, for map-quality tests, the probe benchmark and encoder pretraining.

Nothing here is used in training: SAC explores on its own. These drive an
environment that reports dynamics samples with a base controller (a PID, say)
plus smooth random excursions, so that one episode visits much of the
(u, v) plane, and record what the context provider made of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from actors.context.grid import cell_centers, cell_index
from actors.context.provider import DynamicsMapContext

Controller = Callable[[np.ndarray], np.ndarray]


class ExploringPolicy:
    """``base(obs)`` plus Ornstein-Uhlenbeck noise, with occasional held random commands ("bursts").

    A burst holds a uniform command in [-1, 1] for ``burst_steps`` steps, which
    reaches full drive and hard braking at many speeds; between bursts the base
    controller brings the car back to its reference.
    """

    def __init__(
        self,
        base: Controller,
        num_envs: int,
        seed: int,
        noise_std: float = 0.25,
        noise_steps: float = 10.0,
        burst_prob: float = 0.02,
        burst_steps: tuple[int, int] = (10, 40),
    ) -> None:
        self.base = base
        self.rng = np.random.default_rng(seed)
        self.noise_std, self.theta = noise_std, 1.0 / noise_steps
        self.burst_prob, self.burst_steps = burst_prob, burst_steps
        self.noise = np.zeros(num_envs)
        self.burst_left = np.zeros(num_envs, dtype=np.int64)
        self.burst_u = np.zeros(num_envs)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        n = self.noise.size
        base = np.asarray(self.base(obs), dtype=np.float64).reshape(n)
        sigma = self.noise_std * np.sqrt(2 * self.theta)
        self.noise += -self.theta * self.noise + sigma * self.rng.standard_normal(n)
        start = (self.burst_left == 0) & (self.rng.random(n) < self.burst_prob)
        self.burst_u = np.where(start, self.rng.uniform(-1, 1, n), self.burst_u)
        self.burst_left = np.where(start, self.rng.integers(*self.burst_steps, size=n), self.burst_left)
        u = np.where(self.burst_left > 0, self.burst_u, base + self.noise)
        self.burst_left = np.maximum(self.burst_left - 1, 0)
        return np.clip(u, -1.0, 1.0)[:, None].astype(np.float32)


@dataclass(frozen=True)
class Snapshot:
    """What the provider knew after ``step`` samples of one episode (all ``[n, ...]``)."""

    step: int
    context: np.ndarray
    maps: np.ndarray
    normalized: np.ndarray
    confidence: np.ndarray
    visited: np.ndarray
    """``[n, grid_u, grid_v]`` bool: cells holding at least one sample in the window."""


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode of every environment: the truth and the provider's snapshots."""

    true_maps: np.ndarray
    """``[n, grid_u, grid_v]`` the oracle's maps of the episode's vehicles."""
    true_params: object
    snapshots: list[Snapshot]


def visited_cells(provider: DynamicsMapContext) -> np.ndarray:
    """``[n, grid_u, grid_v]`` bool: cells with at least one sample in each environment's window."""
    cfg, buf = provider.config, provider.buffer
    n = buf.num_envs
    held = buf.weights(max(provider._step, 0), 1.0, 0.0, 1.0) > 0  # weight 1 for every held sample
    iu, iv = cell_index(buf.u, buf.v, cfg)
    mask = np.zeros((n, cfg.grid_u * cfg.grid_v), dtype=bool)
    rows = np.broadcast_to(np.arange(n)[:, None], iu.shape)
    mask[rows[held], (iu * cfg.grid_v + iv)[held]] = True
    return mask.reshape(n, cfg.grid_u, cfg.grid_v)


def record_episode(env, provider: DynamicsMapContext, policy: Controller, seed: int, snapshot_steps: tuple[int, ...]):
    """Reset ``env`` with ``seed`` and drive one episode of ``max(snapshot_steps)`` steps (within one episode).

    ``env`` must offer ``true_dynamics_map(u_grid, v_grid)`` and ``true_params``
    (the vehicle environment). The provider is reset for all environments first.
    """
    obs = env.reset(seed)
    provider.reset(np.arange(env.num_envs))
    u_grid, v_grid = cell_centers(provider.config)
    true_maps, true_params = env.true_dynamics_map(u_grid, v_grid), env.true_params
    snapshots = []
    for step in range(1, max(snapshot_steps) + 1):
        result = env.step(policy(obs))
        provider.observe(result.dynamics_samples, result.dynamics_present)
        obs = result.obs
        if step in snapshot_steps:
            provider.rebuild()
            snapshots.append(
                Snapshot(
                    step=step,
                    context=provider.context(),
                    maps=provider.current_maps().copy(),
                    normalized=((provider.current_maps() - provider.reconstruction.prior) / provider.config.accel_scale),
                    confidence=provider.current_confidence(),
                    visited=visited_cells(provider),
                )
            )
    return EpisodeRecord(true_maps=true_maps, true_params=true_params, snapshots=snapshots)


def rmse(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean square error over all cells of all environments (or those in ``mask``)."""
    err = (np.asarray(estimate, dtype=np.float64) - truth) ** 2
    return float(np.sqrt(err.mean() if mask is None else err[mask].mean()))
