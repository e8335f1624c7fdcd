"""Gymnasium environments behind the ``VectorEnv`` interface."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from actors.envs import VecStep


def env_factory(env_id: str, kwargs: dict[str, Any]) -> Callable[[], gym.Env]:
    """``module:Class`` naming a gymnasium.Env subclass, else anything ``gymnasium.make`` accepts."""
    module_name, _, attribute = env_id.partition(":")
    if attribute.isidentifier():
        try:
            candidate = getattr(importlib.import_module(module_name), attribute, None)
        except ImportError as err:
            raise ValueError(f"cannot import module {module_name!r}: {err}") from None
        if isinstance(candidate, type) and issubclass(candidate, gym.Env):
            return lambda: candidate(**kwargs)
    return lambda: gym.make(env_id, **kwargs)


class GymVectorEnv:
    """``num_envs`` copies of a gymnasium environment, reset in the same step they finish.

    Observations are flattened to float32 vectors; actions come in the
    environment's own units (the worker rescales the policy's ``[-1, 1]``).
    """

    def __init__(self, env_id: str, num_envs: int, kwargs: dict[str, Any] | None = None) -> None:
        make = env_factory(env_id, kwargs or {})
        self.envs = SyncVectorEnv([make for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
        obs_space = self.envs.single_observation_space
        act_space = self.envs.single_action_space
        if not isinstance(act_space, gym.spaces.Box):
            raise ValueError(f"SAC needs a continuous (Box) action space; {env_id} has {act_space}")
        self.num_envs = num_envs
        self.observation_dim = int(np.prod(obs_space.shape))
        self.action_dim = int(np.prod(act_space.shape))
        self.action_low = act_space.low.reshape(-1).astype(np.float32)
        self.action_high = act_space.high.reshape(-1).astype(np.float32)
        self._action_shape = act_space.shape

    def _flat(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(self.num_envs, self.observation_dim)

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self.envs.reset(seed=seed)
        return self._flat(obs)

    def reset_envs(self, env_ids: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[env_ids] = True
        obs, _ = self.envs.reset(options={"reset_mask": mask})
        return self._flat(obs)[env_ids]

    def step(self, actions: np.ndarray) -> VecStep:
        obs, reward, terminated, truncated, info = self.envs.step(actions.reshape(self.num_envs, *self._action_shape))
        obs = self._flat(obs)
        final_obs = obs.copy()
        if "_final_obs" in info:
            for i in np.flatnonzero(info["_final_obs"]):
                final_obs[i] = np.asarray(info["final_obs"][i], dtype=np.float32).reshape(-1)
        return VecStep(
            obs=obs,
            final_obs=final_obs,
            reward=np.asarray(reward, dtype=np.float64),
            terminated=np.asarray(terminated, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
        )
