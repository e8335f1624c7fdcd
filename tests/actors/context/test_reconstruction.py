"""The normalized-convolution reconstruction: incremental equals from-scratch; error falls with data."""

from __future__ import annotations

import numpy as np
import pytest

from actors.context.buffer import SampleBuffer
from actors.context.config import ContextConfig
from actors.context.grid import cell_index
from actors.context.reconstruction import SmoothedCellMeans, reconstruct_dense

from .helpers import checked_rebuilds, synthetic_accel, synthetic_map


@pytest.mark.parametrize(
    "config",
    [
        ContextConfig(),
        ContextConfig(capacity=37, update_every=7, split_at_zero_command=True, smoothing_sigma=(2.0, 3.0)),
        ContextConfig(min_weight=1.0, grid_u=30, grid_v=20),
        ContextConfig(min_weight=0.0, capacity=50, decay_rate=1.0),
        ContextConfig(decay_rate=3.0, capacity=5),
    ],
)
def test_incremental_matches_from_scratch(config: ContextConfig) -> None:
    n = 4
    prior = np.random.default_rng(1).normal(size=(config.grid_u, config.grid_v))
    rec = SmoothedCellMeans(n, config, prior, dt=0.1)
    worst, checks = 0.0, 0
    for step, buf, est in checked_rebuilds(rec, config, n, steps=1800, reset_step=900, check_every=150):
        ref = reconstruct_dense(buf, step, prior, config, 0.1)
        worst = max(worst, np.abs(est.normalized - ref.normalized).max(), np.abs(est.confidence - ref.confidence).max())
        checks += 1
    assert checks == 12
    assert worst < 2e-5  # float32 state against float64 from scratch


def test_no_data_falls_back_to_prior_exactly() -> None:
    config = ContextConfig(grid_u=20, grid_v=10)
    prior = np.arange(200.0).reshape(20, 10)
    buf = SampleBuffer(2, config.capacity)
    est = SmoothedCellMeans(2, config, prior).rebuild(buf, 0)
    assert np.abs(est.normalized).max() == 0.0 and np.abs(est.confidence).max() == 0.0


def test_single_sample_blends_with_prior_weight() -> None:
    # One fresh sample (weight 1) at a cell: den = 1 there, so confidence = 1 / (1 + k) and
    # map = prior + (a - prior) / (1 + k).
    config = ContextConfig(grid_u=10, grid_v=10, smoothing_sigma=(1.0, 1.0), prior_weight=3.0, accel_scale=2.0)
    buf = SampleBuffer(1, 16)
    buf.add(np.array([0.05]), np.array([16.0]), np.array([2.5]), step=0)
    est = SmoothedCellMeans(1, config, np.full((10, 10), 0.5)).rebuild(buf, 0)
    iu, iv = cell_index(np.array([0.05]), np.array([16.0]), config)
    assert (iu[0], iv[0]) == (5, 5)
    assert est.confidence[0, 5, 5] == pytest.approx(0.25, abs=1e-6)
    assert 0.5 + 2.0 * est.normalized[0, 5, 5] == pytest.approx(0.5 + 2.0 / 4.0, abs=1e-6)
    # The neighbour one cell away sees weight exp(-1/2) = 0.6065.
    assert est.confidence[0, 6, 5] == pytest.approx(0.60653 / 3.60653, abs=1e-5)


def test_rmse_against_a_known_map_falls_as_samples_grow() -> None:
    config = ContextConfig(decay_rate=0.0, min_weight=1.0, capacity=4096)
    truth = synthetic_map(config)
    rng = np.random.default_rng(2)
    buf = SampleBuffer(1, config.capacity)
    rec = SmoothedCellMeans(1, config, None)
    rmse, step = [], 0
    for target in (50, 200, 800, 3200):
        while step < target:
            u, v = rng.uniform(-1, 1, 1), rng.uniform(0, 30, 1)
            buf.add(u, v, synthetic_accel(u, v) + 0.3 * rng.standard_normal(1), step)
            step += 1
        est = rec.rebuild(buf, step - 1)
        rmse.append(float(np.sqrt(np.mean((config.accel_scale * est.normalized[0] - truth) ** 2))))
    prior_rmse = float(np.sqrt(np.mean(truth**2)))
    assert all(a > b for a, b in zip(rmse, rmse[1:], strict=False)), rmse
    assert rmse[0] < prior_rmse and rmse[-1] < 0.25 * prior_rmse, (rmse, prior_rmse)
