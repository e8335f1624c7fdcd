"""The map's (u, v) grid and the fixed matrices that act on it (pure functions)."""

from __future__ import annotations

import numpy as np

from actors.context.config import ContextConfig

U_LOW, U_HIGH = -1.0, 1.0


def cell_centers(config: ContextConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(u_grid [grid_u], v_grid [grid_v])``: the command and speed at each cell's centre."""
    du = (U_HIGH - U_LOW) / config.grid_u
    dv = config.v_max / config.grid_v
    u_grid = U_LOW + (np.arange(config.grid_u) + 0.5) * du
    v_grid = (np.arange(config.grid_v) + 0.5) * dv
    return u_grid, v_grid


def cell_index(u: np.ndarray, v: np.ndarray, config: ContextConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cell indices ``(iu, iv)`` of finite ``(u, v)``; values off the grid are clamped to edge cells."""
    fu = (np.asarray(u, dtype=np.float64) - U_LOW) / (U_HIGH - U_LOW) * config.grid_u
    fv = np.asarray(v, dtype=np.float64) / config.v_max * config.grid_v
    iu = np.clip(np.floor(fu), 0, config.grid_u - 1).astype(np.int64)
    iv = np.clip(np.floor(fv), 0, config.grid_v - 1).astype(np.int64)
    return iu, iv


def zero_command_split(config: ContextConfig) -> int:
    """First cell index along u whose centre is > 0 (the drive side)."""
    u_grid, _ = cell_centers(config)
    return int(np.searchsorted(u_grid, 0.0, side="right"))


def gaussian_matrix(size: int, sigma: float, split: int | None = None) -> np.ndarray:
    """``[size, size]`` un-normalized Gaussian ``exp(-(i-j)^2 / 2 sigma^2)`` (peak 1: one sample weighs 1 at its cell).

    ``split``: cells ``< split`` and ``>= split`` do not mix. ``sigma = 0`` gives the identity.
    """
    idx = np.arange(size, dtype=np.float64)
    g = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2) if sigma > 0 else np.eye(size)
    if split is not None:
        side = idx >= split
        g = g * (side[:, None] == side[None, :])
    return g


def pooling_matrix(size: int, bins: int) -> np.ndarray:
    """``[bins, size]``: row b averages the contiguous cells of bin b (bins as even as ``size`` allows)."""
    edges = np.round(np.linspace(0, size, bins + 1)).astype(np.int64)
    p = np.zeros((bins, size))
    for b in range(bins):
        p[b, edges[b] : edges[b + 1]] = 1.0 / (edges[b + 1] - edges[b])
    return p


def smoothing_matrices(config: ContextConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(G_u [grid_u, grid_u], G_v [grid_v, grid_v])`` of the config's normalized convolution."""
    split = zero_command_split(config) if config.split_at_zero_command else None
    sigma_u, sigma_v = config.smoothing_sigma
    return gaussian_matrix(config.grid_u, sigma_u, split), gaussian_matrix(config.grid_v, sigma_v)
