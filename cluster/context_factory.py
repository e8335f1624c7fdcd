"""Builds the dynamics-map context provider of a worker from config (part of the composition root)."""

from __future__ import annotations

import numpy as np

from actors.context.config import ContextConfig
from actors.context.encoders import CnnEncoder, Encoder, PooledEncoder
from actors.context.grid import cell_centers
from actors.context.provider import DynamicsMapContext
from actors.envs import VectorEnv
from cluster.config import Config


def make_encoder(context: ContextConfig) -> Encoder:
    # ContextConfig already refused a cnn encoder without a checkpoint path.
    if context.encoder == "pooled":
        return PooledEncoder(context)
    return CnnEncoder(context, context.encoder_checkpoint)


def prior_map(config: Config) -> np.ndarray | None:
    """The population-mean map where the environment has an oracle (the vehicle env); else no prior (zeros)."""
    if config.env.kind != "vehicle":
        return None
    from actors.vehicle.dynamics_map import population_mean_map

    u, v = cell_centers(config.context)
    return population_mean_map(
        config.env.vehicle, u, v, num_vehicles=config.context.prior_vehicles, seed=config.context.prior_seed
    )


def make_dynamics_map_context(config: Config, env: VectorEnv) -> DynamicsMapContext:
    dt = config.env.vehicle.dt if config.env.kind == "vehicle" else getattr(env, "dt", 0.1)
    return DynamicsMapContext(env.num_envs, config.context, make_encoder(config.context), prior_map(config), dt)
