"""The population basis: its components, the Bayesian fit (hand-computed, incremental equal to from-scratch) and its
encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.context.basis import (
    COORDINATE_CLIP,
    BasisEncoder,
    BasisFit,
    basis_posterior,
    fit_dense,
    population_basis,
)
from actors.context.buffer import SampleBuffer
from actors.context.config import ContextConfig
from actors.context.reconstruction import reconstruct_dense

from .helpers import checked_rebuilds, sample_stream


def small_basis(config: ContextConfig, components: int, seed: int = 0):
    """A random population of maps on ``config``'s grid and its basis."""
    rng = np.random.default_rng(seed)
    cells = config.grid_u * config.grid_v
    maps = rng.normal(size=(40, cells)) @ rng.normal(size=(cells, cells)) * 0.1 + 2.0
    return population_basis(maps.reshape(40, config.grid_u, config.grid_v), components, config.accel_scale)


def test_population_basis_of_maps_along_one_direction():
    """Deviations ``s_i A`` (A of unit norm, s = 3, -3, 1, -1, accel_scale 2): one component, ±A / 1, std
    sqrt(sum (s/2)^2 / 3) = sqrt(5 / 3)."""
    direction = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 4.0]]) / 5.0
    mean = np.arange(6.0).reshape(2, 3)
    maps = np.stack([mean + s * direction for s in (3.0, -3.0, 1.0, -1.0)])
    basis = population_basis(maps, 1, accel_scale=2.0)
    np.testing.assert_allclose(basis.mean, mean, atol=1e-12)
    assert abs(basis.components[0] @ direction.ravel()) == pytest.approx(1.0)
    assert basis.std[0] == pytest.approx(np.sqrt(5.0 / 3.0))
    with pytest.raises(ValueError, match="more than 4 maps"):
        population_basis(maps, 4, accel_scale=2.0)


def test_basis_posterior_by_hand():
    """One coordinate: c = (2 / 1) / (4 / 1 + 1 / 1) = 0.4 with noise 1, std 1; with noise 0.5 the prior term is
    noise^2 / std^2 = 0.25: c = 2 / 4.25. Two independent coordinates solve separately."""
    gram, moment = torch.tensor([[[4.0]]], dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    assert basis_posterior(gram, moment, one, 1.0).item() == pytest.approx(0.4)
    assert basis_posterior(gram, moment, one, 0.5).item() == pytest.approx(2.0 / 4.25)
    gram2 = torch.diag(torch.tensor([4.0, 9.0], dtype=torch.float64)).unsqueeze(0)
    got = basis_posterior(gram2, torch.tensor([[2.0, 3.0]], dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64), 1.0)
    np.testing.assert_allclose(got.numpy(), [[2.0 / 5.0, 3.0 / 9.25]])
    assert basis_posterior(gram2 * 0, torch.zeros(1, 2, dtype=torch.float64), one.repeat(2), 1.0).abs().max() == 0  # no data


@pytest.mark.parametrize(
    "config",
    [
        ContextConfig(grid_u=12, grid_v=10, pool_grid=(4, 4), basis_components=6),
        ContextConfig(grid_u=12, grid_v=10, pool_grid=(4, 4), basis_components=6, capacity=37, update_every=7),
        ContextConfig(grid_u=12, grid_v=10, pool_grid=(4, 4), basis_components=6, min_weight=0.0, decay_rate=3.0, capacity=5),
    ],
)
def test_incremental_fit_matches_from_scratch(config: ContextConfig) -> None:
    """The kept sums (samples entering, reaching the floor, leaving the window, rebases, a new vehicle) give the
    coordinates of a fit over every held sample, and the map is the mean plus the components so weighted; the
    confidence is the smoothed reconstruction's."""
    n, basis = 3, small_basis(config, config.basis_components)
    fit = BasisFit(n, config, basis, dt=0.1)
    worst_coordinate, worst_map, checks = 0.0, 0.0, 0
    for step, buf, estimate in checked_rebuilds(fit, config, n, 1500, 700, 150, accel_mean=2.0, accel_std=1.0):
        reference = fit_dense(buf, step, basis, config, 0.1)
        scale = reference.abs().max().item()
        assert scale > 0.1  # a real fit, not the prior
        worst_coordinate = max(worst_coordinate, (fit.coordinates - reference).abs().max().item() / scale)
        expanded = (reference.numpy() @ basis.components).reshape(n, config.grid_u, config.grid_v)
        worst_map = max(worst_map, np.abs(estimate.normalized - expanded).max())
        smoothed = reconstruct_dense(buf, step, basis.mean, config, 0.1)
        np.testing.assert_allclose(estimate.confidence, smoothed.confidence, atol=2e-5)
        checks += 1
    assert checks == 10
    assert worst_coordinate < 1e-8
    assert worst_map < 1e-5


def test_a_vehicle_of_the_population_is_found_from_few_samples():
    """Samples of a map that lies in the basis (mean + 3 std along component 0 - 2 std along component 2), noise-free,
    at 30 cells: the posterior is that map to within the prior's pull (basis_noise small), everywhere on the grid."""
    config = ContextConfig(grid_u=12, grid_v=10, pool_grid=(4, 4), basis_components=4, basis_noise=1e-3, capacity=64)
    basis = small_basis(config, 4)
    coordinates = np.array([3 * basis.std[0], 0.0, -2 * basis.std[2], 0.0])
    truth = basis.mean + config.accel_scale * (coordinates @ basis.components).reshape(config.grid_u, config.grid_v)
    rng = np.random.default_rng(2)
    buf = SampleBuffer(1, config.capacity)
    for step in range(30):
        iu, iv = rng.integers(config.grid_u), rng.integers(config.grid_v)
        u, v = -1 + (iu + 0.5) * 2 / config.grid_u, (iv + 0.5) * config.v_max / config.grid_v
        buf.add(np.array([u]), np.array([v]), np.array([truth[iu, iv]]), step)
    estimate = BasisFit(1, config, basis).rebuild(buf, 29)
    fitted = basis.mean + config.accel_scale * estimate.normalized[0]
    assert np.abs(fitted - truth).max() < 1e-3 * np.abs(truth - basis.mean).max()


def test_basis_encoder_gives_coordinates_in_population_stds():
    """A normalized map 2 std_1 component_1: context e_1 * 2; beyond the clip it is clipped; a non-finite map gives
    non-finite features (the provider's map_nonfinite) for its row only."""
    config = ContextConfig(grid_u=12, grid_v=10, pool_grid=(4, 4), basis_components=5)
    basis = small_basis(config, 5)
    encoder = BasisEncoder(config, basis)
    assert encoder.context_dim == 5
    stacked = np.zeros((3, 2, 12, 10), np.float32)
    stacked[0, 0] = (2 * basis.std[1] * basis.components[1]).reshape(12, 10)
    stacked[1, 0] = (50 * basis.std[3] * basis.components[3]).reshape(12, 10)
    stacked[2, 0, 4, 4] = np.nan
    features = encoder.features(stacked)
    np.testing.assert_allclose(features[0], [0, 2, 0, 0, 0], atol=1e-4)
    assert np.isfinite(features[:2]).all() and not np.isfinite(features[2]).any()
    context = encoder.project(features[:2])
    assert context.dtype == np.float32
    np.testing.assert_allclose(context[1], [0, 0, 0, COORDINATE_CLIP, 0], atol=1e-3)


def test_a_poisoned_fit_gives_the_zero_context_and_starts_over():
    """The provider's guard holds for the basis fit and encoder: a NaN or an infinity in an environment's sums makes
    its map non-finite at the next rebuild: zero context, counted as map_nonfinite, history cleared; the others keep
    theirs, and the next rebuild fits the cleared ones afresh."""
    from actors.context.provider import DynamicsMapContext

    config = ContextConfig(mode="dynamics_map", encoder="basis", reconstruction="basis", grid_u=12, grid_v=10, pool_grid=(4, 4),
                           basis_components=4)
    basis = small_basis(config, 4)
    n = 6
    provider = DynamicsMapContext(n, config, BasisEncoder(config, basis), basis.mean, 0.1, BasisFit(n, config, basis))
    assert provider.context_dim == 4
    stream = sample_stream(np.random.default_rng(2), n, 40)
    for samples in stream[:20]:
        provider.observe(samples)
    provider.reconstruction.poison(np.array([1]), np.nan)
    provider.reconstruction.poison(np.array([3]), np.inf)
    for samples in stream[20:30]:
        provider.observe(samples)
    context = provider.context()
    assert np.isfinite(context).all() and np.abs(context[[1, 3]]).max() == 0.0
    assert np.abs(context[[0, 2, 4, 5]]).max(axis=1).min() > 0.01
    assert provider.take_fallback_counts() == {"map_nonfinite": 2}
    assert provider.buffer.count[[1, 3]].tolist() == [0, 0]
    for samples in stream[30:40]:
        provider.observe(samples)
    assert np.abs(provider.context()[[1, 3]]).max(axis=1).min() > 0.01 and provider.take_fallback_counts() == {}
