"""A residual policy on top of the PID baseline, as vehicle control is often done in practice.

With ``env.vehicle.action: residual_pid`` the agent's action is a bounded correction: the
environment applies ``clip(u_pid + residual_scale · a, -1, 1)``, where ``u_pid`` is the shipped
PID controller's command for the same observation, with its own integrator state per vehicle
(cleared when the vehicle changes). Reward, dynamics samples and comfort figures all see the
command applied, so the learner is unchanged; a zero correction drives exactly as the PID does.
"""

from __future__ import annotations

import numpy as np

from actors.envs import VecStep
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.pid import PIDController


class ResidualPIDEnv:
    """``VehicleVectorEnv`` whose actions are corrections to its PID controller's command."""

    def __init__(self, env: VehicleVectorEnv, residual_scale: float) -> None:
        self.env, self.residual_scale = env, residual_scale
        self.pid = PIDController(env.num_envs, env.config.pid, env.config.dt)
        self.obs = np.zeros((env.num_envs, env.observation_dim), np.float32)

    def __getattr__(self, name: str):  # num_envs, dimensions, bounds, true_params, config ...
        return getattr(self.env, name)

    def reset(self, seed: int) -> np.ndarray:
        self.obs = self.env.reset(seed)
        self.pid.reset()
        return self.obs

    def reset_envs(self, env_ids: np.ndarray) -> np.ndarray:
        rows = self.env.reset_envs(env_ids)
        self.obs[env_ids] = rows
        self.pid.reset(env_ids)
        return rows

    def step(self, actions: np.ndarray) -> VecStep:
        correction = np.asarray(actions, dtype=np.float64).reshape(self.env.num_envs, 1)
        applied = np.clip(self.pid(self.obs) + self.residual_scale * correction, -1.0, 1.0)
        result = self.env.step(applied)  # a NaN correction stays NaN: the env applies no action for it
        done = np.flatnonzero(result.terminated | result.truncated)
        if done.size:
            self.pid.reset(done)  # a new vehicle: a fresh integrator
        self.obs = result.obs.copy()
        return result
