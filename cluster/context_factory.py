"""Builds the dynamics-map context provider of a worker from config (part of the composition root)."""

from __future__ import annotations

import numpy as np

from actors.context.basis import BasisEncoder, BasisFit, PopulationBasis, population_basis
from actors.context.config import ContextConfig
from actors.context.encoders import CnnEncoder, Encoder, PooledEncoder
from actors.context.grid import cell_centers
from actors.context.provider import DynamicsMapContext
from actors.envs import VectorEnv
from actors.vehicle.config import VehicleConfig
from actors.vehicle.dynamics_map import population_maps
from cluster.config import Config


def make_encoder(context: ContextConfig, basis: PopulationBasis | None = None) -> Encoder:
    # ContextConfig refused a cnn encoder without a checkpoint path; Config refused a basis outside the vehicle env.
    if context.encoder == "pooled":
        return PooledEncoder(context)
    if context.encoder == "basis":
        return BasisEncoder(context, basis)
    return CnnEncoder(context, context.encoder_checkpoint)


def population(context: ContextConfig, vehicle: VehicleConfig | None) -> np.ndarray | None:
    """``[prior_vehicles, grid_u, grid_v]`` maps of the randomization's vehicles (the vehicle env has an oracle); else
    None."""
    if vehicle is None:
        return None
    u, v = cell_centers(context)
    return population_maps(vehicle, u, v, num_vehicles=context.prior_vehicles, seed=context.prior_seed)


def make_dynamics_map_context(config: Config, env: VectorEnv) -> DynamicsMapContext:
    if config.env.kind == "vehicle":
        return dynamics_map_context(config.context, config.env.vehicle, env.num_envs, config.env.vehicle.dt)
    return dynamics_map_context(config.context, None, env.num_envs, getattr(env, "dt", 0.1))


def dynamics_map_context(context: ContextConfig, vehicle: VehicleConfig | None, num_envs: int, dt: float) -> DynamicsMapContext:
    """The provider of ``context`` for ``num_envs`` environments. ``vehicle``: the population whose mean map is the
    prior (and whose components ``basis`` uses); None: a zero prior."""
    maps = population(context, vehicle)
    if maps is None or "basis" not in (context.encoder, context.reconstruction):
        prior = None if maps is None else maps.mean(axis=0)
        return DynamicsMapContext(num_envs, context, make_encoder(context), prior, dt)
    basis = population_basis(maps, context.basis_components, context.accel_scale)
    fit = BasisFit(num_envs, context, basis, dt) if context.reconstruction == "basis" else None
    return DynamicsMapContext(num_envs, context, make_encoder(context, basis), basis.mean, dt, fit)
