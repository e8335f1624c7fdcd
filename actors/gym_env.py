"""Gymnasium environments behind the ``VectorEnv`` interface, and the dynamics-samples protocol.

An environment feeds the dynamics-map context by returning its step's samples in
``info["dynamics_samples"]``: an array ``[k, 4]`` (k >= 0 samples this step), columns

- ``u``: the command in [-1, 1] (drive > 0, brake < 0) applied during the step;
- ``v``: the measured speed at the step's start, m/s (forward > 0);
- ``a``: the measured acceleration over the step, m/s² (speeding up > 0), gravity included, as an IMU would;
- ``theta``: the measured road grade, rad (uphill > 0): the context removes gravity as ``a + g sin(theta)``.

With gymnasium's same-step autoreset the info of an episode's last step arrives in
``info["final_info"]``: its samples are taken from there. An entry that is not a
number array of shape ``[k, 4]`` counts as one non-finite sample (context fallback ``nan``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from actors.envs import VecStep

SAMPLES_KEY = "dynamics_samples"
DEFAULT_DT = 0.1
"""Seconds per step when the environment does not say (``env.unwrapped.dt``)."""


def samples_of(value: object) -> np.ndarray:
    """One environment's ``info["dynamics_samples"]`` as ``[k, 4]`` float64; malformed → one NaN row."""
    try:
        rows = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return np.full((1, 4), np.nan)
    if rows.ndim == 1 and rows.size == 4:
        return rows.reshape(1, 4)
    if rows.ndim != 2 or rows.shape[1] != 4:
        return np.full((1, 4), np.nan)
    return rows


def step_samples(info: dict, num_envs: int) -> list[np.ndarray | None]:
    """Each environment's samples of this step (``None``: it reported none); a finished one's from ``final_info``."""
    found: list[np.ndarray | None] = [None] * num_envs
    for source in (info, info.get("final_info") or {}):  # final_info last: it holds the step that just ended
        if SAMPLES_KEY not in source:
            continue
        mask = source.get(f"_{SAMPLES_KEY}", np.ones(num_envs, dtype=bool))
        for i in np.flatnonzero(mask):
            found[i] = samples_of(source[SAMPLES_KEY][i])
    return found


def pack_samples(found: list[np.ndarray | None]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``[n, K, 4]`` samples padded to the most any environment reported, and ``present [n, K]``."""
    width = max((len(rows) for rows in found if rows is not None), default=0)
    if width == 0:
        return None, None
    samples = np.zeros((len(found), width, 4))
    present = np.zeros((len(found), width), dtype=bool)
    for i, rows in enumerate(found):
        if rows is not None and len(rows):
            samples[i, : len(rows)], present[i, : len(rows)] = rows, True
    return samples, present


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
        self.dt = float(getattr(self.envs.envs[0].unwrapped, "dt", DEFAULT_DT))
        """Seconds per step: the age of dynamics samples is counted in it."""
        self.reports_samples = False
        """Whether any step so far returned ``info["dynamics_samples"]`` (checked at start for ``dynamics_map``)."""

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
        found = step_samples(info, self.num_envs)
        self.reports_samples = self.reports_samples or any(rows is not None for rows in found)
        samples, present = pack_samples(found)
        return VecStep(
            obs=obs,
            final_obs=final_obs,
            reward=np.asarray(reward, dtype=np.float64),
            terminated=np.asarray(terminated, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
            dynamics_samples=samples,
            dynamics_present=present,
        )
