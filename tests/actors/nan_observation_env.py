"""Fault injection: Pendulum-v1 that returns NaN/Inf observations at known steps (``env.id`` of some tests).

Used as ``tests.actors.nan_observation_env:NaNObservationPendulum``. Every instance
counts its steps across episodes and corrupts the observation returned by its
``INJECT_AT`` steps; its second ``reset`` returns a NaN observation too. It
records every action it is stepped with (class-wide) and refuses a non-finite one.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np

INJECT_AT = {7: np.nan, 30: np.inf, 31: np.nan, 150: -np.inf}
"""Step count of an instance → the value written into its observation's first element."""


class NonFiniteActionError(AssertionError):
    """The environment was stepped with a NaN or an infinity."""


class NaNObservationPendulum(gym.Wrapper):
    actions: ClassVar[list[np.ndarray]] = []
    injected: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__(gym.make("Pendulum-v1"))
        self.steps = 0
        self.resets = 0

    @classmethod
    def forget(cls) -> None:
        cls.actions, cls.injected = [], 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.resets += 1
        if self.resets == 2:  # a reset that itself goes wrong: the worker must reset again
            obs = obs.copy()
            obs[0] = np.nan
        return obs, info

    def step(self, action):
        action = np.asarray(action)
        type(self).actions.append(action.copy())
        if not np.isfinite(action).all():
            raise NonFiniteActionError(f"stepped with {action}")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps in INJECT_AT:
            obs = obs.copy()
            obs[0] = INJECT_AT[self.steps]
            type(self).injected += 1
        return obs, reward, terminated, truncated, info
