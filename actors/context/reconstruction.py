"""Map reconstruction strategies: from a buffer of samples to a normalized map and its confidence.

The default, ``SmoothedCellMeans``, is a normalized convolution: weighted cell
sums of the samples' deviation from the prior map and of their weights, both
smoothed by a separable Gaussian, give ``num`` and ``den`` per cell; the map is

    map = prior + num / (den + prior_weight),  confidence = den / (den + prior_weight)

so cells without nearby data fall back smoothly to the prior. ``reconstruct_dense``
computes exactly that from scratch (bincount + ``G_u @ S @ G_v^T``); the strategy
maintains the same sums incrementally, which is several times cheaper at
100 x 100 cells: between rebuilds only a few samples per environment enter,
reach the weight floor, or leave the window, and each is a rank-1 update.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import numpy as np
import torch

from actors.context.buffer import SampleBuffer, decay_weights, is_floored
from actors.context.config import ContextConfig
from actors.context.grid import cell_index, smoothing_matrices

_REBASE_EXPONENT = 30.0
"""Rebase an environment's decaying sums once their scale factor exceeds exp(30) (float32 stays far from overflow)."""
_SUBNORMAL_GUARD = 1e-25
"""Decaying sums below this after a rebase are rounding residues (live entries are >= ~1e-13): set to 0."""


class MapEstimate(NamedTuple):
    """A reconstruction for every environment."""

    normalized: np.ndarray
    """``[n, grid_u, grid_v]`` float32 ``(map - prior) / accel_scale``."""
    confidence: np.ndarray
    """``[n, grid_u, grid_v]`` float32 in [0, 1]: weight of the data against the prior."""


class Reconstruction(Protocol):
    """Builds every environment's map from its samples; may keep state between rebuilds."""

    prior: np.ndarray
    """``[grid_u, grid_v]`` map (m/s^2) used where there is no data."""

    def reset(self, env_ids: np.ndarray) -> None:
        """Forget ``env_ids``' state (their buffer rows were cleared)."""
        ...

    def rebuild(self, buffer: SampleBuffer, now_step: int) -> MapEstimate:
        """Maps of all environments from ``buffer`` at time ``now_step`` (one batched call)."""
        ...


def sample_residuals(u: np.ndarray, v: np.ndarray, a_dyn: np.ndarray, prior: np.ndarray, config: ContextConfig):
    """``(iu, iv, r)``: cells of the samples and ``(clip(a_dyn) - prior[cell]) / accel_scale``."""
    iu, iv = cell_index(u, v, config)
    a = np.clip(a_dyn, -config.accel_clip, config.accel_clip)
    return iu, iv, (a - prior[iu, iv]) / config.accel_scale


def check_prior(prior: np.ndarray | None, config: ContextConfig) -> np.ndarray:
    """The prior as a finite float64 ``[grid_u, grid_v]`` array (zeros when ``None``)."""
    shape = (config.grid_u, config.grid_v)
    if prior is None:
        return np.zeros(shape)
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != shape or not np.isfinite(prior).all():
        raise ValueError(f"prior map must be finite with shape {shape}, got {prior.shape}")
    return prior


def reconstruct_dense(
    buffer: SampleBuffer, now_step: int, prior: np.ndarray, config: ContextConfig, dt: float
) -> MapEstimate:
    """Reference: the normalized convolution computed from scratch (bincount, then ``G_u @ S @ G_v^T``)."""
    n, nu, nv = buffer.num_envs, config.grid_u, config.grid_v
    w = buffer.weights(now_step, dt, config.decay_rate, config.min_weight)
    iu, iv, r = sample_residuals(buffer.u, buffer.v, buffer.a_dyn, prior, config)
    flat = (np.arange(n)[:, None] * nu + iu) * nv + iv
    num = np.bincount(flat.ravel(), weights=(w * r).ravel(), minlength=n * nu * nv).reshape(n, nu, nv)
    den = np.bincount(flat.ravel(), weights=w.ravel(), minlength=n * nu * nv).reshape(n, nu, nv)
    gu, gv = (torch.from_numpy(g) for g in smoothing_matrices(config))
    num, den = ((gu @ torch.from_numpy(x) @ gv.T).numpy() for x in (num, den))
    k = config.prior_weight
    confidence = np.clip(den / (den + k), 0.0, 1.0)
    return MapEstimate((num / (den + k)).astype(np.float32), confidence.astype(np.float32))


class SmoothedCellMeans:
    """Default reconstruction: smoothed weighted cell means of the samples, blended into a prior.

    State per environment (float32, ``[grid_u, 2, grid_v]`` each): ``E``, the smoothed
    sums of ``(c r, c)`` over samples whose weight still decays, with
    ``c = exp(lambda (t_i - t0))`` relative to the environment's base step ``t0``;
    ``F``, the smoothed sums of ``(w_min r, w_min)`` over samples at the weight floor.
    At a rebuild ``(num, den) = s E + F`` with ``s = exp(-lambda (t_now - t0))``, which
    gives every decaying sample its weight ``exp(-lambda age)`` without touching it.
    The arrays of the returned ``MapEstimate`` are reused: valid until the next rebuild.
    """

    def __init__(
        self, num_envs: int, config: ContextConfig, prior: np.ndarray | None = None, dt: float = 0.1, chunk_envs: int = 8
    ) -> None:
        if dt <= 0 or chunk_envs < 1:
            raise ValueError(f"need dt > 0 and chunk_envs >= 1, got {dt}, {chunk_envs}")
        self.config = config
        self._chunk = chunk_envs
        self.prior = check_prior(prior, config)
        self.dt = dt
        gu, gv = smoothing_matrices(config)
        self._gu_cols = torch.from_numpy(np.ascontiguousarray(gu.T)).float()  # row i: column i of G_u
        self._gv_cols = torch.from_numpy(np.ascontiguousarray(gv.T)).float()
        shape = (num_envs, config.grid_u, 2, config.grid_v)
        # Preallocated: fresh multi-megabyte arrays per rebuild would cost more in page faults than the maths.
        self._e, self._f, self._work = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
        self._den = torch.zeros(shape[0], shape[1], shape[3])
        self._normalized, self._confidence = torch.zeros_like(self._den), torch.zeros_like(self._den)
        self._base = np.zeros(num_envs, dtype=np.int64)
        self._added = np.zeros(num_envs, dtype=np.int64)
        self._floored = np.zeros(num_envs, dtype=np.int64)
        self._removed = np.zeros(num_envs, dtype=np.int64)
        self._now = 0

    def reset(self, env_ids: np.ndarray) -> None:
        ids = np.asarray(env_ids, dtype=np.int64)
        idx = torch.from_numpy(ids)
        self._e[idx] = 0.0
        self._f[idx] = 0.0
        self._added[ids] = self._floored[ids] = self._removed[ids] = 0
        self._base[ids] = self._now

    def poison(self, env_ids: np.ndarray, value: float) -> None:
        """Test hook: write ``value`` (NaN, inf) into the state of ``env_ids``."""
        self._f[torch.from_numpy(np.asarray(env_ids, dtype=np.int64))] = value

    def rebuild(self, buffer: SampleBuffer, now_step: int) -> MapEstimate:
        self._now = now_step
        self._rebase(now_step)
        to_e, to_f = self._changes(buffer, now_step)
        return self._update_and_combine(to_e, to_f, now_step)

    def _update_and_combine(self, to_e: tuple[np.ndarray, ...], to_f: tuple[np.ndarray, ...], now_step: int) -> MapEstimate:
        update_e, update_f = self._factors(*to_e), self._factors(*to_f)
        scale = np.exp(-self.config.decay_rate * self.dt * (now_step - self._base)).astype(np.float32)
        scale_t = torch.from_numpy(scale).view(-1, 1, 1, 1)
        # Chunks of environments: each chunk's state stays in the core's cache from the update to the division.
        for lo in range(0, self._e.shape[0], self._chunk):
            rows = slice(lo, lo + self._chunk)
            for target, update in ((self._e, update_e), (self._f, update_f)):
                if update is not None:
                    part = target[rows]
                    part.view(part.shape[0], part.shape[1], -1).baddbmm_(update[0][rows], update[1][rows])
            self._combine(rows, scale_t[rows])
        return MapEstimate(self._normalized.numpy(), self._confidence.numpy())

    def _changes(self, buffer: SampleBuffer, now_step: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """Samples whose status changed since the last rebuild: ``(iu, iv, r, coef)`` for E and for F."""
        cfg = self.config
        count = buffer.count
        floored_lo = np.maximum(self._floored, self._removed)
        _, valid, _, _, _, step = buffer.gather(floored_lo, count)
        crossing = valid & is_floored((now_step - step) * self.dt, cfg.decay_rate, cfg.min_weight)
        floored = floored_lo + crossing.sum(axis=1)  # samples are in time order: the crossing ones are a prefix
        removed = np.maximum(self._removed, buffer.window_start())
        new = self._entries(buffer, self._added, count)
        cross = self._entries(buffer, floored_lo, floored)
        gone_f = self._entries(buffer, self._removed, np.minimum(removed, floored))
        gone_e = self._entries(buffer, np.maximum(self._removed, floored), np.maximum(removed, floored))
        self._added, self._floored, self._removed = count.copy(), np.maximum(floored, removed), removed
        w_min = cfg.min_weight
        to_e = _concat([(*new[:3], new[3]), (*cross[:3], -cross[3]), (*gone_e[:3], -gone_e[3])])
        to_f = _concat([(*cross[:3], w_min * cross[4]), (*gone_f[:3], -w_min * gone_f[4])])
        return to_e, to_f

    def _entries(self, buffer: SampleBuffer, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(iu, iv, r, c, valid)`` of samples ``lo <= seq < hi``: ``c`` is the decay coefficient, 0 on padding."""
        _, valid, u, v, a_dyn, step = buffer.gather(lo, np.maximum(hi, lo))
        iu, iv, r = sample_residuals(u, v, a_dyn, self.prior, self.config)
        c = np.exp(self.config.decay_rate * self.dt * (step - self._base[:, None]))
        return iu, iv, r, np.where(valid, c, 0.0), valid.astype(np.float64)

    def _factors(self, iu: np.ndarray, iv: np.ndarray, r: np.ndarray, coef: np.ndarray):
        """``(left [n, grid_u, K], right [n, K, 2 grid_v])`` with ``left @ right = G_u[:, iu] diag(coef) (r, 1) (x) G_v[:, iv]``."""
        if iu.shape[1] == 0:
            return None
        n, k = iu.shape
        weights = torch.from_numpy(np.stack([coef * r, coef], axis=2).astype(np.float32))  # [n, K, 2]
        left = self._gu_cols[torch.from_numpy(iu)].transpose(1, 2)
        right = weights[:, :, :, None] * self._gv_cols[torch.from_numpy(iv)][:, :, None, :]  # [n, K, 2, grid_v]
        return left, right.view(n, k, -1)

    def _combine(self, rows: slice, scale: torch.Tensor) -> None:
        """``(num, den) = s E + F`` → normalized ``num / (den + k)`` and confidence ``den / (den + k)`` for ``rows``."""
        work, den = self._work[rows], self._den[rows]
        torch.addcmul(self._f[rows], self._e[rows], scale, out=work)
        torch.add(work[:, :, 1], self.config.prior_weight, out=den)
        torch.div(work[:, :, 0], den, out=self._normalized[rows])
        torch.div(work[:, :, 1], den, out=self._confidence[rows])

    def _rebase(self, now_step: int) -> None:
        """Move the base step of environments whose decay factor grew large (rare; keeps float32 safe)."""
        exponent = self.config.decay_rate * self.dt * (now_step - self._base)
        ids = np.flatnonzero(exponent > _REBASE_EXPONENT)
        if ids.size:
            factors = torch.from_numpy(np.exp(-exponent[ids]).astype(np.float32)).view(-1, 1, 1, 1)
            idx = torch.from_numpy(ids)
            rows = self._e[idx] * factors
            # Rounding residues of samples long gone would sink into float32 subnormals (slow arithmetic): drop them.
            self._e[idx] = torch.where(rows.abs() < _SUBNORMAL_GUARD, 0.0, rows)
            self._base[ids] = now_step


def _concat(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate(items, axis=1) for items in zip(*parts, strict=True))


def floor_age_s(config: ContextConfig) -> float:
    """Age in seconds at which a sample's weight reaches ``min_weight`` (inf when it never does)."""
    if config.min_weight >= 1:
        return 0.0
    if config.min_weight <= 0 or config.decay_rate <= 0:
        return math.inf
    return -math.log(config.min_weight) / config.decay_rate


__all__ = [
    "MapEstimate",
    "Reconstruction",
    "SmoothedCellMeans",
    "check_prior",
    "decay_weights",
    "floor_age_s",
    "reconstruct_dense",
    "sample_residuals",
]
