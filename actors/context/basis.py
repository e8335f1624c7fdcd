"""The population basis: a vehicle's map as the population's mean plus a few principal components.

Maps of vehicles drawn from the randomization differ in a handful of ways (mass scales everything, the motor's
gain and saturation move the drive side, the brake's gain and exponent the brake side), so a few principal
components of many such maps span most of what tells one vehicle from another. Two uses:

- ``BasisFit`` (``context.reconstruction: basis``): the map is the population mean plus the components weighted
  by the posterior mean of a Bayesian linear regression of the samples on them (the components' population
  variances are the prior). Unlike the smoothed cell means it extrapolates from the cells a vehicle visited to the
  ones it did not, the way vehicles of the population do: a controller that inverts the map finds it right where
  it has not driven yet.
- ``BasisEncoder`` (``context.encoder: basis``): the context is the map's coordinates on the components in units
  of their population standard deviation, ``basis_components`` values, no training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from actors.context.buffer import SampleBuffer
from actors.context.config import ContextConfig
from actors.context.reconstruction import MapEstimate, SmoothedCellMeans, flush_residues, sample_residuals

COORDINATE_CLIP = 10.0
"""Context values are clipped to +-this many population standard deviations (a wild map cannot blow up the input)."""


@dataclass(frozen=True)
class PopulationBasis:
    """The mean map and the leading principal components of a population of maps."""

    mean: np.ndarray
    """``[grid_u, grid_v]`` m/s^2: the prior map."""
    components: np.ndarray
    """``[K, grid_u * grid_v]`` orthonormal rows, in normalized units (``(map - mean) / accel_scale``)."""
    std: np.ndarray
    """``[K]`` population standard deviation of each coordinate."""

    @functools.cached_property
    def _by_cell(self) -> torch.Tensor:
        return torch.from_numpy(self.components.T.copy())  # [grid_u * grid_v, K] float64, a row per cell

    def at_cells(self, iu: np.ndarray, iv: np.ndarray) -> torch.Tensor:
        """``[..., K]`` the components' values at cells ``(iu, iv)`` (a sample's regressors)."""
        return self._by_cell[torch.from_numpy(iu * self.mean.shape[1] + iv)]


def population_basis(maps: np.ndarray, num_components: int, accel_scale: float) -> PopulationBasis:
    """The basis of ``maps [N, grid_u, grid_v]`` (m/s^2): their mean and first ``num_components`` principal components."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or len(maps) <= num_components:
        raise ValueError(f"need more than {num_components} maps [N, grid_u, grid_v], got shape {maps.shape}")
    mean = maps.mean(axis=0)
    deviations = (maps - mean).reshape(len(maps), -1) / accel_scale
    _, singular, right = np.linalg.svd(deviations, full_matrices=False)
    std = singular[:num_components] / np.sqrt(len(maps) - 1)
    return PopulationBasis(mean, right[:num_components], np.maximum(std, 1e-12))


def basis_posterior(gram: torch.Tensor, moment: torch.Tensor, std: torch.Tensor, noise: float) -> torch.Tensor:
    """Posterior mean ``[n, K]`` of coordinates ``c`` with prior ``N(0, diag(std^2))`` given samples
    ``residual = features . c + e``, ``e ~ N(0, noise^2 / weight)``: the solution of
    ``(gram / noise^2 + diag(1 / std^2)) c = moment / noise^2`` per environment, where
    ``gram [n, K, K] = sum_i w_i f_i f_i^T`` and ``moment [n, K] = sum_i w_i f_i r_i`` (float64)."""
    precision = gram + torch.diag(noise**2 / std.pow(2))
    return torch.linalg.solve(precision, moment)


def fit_dense(buffer: SampleBuffer, now_step: int, basis: PopulationBasis, config: ContextConfig, dt: float) -> torch.Tensor:
    """Reference for ``BasisFit``: the posterior means ``[n, K]`` computed from every held sample at once."""
    weights = torch.from_numpy(buffer.weights(now_step, dt, config.decay_rate, config.min_weight))
    iu, iv, residuals = sample_residuals(buffer.u, buffer.v, buffer.a_dyn, basis.mean, config)
    features = basis.at_cells(iu, iv)  # [n, S, K]
    weighted = features * weights.unsqueeze(-1)
    gram = weighted.transpose(1, 2) @ features
    moment = (weighted.transpose(1, 2) @ torch.from_numpy(residuals).unsqueeze(-1)).squeeze(-1)
    return basis_posterior(gram, moment, torch.from_numpy(basis.std), config.basis_noise / config.accel_scale)


class BasisFit(SmoothedCellMeans):
    """``context.reconstruction: basis``: each environment's map is the population mean plus the components weighted
    by ``basis_posterior`` of its samples, with the smoothed reconstruction's time-decayed weights; the confidence
    channel is the smoothed reconstruction's (where the data are).

    The sums ``gram`` and ``moment`` are kept incrementally beside the smoothed ones, with the same bookkeeping
    (``SmoothedCellMeans``): a decaying part with coefficients relative to the environment's base step and a part at
    the weight floor, updated with the samples whose status changed since the last rebuild; a rebuild then solves one
    ``K x K`` system per environment and expands ``K`` coordinates to the grid.
    """

    def __init__(self, num_envs: int, config: ContextConfig, basis: PopulationBasis, dt: float = 0.1) -> None:
        super().__init__(num_envs, config, basis.mean, dt)
        k = len(basis.std)
        self.basis = basis
        self._components = torch.from_numpy(basis.components).float()
        self._std = torch.from_numpy(basis.std)
        self._sums = torch.zeros(num_envs, 2, k, k + 1, dtype=torch.float64)
        """Per environment, decaying then floored: ``[gram | moment]`` (``[K, K + 1]``)."""
        self.coordinates = torch.zeros(num_envs, k, dtype=torch.float64)
        """``[n, K]`` the latest posterior means (zeros: the population mean)."""

    def reset(self, env_ids: np.ndarray) -> None:
        super().reset(env_ids)
        idx = torch.from_numpy(np.asarray(env_ids, dtype=np.int64))
        self._sums[idx] = 0.0
        self.coordinates[idx] = 0.0

    def poison(self, env_ids: np.ndarray, value: float) -> None:
        """Test hook: write ``value`` (NaN, inf) into the state of ``env_ids`` (the fit's sums too)."""
        super().poison(env_ids, value)
        self._sums[torch.from_numpy(np.asarray(env_ids, dtype=np.int64)), 1] = value

    def _accumulate(self, iu: np.ndarray, iv: np.ndarray, r: np.ndarray, coef_e: np.ndarray, coef_f: np.ndarray) -> None:
        super()._accumulate(iu, iv, r, coef_e, coef_f)
        if iu.shape[1] == 0:
            return
        n, changed = iu.shape
        features = self.basis.at_cells(iu, iv)  # [n, C, K]
        with_residual = torch.cat([features, torch.from_numpy(r).unsqueeze(-1)], dim=-1)  # [n, C, K + 1]
        coefs = torch.from_numpy(np.stack([coef_e, coef_f], axis=2))  # [n, C, 2]
        right = (coefs.unsqueeze(-1) * with_residual.unsqueeze(2)).view(n, changed, -1)  # [n, C, 2 (K + 1)]
        self._sums += (features.transpose(1, 2) @ right).view(n, -1, 2, with_residual.shape[-1]).transpose(1, 2)

    def _rescale_decaying(self, idx: torch.Tensor, factor: torch.Tensor) -> None:
        super()._rescale_decaying(idx, factor)
        self._sums[idx, 0] = flush_residues(self._sums[idx, 0] * factor.view(-1, 1, 1))

    def _combine(self, now_step: int) -> MapEstimate:
        estimate = super()._combine(now_step)
        cfg = self.config
        scale = torch.from_numpy(np.exp(-cfg.decay_rate * self.dt * (now_step - self._base))).view(-1, 1, 1)
        sums = torch.addcmul(self._sums[:, 1], self._sums[:, 0], scale)  # [n, K, K + 1]
        self.coordinates = basis_posterior(sums[..., :-1], sums[..., -1], self._std, cfg.basis_noise / cfg.accel_scale)
        fitted = self.coordinates.float() @ self._components  # [n, grid_u * grid_v]
        estimate.stacked[:, 0] = fitted.view(-1, cfg.grid_u, cfg.grid_v).numpy()
        return estimate


class BasisEncoder:
    """``context.encoder: basis``: the normalized map's coordinates on the population's components over their
    population standard deviations (``basis_components`` values; the confidence channel is not used)."""

    def __init__(self, config: ContextConfig, basis: PopulationBasis) -> None:
        self.context_dim = len(basis.std)
        self._projection = torch.from_numpy((basis.components / basis.std[:, None]).T.copy()).float()  # [cells, K]

    def features(self, stacked: np.ndarray) -> np.ndarray:
        # A non-finite cell makes its row non-finite: every cell enters every coordinate.
        maps = torch.from_numpy(np.ascontiguousarray(stacked[:, 0])).flatten(1)
        return (maps @ self._projection).numpy()

    def project(self, features: np.ndarray) -> np.ndarray:
        return np.clip(features, -COORDINATE_CLIP, COORDINATE_CLIP).astype(np.float32)
