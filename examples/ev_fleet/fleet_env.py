"""A small fleet of electric cars whose motors differ: a user's own gymnasium environment for dmsac.

Each episode drives a new car along a random speed profile. The cars differ in one known
parameter, the motor gain ``k`` (m/s² of drive acceleration at full command and low speed,
uniform in ``[1.5, 4.5]``); mass-normalized drag, brakes and the grade process are shared.
The policy does not see ``k``: it has to learn it from how the car responds, and the
dynamics-map context estimates exactly that response, a(u, v), from the samples this
environment reports in ``info["dynamics_samples"]`` (the protocol in dmsac's README,
"Your own environment").
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

GRAVITY = 9.80665
MOTOR_GAIN = (1.5, 4.5)
"""Range of the motor gain k, m/s² at full drive and standstill."""
TOP_SPEED = 35.0
"""Drive acceleration fades linearly to zero at this speed (m/s)."""
BRAKE_DECEL = 6.0
DRAG = 0.0012
"""Aerodynamic drag per unit mass, 1/m: ``DRAG · v²`` m/s²."""
SPEED_SCALE = 20.0


class FleetCar(gym.Env):
    """Track a reference speed with one command ``u`` in [-1, 1] (drive > 0, brake < 0)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, episode_steps: int = 300, dt: float = 0.1, grade_std: float = 0.02) -> None:
        self.episode_steps, self.dt, self.grade_std = episode_steps, dt, grade_std
        # v / 20, reference / 20, its error / 5, previous command, measured grade
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(5,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        self.motor_gain = float(rng.uniform(*MOTOR_GAIN))
        self.v, self.u, self.t, self.grade = 0.0, 0.0, 0, 0.0
        self.reference = float(rng.uniform(5.0, 25.0))
        return self._observation(), {"motor_gain": self.motor_gain}

    def accel(self, u: float, v: float, grade: float) -> float:
        """The car's true acceleration (m/s²) at command ``u``, speed ``v`` and ``grade`` rad."""
        drive = self.motor_gain * max(u, 0.0) * max(0.0, 1.0 - v / TOP_SPEED)
        brake = BRAKE_DECEL * min(u, 0.0) if v > 0.0 else 0.0
        return drive + brake - DRAG * v * v - GRAVITY * np.sin(grade)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        rng = self.np_random
        u = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        v_start, grade = self.v, self.grade
        self.v = max(0.0, v_start + self.accel(u, v_start, grade) * self.dt)
        measured = (self.v - v_start) / self.dt + rng.normal(0.0, 0.05)  # an accelerometer along the road
        sample = [u, v_start + rng.normal(0.0, 0.05), measured, grade + rng.normal(0.0, 0.002)]
        self.grade = float(np.clip(0.98 * grade + rng.normal(0.0, self.grade_std * 0.2), -0.08, 0.08))
        if rng.random() < 0.01:
            self.reference = float(rng.uniform(0.0, 25.0))
        reward = -((self.v - self.reference) ** 2) / 10.0 - 0.5 * abs(u - self.u)
        self.u, self.t = u, self.t + 1
        info = {"dynamics_samples": np.array([sample]), "motor_gain": self.motor_gain}
        return self._observation(), reward, False, self.t >= self.episode_steps, info

    def _observation(self) -> np.ndarray:
        error = (self.reference - self.v) / 5.0
        return np.array([self.v / SPEED_SCALE, self.reference / SPEED_SCALE, error, self.u, self.grade], np.float32)
