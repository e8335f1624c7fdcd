"""The composition root: the only place that constructs collaborators from config."""

from __future__ import annotations

import dataclasses

from actors.context.base import ContextProvider, NoContext
from actors.envs import VectorEnv
from actors.gym_env import GymVectorEnv
from actors.policy import PolicyCopy
from actors.worker import RolloutWorker
from cluster.config import Config
from learner.learner import Dimensions, Learner, resolve_device


def make_env(config: Config, seed: int) -> VectorEnv:
    env = config.env
    if env.kind == "vehicle":
        from actors.vehicle import VehicleVectorEnv

        return VehicleVectorEnv(env.num_envs, env.vehicle, seed=seed)
    return GymVectorEnv(env.id, env.num_envs, env.kwargs)


def make_context_provider(config: Config, env: VectorEnv) -> ContextProvider:
    context = getattr(config, "context", None)
    if context is None or context.mode == "none":
        return NoContext(env.num_envs)
    from cluster.context_factory import make_dynamics_map_context

    return make_dynamics_map_context(config, env)


def actor_seed(config: Config, actor_id: int, incarnation: int) -> int:
    """Distinct, reproducible seeds per actor and incarnation."""
    return config.train.seed * 1_000_003 + actor_id * 10_007 + incarnation * 101 + 1


def make_worker(config: Config, actor_id: int = 0, incarnation: int = 0) -> RolloutWorker:
    seed = actor_seed(config, actor_id, incarnation)
    env = make_env(config, seed)
    provider = make_context_provider(config, env)
    policy = PolicyCopy(env.observation_dim + provider.context_dim, env.action_dim, config.learner.hidden_sizes, seed)
    return RolloutWorker(env, provider, policy, actor_id=actor_id, incarnation=incarnation, seed=seed)


def probe_dimensions(config: Config) -> Dimensions:
    """Observation, context and action sizes, read off one environment."""
    single = dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=1))
    env = make_env(single, seed=0)
    provider = make_context_provider(config, env)
    return Dimensions(env.observation_dim, provider.context_dim, env.action_dim)


def make_learner(config: Config, dims: Dimensions) -> Learner:
    device = resolve_device(config.learner.device)
    return Learner(dims, config.learner, config.replay, device, config.train.seed)
