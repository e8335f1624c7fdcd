"""Small builders shared by learner tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from learner.config import LearnerConfig, ReplayConfig
from learner.learner import Dimensions, Learner
from learner.types import Fragment

DIMS = Dimensions(obs_dim=3, context_dim=2, action_dim=1)
SMALL = LearnerConfig(hidden_sizes=(16, 16), lr=1e-3, gamma=0.9, batch_size=8, reward_scale=1.0, block_updates=5)


def make_learner(config: LearnerConfig = SMALL, capacity: int = 1000, seed: int = 0) -> Learner:
    return Learner(DIMS, config, ReplayConfig(capacity=capacity), torch.device("cpu"), seed)


def random_batch(size: int = 8, seed: int = 0, reward_scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(size, DIMS.obs_dim, generator=g),
        "context": torch.randn(size, DIMS.context_dim, generator=g),
        "action": torch.rand(size, DIMS.action_dim, generator=g) * 2 - 1,
        "reward": torch.randn(size, generator=g) * reward_scale,
        "next_obs": torch.randn(size, DIMS.obs_dim, generator=g),
        "next_context": torch.randn(size, DIMS.context_dim, generator=g),
        "terminated": (torch.rand(size, generator=g) < 0.2).float(),
    }


def make_fragment(steps: int = 4, envs: int = 2, seq: int = 1, actor_id: int = 0, incarnation: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal((steps, envs, *shape)).astype(np.float32)

    return Fragment(
        obs=arr(DIMS.obs_dim), context=arr(DIMS.context_dim), action=np.tanh(arr(DIMS.action_dim)),
        reward=arr(), next_obs=arr(DIMS.obs_dim), next_context=arr(DIMS.context_dim),
        terminated=np.zeros((steps, envs), bool), truncated=np.zeros((steps, envs), bool),
        valid=np.ones((steps, envs), bool), actor_id=actor_id, incarnation=incarnation, seq=seq, weights_version=0,
    )  # fmt: skip


def with_config(**changes) -> LearnerConfig:
    return dataclasses.replace(SMALL, **changes)
