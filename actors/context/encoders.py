"""Encoders from a normalized map and its confidence to a ``context_dim`` vector.

Each encoder works in two stages so the provider can tell a bad map from a bad
encoder: ``features`` is a fixed average pooling (positive weights on every
cell, so it is non-finite exactly when the map is) and ``project`` turns the
features into the context.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from actors.context.config import ContextConfig
from actors.context.grid import pooling_matrix

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dmsac-cnn-map-encoder-v1"


class Encoder(Protocol):
    """Map and confidence ``[n, 2, grid_u, grid_v]`` → context ``[n, context_dim]`` (float32, batched, CPU)."""

    context_dim: int

    def features(self, stacked: np.ndarray) -> np.ndarray:
        """``[n, F]`` float32 pooled features of ``stacked`` (normalized map, confidence); non-finite exactly where it is."""
        ...

    def project(self, features: np.ndarray) -> np.ndarray:
        """``[n, context_dim]`` float32 contexts from finite features."""
        ...


class GridPool:
    """Average-pools maps ``[..., grid_u, grid_v]`` to ``[..., bins_u, bins_v]``, keeping the layout."""

    def __init__(self, grid: tuple[int, int], bins: tuple[int, int]) -> None:
        self.bins = bins
        self._pu = torch.from_numpy(pooling_matrix(grid[0], bins[0])).float()  # [bins_u, grid_u]
        self._pv_t = torch.from_numpy(pooling_matrix(grid[1], bins[1]).T.copy()).float()  # [grid_v, bins_v]

    def __call__(self, maps: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(maps, dtype=torch.float32)
        lead, (nu, nv) = x.shape[:-2], x.shape[-2:]
        along_v = (x.reshape(-1, nv) @ self._pv_t).view(-1, nu, self.bins[1])  # one GEMM for the big side
        return torch.matmul(self._pu, along_v).view(*lead, *self.bins)


def orthonormal_projection(num_features: int, dim: int, seed: int) -> np.ndarray:
    """``[num_features, dim]`` fixed projection with orthonormal columns (or rows, when dim > num_features)."""
    rng = np.random.default_rng(seed)
    gauss = rng.standard_normal((max(num_features, dim), min(num_features, dim)))
    q, r = np.linalg.qr(gauss)
    q = q * np.sign(np.diag(r))[None, :]  # unique QR: the projection depends on the seed alone
    return q if num_features >= dim else q.T


class PooledEncoder:
    """``pooled``: map and confidence average-pooled to ``pool_grid``, concatenated, fixed projection. No training.

    Each pooled cell stands for one region of the (u, v) plane, so two maps that
    differ in one region give different features; the projection has orthonormal
    columns, so distances between feature vectors shrink but do not vanish.
    """

    def __init__(self, config: ContextConfig) -> None:
        self.context_dim = config.context_dim
        self._pool = GridPool((config.grid_u, config.grid_v), config.pool_grid)
        num_features = 2 * config.pool_grid[0] * config.pool_grid[1]
        proj = orthonormal_projection(num_features, config.context_dim, config.projection_seed)
        self._proj = torch.from_numpy(proj.astype(np.float32))

    def features(self, stacked: np.ndarray) -> np.ndarray:
        return self._pool(stacked).flatten(1).numpy()

    def project(self, features: np.ndarray) -> np.ndarray:
        return (torch.from_numpy(features) @ self._proj).numpy()


class ConvMapEncoder(nn.Module):
    """Two strided convolutions and a linear layer over the flattened feature map (no global pooling)."""

    def __init__(self, input_grid: tuple[int, int], channels: tuple[int, int], context_dim: int) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(2, c1, 3, stride=2, padding=1), nn.ELU(), nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ELU()
        )
        self.out_shape = (c2, *conv_out_grid(input_grid))
        self.linear = nn.Linear(int(np.prod(self.out_shape)), context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(x).flatten(1))


class ConvMapDecoder(nn.Module):
    """Mirror of ``ConvMapEncoder`` (pretraining only): context → normalized map on the input grid."""

    def __init__(self, input_grid: tuple[int, int], channels: tuple[int, int], context_dim: int) -> None:
        super().__init__()
        c1, c2 = channels
        self.grid = input_grid
        self.in_shape = (c2, *conv_out_grid(input_grid))
        self.linear = nn.Linear(context_dim, int(np.prod(self.in_shape)))
        self.deconv = nn.Sequential(
            nn.ELU(), nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ELU(), nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.deconv(self.linear(z).view(-1, *self.in_shape))
        return y[:, 0, : self.grid[0], : self.grid[1]]


def conv_out_grid(grid: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after two stride-2, padding-1, 3x3 convolutions."""
    half = lambda n: (n - 1) // 2 + 1  # noqa: E731
    return half(half(grid[0])), half(half(grid[1]))


def encoder_checkpoint(model: ConvMapEncoder, input_grid: tuple[int, int], channels: tuple[int, int], meta: dict) -> dict:
    """The checkpoint dict (tensors and plain values only: loadable with ``weights_only=True``)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "input_grid": list(input_grid),
        "channels": list(channels),
        "context_dim": model.linear.out_features,
        "meta": meta,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


class CnnEncoder:
    """``cnn``: a pretrained, frozen convolutional encoder (``python -m cluster.pretrain_encoder`` writes it).

    Its input is the map and the confidence average-pooled to the checkpoint's
    ``input_grid``; it runs batched on the CPU under ``torch.inference_mode()``.
    """

    def __init__(self, config: ContextConfig, checkpoint: str | Path | None = None) -> None:
        path = Path(checkpoint or config.encoder_checkpoint)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
        if ckpt["context_dim"] != config.context_dim:
            raise ValueError(f"{path}: encoder gives context_dim {ckpt['context_dim']}, config says {config.context_dim}")
        meta = ckpt.get("meta", {})
        if meta.get("accel_scale", config.accel_scale) != config.accel_scale:
            log.warning("%s was trained with accel_scale %s, config has %s", path, meta["accel_scale"], config.accel_scale)
        input_grid, channels = tuple(ckpt["input_grid"]), tuple(ckpt["channels"])
        self.context_dim = config.context_dim
        self.model = ConvMapEncoder(input_grid, channels, config.context_dim)
        self.model.load_state_dict(ckpt["state_dict"])
        self.model.eval().requires_grad_(False)
        self._pool = GridPool((config.grid_u, config.grid_v), input_grid)

    def features(self, stacked: np.ndarray) -> np.ndarray:
        return self._pool(stacked).flatten(1).numpy()

    def project(self, features: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(features).view(features.shape[0], 2, *self._pool.bins)
        with torch.inference_mode():
            return self.model(x).numpy()
