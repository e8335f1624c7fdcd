"""A gymnasium environment that speaks the dynamics-samples protocol in every way it allows (``env.id`` of tests).

``tests.actors.samples_env:SamplesEnv``: episodes of 4 steps; step t of an episode (1-based) reports ``t % 3``
samples ``[t, 10 + i, 0.5, 0.0]`` (i = 0, 1, ...), so 0, 1 or 2 of them; with ``malformed=True`` step 2 reports
a string instead. It has a ``dt`` of 0.05 s.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class SamplesEnv(gym.Env):
    dt = 0.05

    def __init__(self, malformed: bool = False) -> None:
        self.malformed = malformed
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        samples: Any = np.array([[self.t, 10.0 + i, 0.5, 0.0] for i in range(self.t % 3)]).reshape(-1, 4)
        if self.malformed and self.t == 2:
            samples = "not a sample"
        return np.zeros(2, np.float32), 0.0, False, self.t == 4, {"dynamics_samples": samples}
