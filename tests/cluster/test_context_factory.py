"""``cluster.context_factory``: the encoder, the prior map and the dynamics-map provider a worker gets from config."""

from __future__ import annotations

import numpy as np
import pytest

from actors.context.basis import BasisEncoder, BasisFit
from actors.context.encoders import CnnEncoder, PooledEncoder
from actors.context.grid import cell_centers
from actors.vehicle.dynamics_map import population_mean_map
from cluster.config import ConfigError, load_config
from cluster.context_factory import make_dynamics_map_context, make_encoder
from tests.conftest import ROOT

SMALL = [
    "context.mode=dynamics_map", "context.grid_u=12", "context.grid_v=10", "context.prior_vehicles=8",
    "context.context_dim=8",
]  # fmt: skip
"""A 12 x 10 map and a prior of 8 vehicles: milliseconds to build."""


def vehicle(*extra: str):
    return load_config(ROOT / "configs" / "vehicle.yaml", [*SMALL, *extra])


def pendulum(*extra: str):
    return load_config(ROOT / "configs" / "smoke.yaml", [*SMALL, *extra])


class Envs:
    num_envs = 3


def test_the_encoder_is_the_one_the_config_names() -> None:
    pooled = make_encoder(vehicle().context)
    assert isinstance(pooled, PooledEncoder) and pooled.context_dim == 8
    config = load_config(
        ROOT / "configs" / "vehicle.yaml",
        ["context.encoder=cnn", f"context.encoder_checkpoint={ROOT / 'configs' / 'encoders' / 'cnn_encoder.pt'}"],
    )
    cnn = make_encoder(config.context)
    assert isinstance(cnn, CnnEncoder) and cnn.context_dim == 32
    stacked = np.zeros((1, 2, 100, 100), np.float32)  # map and confidence on the default 100 x 100 grid
    assert cnn.features(stacked).shape == (1, 2 * 20 * 20)  # pooled to the checkpoint's input grid (its .json)


def prior_of(config) -> np.ndarray:
    """The prior the worker's provider gets from ``config``."""
    return make_dynamics_map_context(config, Envs()).reconstruction.prior


def population_mean(config) -> np.ndarray:
    """The mean map of the 8 vehicles of ``SMALL``'s prior (seed 1 000 003), computed directly."""
    u, v = cell_centers(config.context)
    return population_mean_map(config.env.vehicle, u, v, num_vehicles=8, seed=1_000_003)


def test_the_vehicle_prior_is_the_population_mean_of_the_configured_vehicles_and_seed() -> None:
    config = vehicle()
    prior = prior_of(config)
    assert prior.shape == (12, 10) and np.isfinite(prior).all()
    np.testing.assert_allclose(prior, population_mean(config), rtol=0, atol=1e-12)
    assert not np.array_equal(prior, prior_of(vehicle("context.prior_seed=7")))
    assert not np.array_equal(prior, prior_of(vehicle("context.prior_vehicles=9")))


def test_the_provider_takes_the_vehicle_step_and_prior() -> None:
    config = vehicle("env.vehicle.dt=0.05")
    provider = make_dynamics_map_context(config, Envs())
    assert (provider.num_envs, provider.context_dim, provider.context().shape) == (3, 8, (3, 8))
    assert provider.reconstruction.dt == 0.05
    np.testing.assert_allclose(provider.reconstruction.prior, population_mean(config), rtol=0, atol=1e-12)


def test_the_provider_of_another_environment_uses_a_zero_prior_and_a_tenth_of_a_second() -> None:
    provider = make_dynamics_map_context(pendulum(), Envs())
    assert provider.reconstruction.dt == 0.1
    np.testing.assert_array_equal(provider.reconstruction.prior, np.zeros((12, 10)))


def test_basis_reconstruction_and_encoder_share_the_populations_basis() -> None:
    """``basis``: the fit and the encoder of the same 8 vehicles' components; the prior is still their mean; the
    context has basis_components values whatever context_dim says, zero without samples; the basis encoder alone
    keeps the smoothed reconstruction."""
    config = vehicle("env.vehicle.dt=0.05", "context.reconstruction=basis", "context.encoder=basis", "context.basis_components=3")
    provider = make_dynamics_map_context(config, Envs())
    assert isinstance(provider.reconstruction, BasisFit) and isinstance(provider.encoder, BasisEncoder)
    assert (provider.context_dim, provider.context().shape, provider.reconstruction.dt) == (3, (3, 3), 0.05)
    np.testing.assert_allclose(provider.reconstruction.prior, population_mean(config), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(provider.context(), 0.0)  # no samples: the population mean, coordinates 0
    encoder_only = make_dynamics_map_context(vehicle("context.encoder=basis", "context.basis_components=3"), Envs())
    assert not isinstance(encoder_only.reconstruction, BasisFit) and encoder_only.context_dim == 3


def test_basis_needs_the_vehicle_population() -> None:
    """A config error naming the key and the file."""
    with pytest.raises(ConfigError, match=r"smoke.yaml.*context.reconstruction: basis .* needs env.kind vehicle"):
        pendulum("context.reconstruction=basis", "context.basis_components=3")
    with pytest.raises(ConfigError, match=r"context.encoder: basis .* needs env.kind vehicle"):
        pendulum("context.encoder=basis", "context.basis_components=3")
    with pytest.raises(ConfigError, match=r"vehicle.yaml.*context.basis_components: must be below prior_vehicles \(8\), got 8"):
        vehicle("context.reconstruction=basis", "context.basis_components=8")
