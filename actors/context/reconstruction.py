"""Map reconstruction strategies: from a buffer of samples to a normalized map and its confidence.

The default, ``SmoothedCellMeans``, is a normalized convolution: weighted cell
sums of the samples' deviation from the prior map and of their weights, both
smoothed by a separable Gaussian, give ``num`` and ``den`` per cell; the map is

    map = prior + num / (den + prior_weight),  confidence = den / (den + prior_weight)

so cells without nearby data fall back smoothly to the prior. ``reconstruct_dense``
computes exactly that from scratch (bincount + ``G_u @ S @ G_v^T``); the strategy
maintains the same sums incrementally in a low-rank factorization of the
Gaussians, which is several times cheaper at 100 x 100 cells: between
rebuilds only a few samples per environment enter, reach the weight floor, or
leave the window, and the smoothed fields are expanded from a few hundred
coefficients per environment.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import numpy as np
import torch

from actors.context.buffer import SampleBuffer, decay_weights, is_floored, seq_range
from actors.context.config import ContextConfig
from actors.context.grid import cell_index, smoothing_matrices

_REBASE_EXPONENT = 30.0
"""Rebase an environment's decaying coefficients once their scale factor exceeds exp(30)."""
_SUBNORMAL_GUARD = 1e-25
"""Decaying coefficients below this after a rebase are rounding residues: set to 0."""


class MapEstimate(NamedTuple):
    """A reconstruction for every environment."""

    stacked: np.ndarray
    """``[n, 2, grid_u, grid_v]`` float32: channel 0 the normalized map, channel 1 its confidence."""

    @property
    def normalized(self) -> np.ndarray:
        """``[n, grid_u, grid_v]`` ``(map - prior) / accel_scale``."""
        return self.stacked[:, 0]

    @property
    def confidence(self) -> np.ndarray:
        """``[n, grid_u, grid_v]`` in [0, 1] (up to rounding): weight of the data against the prior."""
        return self.stacked[:, 1]


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
    return MapEstimate(np.stack([num / (den + k), den / (den + k)], axis=1).astype(np.float32))


class SmoothedCellMeans:
    """Default reconstruction: smoothed weighted cell means of the samples, blended into a prior.

    Each Gaussian is factored once, ``G = B B^T`` (eigenvectors above ``rank_tol``
    of the top eigenvalue; a wide Gaussian is smooth, so ``B`` has few columns:
    33 along u and 18 along v at the default sigmas). A smoothed field
    ``G_u S G_v^T`` is then ``B_u C B_v^T`` with ``C = B_u^T S B_v``, and a sample at
    cell (i, j) adds the outer product of rows ``B_u[i]`` and ``B_v[j]`` to ``C``.

    State per environment (float64, tiny): ``C_E`` over samples whose weight still
    decays, with coefficient ``c = exp(lambda (t_i - t0))`` relative to the
    environment's base step ``t0``, and ``C_F`` over samples at the floor (``w_min``).
    A rebuild updates both with the samples that entered, reached the floor or
    left the window, forms ``C = s C_E + C_F`` with ``s = exp(-lambda (t_now - t0))``
    (every decaying sample gets exactly ``exp(-lambda age)``) and expands ``C`` to
    the grid in two matrix products. The arrays of the returned ``MapEstimate`` are
    reused: valid until the next rebuild.
    """

    def __init__(
        self, num_envs: int, config: ContextConfig, prior: np.ndarray | None = None, dt: float = 0.1, rank_tol: float = 1e-7
    ) -> None:
        if dt <= 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self.config = config
        self.prior = check_prior(prior, config)
        self.dt = dt
        gu, gv = smoothing_matrices(config)
        self._bu, self._bv = low_rank_factor(gu, rank_tol), low_rank_factor(gv, rank_tol)
        ru, rv = self.rank
        # A constant column on each factor carries prior_weight into the expanded denominator: den + k for free.
        ones_u, ones_v = np.ones((config.grid_u, 1)), np.ones((config.grid_v, 1))
        self._bu_aug = torch.from_numpy(np.hstack([self._bu, ones_u])).float()  # [grid_u, r_u + 1]
        self._bv_aug_t = torch.from_numpy(np.hstack([self._bv, ones_v]).T.copy()).float()  # [r_v + 1, grid_v]
        self._bu_rows, self._bv_rows = torch.from_numpy(self._bu), torch.from_numpy(self._bv)  # float64, for updates
        self._c = torch.zeros(num_envs, ru, 4, rv, dtype=torch.float64)  # (C_E num, C_E den, C_F num, C_F den)
        self._coef = torch.zeros(num_envs, 2, ru + 1, rv + 1)
        self._coef[:, 1, ru, rv] = config.prior_weight
        # Preallocated outputs: fresh multi-megabyte arrays per rebuild cost more in page faults than the maths.
        self._fields = torch.zeros(num_envs, 2, config.grid_u, config.grid_v)  # (num, den + k)
        self._out = torch.zeros_like(self._fields)  # (normalized, confidence)
        self._base = np.zeros(num_envs, dtype=np.int64)
        self._added = np.zeros(num_envs, dtype=np.int64)
        self._floored = np.zeros(num_envs, dtype=np.int64)
        self._removed = np.zeros(num_envs, dtype=np.int64)
        self._now = 0

    @property
    def rank(self) -> tuple[int, int]:
        """Columns kept of the factors along u and along v."""
        return self._bu.shape[1], self._bv.shape[1]

    def reset(self, env_ids: np.ndarray) -> None:
        ids = np.asarray(env_ids, dtype=np.int64)
        self._c[torch.from_numpy(ids)] = 0.0
        self._added[ids] = self._floored[ids] = self._removed[ids] = 0
        self._base[ids] = self._now

    def poison(self, env_ids: np.ndarray, value: float) -> None:
        """Test hook: write ``value`` (NaN, inf) into the state of ``env_ids``."""
        self._c[torch.from_numpy(np.asarray(env_ids, dtype=np.int64)), :, 2:] = value

    def rebuild(self, buffer: SampleBuffer, now_step: int) -> MapEstimate:
        self._now = now_step
        self._rebase(now_step)
        self._accumulate(*self._changes(buffer, now_step))
        return self._combine(now_step)

    def _combine(self, now_step: int) -> MapEstimate:
        """``C = s C_E + C_F`` → fields ``B_u C B_v^T`` → normalized ``num / (den + k)``, confidence ``den / (den + k)``."""
        cfg = self.config
        ru, rv = self.rank
        scale = torch.from_numpy(np.exp(-cfg.decay_rate * self.dt * (now_step - self._base))).view(-1, 1, 1, 1)
        coef = torch.addcmul(self._c[:, :, 2:], self._c[:, :, :2], scale)  # [n, r_u, (num, den), r_v]
        self._coef[:, :, :ru, :rv].copy_(coef.transpose(1, 2))
        along_u = torch.matmul(self._bu_aug, self._coef)  # [n, 2, grid_u, r_v + 1]
        torch.mm(along_u.view(-1, rv + 1), self._bv_aug_t, out=self._fields.view(-1, cfg.grid_v))
        den_k = self._fields[:, 1]
        torch.div(self._fields[:, 0], den_k, out=self._out[:, 0])
        torch.sub(den_k, cfg.prior_weight, out=self._out[:, 1]).div_(den_k)  # den / (den + k)
        return MapEstimate(self._out.numpy())

    def _changes(self, buffer: SampleBuffer, now_step: int) -> tuple[np.ndarray, ...]:
        """Samples whose status changed since the last rebuild, as ``(iu, iv, r, coef_e, coef_f)``, each ``[n, K]``.

        Four ranges of sequence numbers per environment: new samples (into ``C_E``),
        samples that reached the weight floor (out of ``C_E``, into ``C_F``), and
        samples that left the window (out of ``C_F``, or out of ``C_E`` if still decaying).
        """
        cfg = self.config
        count = buffer.count
        floored_lo = np.maximum(self._floored, self._removed)
        _, valid, _, _, _, step = buffer.gather(floored_lo, count)
        crossing = valid & is_floored((now_step - step) * self.dt, cfg.decay_rate, cfg.min_weight)
        floored = floored_lo + crossing.sum(axis=1)  # samples are in time order: the crossing ones are a prefix
        removed = np.maximum(self._removed, buffer.window_start())
        ranges = (  # (lo, hi, sign in C_E, sign in C_F)
            (self._added, count, 1.0, 0.0),
            (floored_lo, floored, -1.0, 1.0),
            (self._removed, np.minimum(removed, floored), 0.0, -1.0),
            (np.maximum(self._removed, floored), np.maximum(removed, floored), -1.0, 0.0),
        )
        parts = [seq_range(lo, np.maximum(hi, lo)) for lo, hi, _, _ in ranges]
        seq, valid = np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1)
        sign_e = np.concatenate([np.full(p[0].shape[1], r[2]) for p, r in zip(parts, ranges, strict=True)])
        sign_f = np.concatenate([np.full(p[0].shape[1], r[3]) for p, r in zip(parts, ranges, strict=True)])
        self._added, self._floored, self._removed = count.copy(), np.maximum(floored, removed), removed
        got = buffer.take(seq)
        iu, iv, r = sample_residuals(got[..., 0], got[..., 1], got[..., 2], self.prior, cfg)
        decay = np.where(valid, np.exp(cfg.decay_rate * self.dt * (got[..., 3] - self._base[:, None])), 0.0)
        return iu, iv, r, sign_e * decay, sign_f * cfg.min_weight * valid

    def _accumulate(self, iu: np.ndarray, iv: np.ndarray, r: np.ndarray, coef_e: np.ndarray, coef_f: np.ndarray) -> None:
        """``C_E, C_F += sum_k coef_k (r_k, 1) B_u[iu_k] (x) B_v[iv_k]`` for every environment (one batched matmul)."""
        if iu.shape[1] == 0:
            return
        n, k = iu.shape
        weights = torch.from_numpy(np.stack([coef_e * r, coef_e, coef_f * r, coef_f], axis=2))  # [n, K, 4]
        left = self._bu_rows[torch.from_numpy(iu)].transpose(1, 2)  # [n, r_u, K]
        right = weights[..., None] * self._bv_rows[torch.from_numpy(iv)][:, :, None, :]  # [n, K, 4, r_v]
        self._c.view(n, left.shape[1], -1).baddbmm_(left, right.view(n, k, -1))

    def _rebase(self, now_step: int) -> None:
        """Move the base step of environments whose decay factor grew large (keeps the coefficients bounded)."""
        exponent = self.config.decay_rate * self.dt * (now_step - self._base)
        ids = np.flatnonzero(exponent > _REBASE_EXPONENT)
        if ids.size:
            self._rescale_decaying(torch.from_numpy(ids), torch.from_numpy(np.exp(-exponent[ids])))
            self._base[ids] = now_step

    def _rescale_decaying(self, idx: torch.Tensor, factor: torch.Tensor) -> None:
        """Multiply the decaying sums of environments ``idx`` by ``factor [len(idx)]`` (a rebase)."""
        self._c[idx, :, :2] = flush_residues(self._c[idx, :, :2] * factor.view(-1, 1, 1, 1))


def flush_residues(x: torch.Tensor) -> torch.Tensor:
    """Rounding residues of samples long gone would sink into subnormals (slow arithmetic): zero them."""
    return torch.where(x.abs() < _SUBNORMAL_GUARD, 0.0, x)


def low_rank_factor(g: np.ndarray, tol: float) -> np.ndarray:
    """``B [N, r]`` with ``B B^T ~ g`` for a symmetric positive semi-definite ``g``: eigenvalues above ``tol * max``."""
    w, q = np.linalg.eigh(g)
    keep = w > tol * w.max()
    return np.ascontiguousarray(q[:, keep] * np.sqrt(w[keep]))


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
    "flush_residues",
    "low_rank_factor",
    "reconstruct_dense",
    "sample_residuals",
]
