"""``DynamicsMapContext``: the per-environment dynamics-map context of a rollout worker."""

from __future__ import annotations

import logging

import numpy as np

from actors.context.buffer import SampleBuffer, gravity_compensated
from actors.context.config import ContextConfig
from actors.context.encoders import Encoder
from actors.context.reconstruction import MapEstimate, Reconstruction, SmoothedCellMeans
from learner.types import CONTEXT_FALLBACK_REASONS

log = logging.getLogger(__name__)


class DynamicsMapContext:
    """Samples → time-weighted buffer → map a(u, v) + confidence → encoded context, for ``num_envs`` environments.

    ``observe`` takes the step's samples ``[n, 4] = (u, v, a_meas, theta_meas)``, one per environment, or
    ``[n, K, 4]`` with ``present [n, K]`` marking which of up to K samples an environment reported this step
    (``info["dynamics_samples"]`` of gymnasium environments), removes gravity, and rebuilds every environment's map and context every
    ``update_every`` calls (one batched call). Validation never raises and never
    lets a non-finite number out (samples of a car held at standstill are skipped
    silently: they tell nothing about the moving car's a(u, v)):

    - a sample with a NaN (``nan``) or an infinity (``inf``) is dropped and its
      environment's context is the zero context until the next rebuild;
    - a non-finite map (``map_nonfinite``) gives the zero context and the
      environment's history is cleared, so it starts over from the prior;
    - a non-finite encoding (``encoder_nonfinite``) gives the zero context.
    """

    def __init__(
        self,
        num_envs: int,
        config: ContextConfig,
        encoder: Encoder,
        prior_map: np.ndarray | None = None,
        dt: float = 0.1,
        reconstruction: Reconstruction | None = None,
    ) -> None:
        self.num_envs = num_envs
        self.config = config
        self.context_dim = encoder.context_dim  # context_dim for pooled and cnn, basis_components for basis
        self.encoder = encoder
        self.reconstruction = reconstruction or SmoothedCellMeans(num_envs, config, prior_map, dt)
        # Slack of update_every slots: samples that left the window stay readable until the next rebuild.
        self.buffer = SampleBuffer(num_envs, config.capacity, slack=config.update_every)
        self._step = -1  # index of the latest observe call: the time stamp of its samples
        self._counts = dict.fromkeys(CONTEXT_FALLBACK_REASONS, 0)
        self._faulted = np.zeros(num_envs, dtype=bool)
        self._new_vehicle = np.zeros(num_envs, dtype=bool)  # reset since the last rebuild: the estimate is stale
        self._estimate: MapEstimate | None = None
        self._maps: np.ndarray | None = None  # current_maps, until the next reset or rebuild
        self._empty = self._encode_rows(np.zeros((1, 2, config.grid_u, config.grid_v), np.float32))
        self._context = np.repeat(self._empty, num_envs, axis=0)
        self._zeros = np.zeros_like(self._context)

    def reset(self, env_ids: np.ndarray) -> None:
        ids = np.asarray(env_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return
        self.buffer.clear(ids)
        self.reconstruction.reset(ids)
        self._faulted[ids] = False
        self._new_vehicle[ids] = True
        self._maps = None
        self._context[ids] = self._empty

    def observe(self, samples: np.ndarray | None, present: np.ndarray | None = None) -> None:
        self._step += 1
        if samples is not None:
            samples = np.asarray(samples, dtype=np.float64)
            if samples.ndim == 2:  # one sample per environment
                samples, present = samples[:, None], None if present is None else np.asarray(present)[:, None]
            for j in range(samples.shape[1]):  # the K samples of a step share its time stamp
                self._add(samples[:, j], None if present is None else np.asarray(present, dtype=bool)[:, j])
        if (self._step + 1) % self.config.update_every == 0:
            self.rebuild()

    def context(self) -> np.ndarray:
        if self._faulted.any():
            return np.where(self._faulted[:, None], self._zeros, self._context)
        return self._context.copy()

    def take_fallback_counts(self) -> dict[str, int]:
        counts = {reason: n for reason, n in self._counts.items() if n}
        self._counts = dict.fromkeys(CONTEXT_FALLBACK_REASONS, 0)
        return counts

    def rebuild(self) -> None:
        """Rebuild every environment's map and context now (``observe`` calls this every ``update_every`` steps)."""
        estimate = self.reconstruction.rebuild(self.buffer, max(self._step, 0))
        self._estimate = estimate
        features = self.encoder.features(estimate.stacked)
        map_ok = np.isfinite(features).all(axis=1)
        if not map_ok.all():
            features = np.where(map_ok[:, None], features, 0.0).astype(np.float32)
        context = self.encoder.project(features)
        encoder_ok = np.isfinite(context).all(axis=1)
        self._count("map_nonfinite", int((~map_ok).sum()))
        self._count("encoder_nonfinite", int((map_ok & ~encoder_ok).sum()))
        ok = map_ok & encoder_ok
        self._context = np.where(ok[:, None], context, 0.0).astype(np.float32)
        self._faulted[:] = False
        self._new_vehicle[:] = False
        self._maps = None
        if not map_ok.all():
            bad = np.flatnonzero(~map_ok)
            log.warning("non-finite dynamics map in environments %s: zero context, history cleared", bad.tolist())
            self.buffer.clear(bad)
            self.reconstruction.reset(bad)

    def current_maps(self) -> np.ndarray:
        """``[n, grid_u, grid_v]`` float32 maps in m/s^2 as of the last rebuild; the prior for an environment without
        one since its reset, or whose map is not finite (a controller inverting these maps never sees a NaN). Read
        only: the same array until the next reset or rebuild (a ``residual_map`` controller reads it every step)."""
        if self._maps is None:
            prior = self.reconstruction.prior.astype(np.float32)[None]
            if self._estimate is None:
                self._maps = np.repeat(prior, self.num_envs, axis=0)
            else:
                maps = prior + self.config.accel_scale * self._estimate.normalized
                unusable = self._new_vehicle | ~np.isfinite(maps).all(axis=(1, 2))
                self._maps = np.where(unusable[:, None, None], prior, maps) if unusable.any() else maps
        return self._maps

    def current_confidence(self) -> np.ndarray:
        """``[n, grid_u, grid_v]`` confidence as of the last rebuild (zeros before any)."""
        if self._estimate is None:
            return np.zeros((self.num_envs, self.config.grid_u, self.config.grid_v), np.float32)
        return self._estimate.confidence.copy()

    def _add(self, samples: np.ndarray, present: np.ndarray | None = None) -> None:
        if samples.shape != (self.num_envs, 4):
            raise ValueError(f"samples must have shape ({self.num_envs}, 4), got {samples.shape}")
        given = np.ones(self.num_envs, dtype=bool) if present is None else present
        has_nan = np.isnan(samples).any(axis=1) & given
        has_inf = np.isinf(samples).any(axis=1) & ~has_nan & given
        good = ~(has_nan | has_inf) & given
        u, v, accel, theta = samples.T
        a_dyn = gravity_compensated(np.where(good, accel, 0.0), np.where(good, theta, 0.0))
        cfg = self.config
        held = (np.abs(v) < cfg.standstill_speed) & (np.abs(accel) < cfg.standstill_accel)
        self.buffer.add(u, v, a_dyn, self._step, good & ~held)
        if (has_nan | has_inf).any():
            self._count("nan", int(has_nan.sum()))
            self._count("inf", int(has_inf.sum()))
            self._faulted |= has_nan | has_inf

    def _encode_rows(self, zeros: np.ndarray) -> np.ndarray:
        """Context of an environment without data (deviation 0, confidence 0); zero if non-finite."""
        ctx = self.encoder.project(self.encoder.features(zeros))
        return np.where(np.isfinite(ctx), ctx, 0.0).astype(np.float32)

    def _count(self, reason: str, n: int) -> None:
        if n:
            self._counts[reason] += n
