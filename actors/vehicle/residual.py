"""A residual policy on top of a classical controller, as vehicle control is often done in practice.

With ``env.vehicle.action: residual_pid`` or ``residual_map`` the agent's action is a bounded correction: the
environment applies ``clip(u_base + residual_scale · a, -1, 1)``, where ``u_base`` is the base controller's command
for the same observation, with its own state per vehicle (cleared when the vehicle changes): the shipped PID
(``residual_pid``), or the map controller inverting the vehicle's acceleration map as a ``MapSource`` gives it
(``residual_map``). Reward, dynamics samples and comfort figures all see the command applied, so the learner is
unchanged; a zero correction drives exactly as the base controller does.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from actors.context.grid import cell_centers
from actors.context.provider import DynamicsMapContext
from actors.envs import VecStep
from actors.vehicle.config import MapControlGains
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.map_control import MapController
from actors.vehicle.pid import PIDController

TRUE_MAP_U = np.linspace(-1.0, 1.0, 81)
TRUE_MAP_V = np.linspace(0.0, 50.0, 101)
"""The grid a vehicle's true map is evaluated on for the map controller (commands and m/s)."""


class BaseController(Protocol):
    def __call__(self, obs: np.ndarray) -> np.ndarray: ...
    def reset(self, env_ids: np.ndarray | None = None) -> None: ...


class MapSource(Protocol):
    """Each vehicle's acceleration map as something knows it: ``maps() -> [n, U, V]`` in m/s² on ``u_grid × v_grid``;
    ``vehicles_changed(env_ids)`` after those environments got new vehicles."""

    u_grid: np.ndarray
    v_grid: np.ndarray

    def maps(self) -> np.ndarray: ...
    def vehicles_changed(self, env_ids: np.ndarray | None) -> None: ...


class TrueMaps:
    """The true map of each current vehicle (``context.mode: oracle``); recomputed when vehicles change."""

    def __init__(self, env: VehicleVectorEnv) -> None:
        self.env, self.u_grid, self.v_grid = env, TRUE_MAP_U, TRUE_MAP_V
        self._maps: np.ndarray | None = None

    def maps(self) -> np.ndarray:
        if self._maps is None:
            self._maps = self.env.true_dynamics_map(self.u_grid, self.v_grid)
        return self._maps

    def vehicles_changed(self, env_ids: np.ndarray | None) -> None:
        self._maps = None  # vehicles change together at the end of an episode: recomputing all costs little more


class EstimatedMaps:
    """The dynamics-map context's current estimate (``DynamicsMapContext.current_maps``: the prior for an
    environment whose vehicle is new or whose estimate is not finite)."""

    def __init__(self, provider: DynamicsMapContext) -> None:
        self.provider = provider
        self.u_grid, self.v_grid = cell_centers(provider.config)

    def maps(self) -> np.ndarray:
        return self.provider.current_maps()

    def vehicles_changed(self, env_ids: np.ndarray | None) -> None:
        pass  # the worker resets the provider's environments itself


class MapFeedForward:
    """``MapController`` on a ``MapSource``'s maps, as a ``BaseController``."""

    def __init__(self, num_envs: int, source: MapSource, gains: MapControlGains, dt: float) -> None:
        self.source, self.controller = source, MapController(num_envs, gains, dt)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.controller(obs, self.source.maps(), self.source.u_grid, self.source.v_grid)

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        self.controller.reset(env_ids)
        self.source.vehicles_changed(env_ids)


class ResidualEnv:
    """``VehicleVectorEnv`` whose actions are corrections to a base controller's command (default: its PID)."""

    def __init__(self, env: VehicleVectorEnv, residual_scale: float, base: BaseController | None = None) -> None:
        self.env, self.residual_scale = env, residual_scale
        self.base = base or PIDController(env.num_envs, env.config.pid, env.config.dt)
        self.obs = np.zeros((env.num_envs, env.observation_dim), np.float32)

    def __getattr__(self, name: str):  # num_envs, dimensions, bounds, true_params, config ...
        return getattr(self.env, name)

    def reset(self, seed: int) -> np.ndarray:
        self.obs = self.env.reset(seed)
        self.base.reset()
        return self.obs

    def reset_envs(self, env_ids: np.ndarray) -> np.ndarray:
        rows = self.env.reset_envs(env_ids)
        self.obs[env_ids] = rows
        self.base.reset(env_ids)
        return rows

    def step(self, actions: np.ndarray) -> VecStep:
        correction = np.asarray(actions, dtype=np.float64).reshape(self.env.num_envs, 1)
        applied = np.clip(self.base(self.obs) + self.residual_scale * correction, -1.0, 1.0)
        result = self.env.step(applied)  # a NaN correction stays NaN: the env applies no action for it
        done = np.flatnonzero(result.terminated | result.truncated)
        if done.size:
            self.base.reset(done)  # a new vehicle: a fresh integrator (and, for the map controller, its map)
        self.obs = result.obs.copy()
        return result
