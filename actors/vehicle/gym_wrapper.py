"""One vehicle as a gymnasium environment, registered as ``dmsac/Vehicle-v0``.

``gymnasium.make("dmsac/Vehicle-v0", config=VehicleConfig(...))`` after
``import actors.vehicle``. The episode ends by truncation after
``episode_steps`` steps; the returned observation is then the true last one
and the next episode starts with ``reset()``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from actors.vehicle.config import VehicleConfig
from actors.vehicle.env import VehicleVectorEnv

GYM_ID = "dmsac/Vehicle-v0"


class VehicleGymEnv(gym.Env):
    """A single randomized vehicle; a new vehicle, reference and road at every ``reset``."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: VehicleConfig | None = None) -> None:
        self.config = config or VehicleConfig()
        self._env = VehicleVectorEnv(1, self.config, seed=0)
        dim = self._env.observation_dim
        # speeds in m/s, pitch in rad: far inside ±1000 for every vehicle the ranges allow
        self.observation_space = gym.spaces.Box(-1000.0, 1000.0, shape=(dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        inner_seed = int(self.np_random.integers(2**63 - 1))
        obs = self._env.reset(inner_seed)
        return obs[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        result = self._env.step(np.asarray(action, dtype=np.float64).reshape(1, 1))
        # the dynamics-samples protocol (actors.gym_env): this step's one sample (u, v, a, theta)
        info = {"speed_error": float(result.speed_error[0]), "dynamics_samples": result.dynamics_samples[:1].copy()}
        return result.final_obs[0], float(result.reward[0]), False, bool(result.truncated[0]), info

    @property
    def vector_env(self) -> VehicleVectorEnv:
        """The one-vehicle vector environment underneath (true parameters, dynamics map)."""
        return self._env


def register_gym_env() -> None:
    """Register ``dmsac/Vehicle-v0`` once (importing ``actors.vehicle`` does this)."""
    if GYM_ID not in gym.registry:
        gym.register(id=GYM_ID, entry_point="actors.vehicle.gym_wrapper:VehicleGymEnv")
