"""``VehicleVectorEnv``: ``num_envs`` randomized vehicles tracking reference speeds, stepped with numpy.

Observation (``4 + preview_steps`` values, float32):
``[v_meas, v_meas_prev, u_prev, θ_meas, v_ref[t], …, v_ref[t + preview − 1]]``.
Action: ``u ∈ [−1, 1]`` (``[n, 1]``); u > 0 drives, u < 0 brakes.

Each episode lasts ``episode_steps`` control steps and ends by truncation
only; a finished environment draws a new vehicle, reference and road from the
environment's generator in the same step (``VecStep.obs`` holds the reset
observation, ``VecStep.final_obs`` the true last one).
"""

from __future__ import annotations

import numpy as np

from actors.envs import VecStep
from actors.vehicle.config import VehicleConfig
from actors.vehicle.dynamics_map import dynamics_map
from actors.vehicle.params import VehicleParams, sample_vehicles
from actors.vehicle.plant import PlantCoeffs, PlantState, control_step, plant_coeffs
from actors.vehicle.profiles import generate_reference, grade_at, grade_grid
from actors.vehicle.reward import reward


def delay_steps(delay: np.ndarray | float, dt: float) -> np.ndarray:
    """Actuation delays in seconds → whole control steps (nearest)."""
    return np.rint(np.asarray(delay) / dt).astype(np.int64)


class VehicleVectorEnv:
    """The vehicle speed-tracking task for ``num_envs`` vehicles (implements ``actors.envs.VectorEnv``)."""

    action_dim = 1

    def __init__(self, num_envs: int, config: VehicleConfig | None = None, seed: int | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.config = config or VehicleConfig()
        self.num_envs = num_envs
        self.observation_dim = self.config.observation_dim
        self.action_low = np.array([-1.0], dtype=np.float32)
        self.action_high = np.array([1.0], dtype=np.float32)
        self._preview = np.arange(self.config.preview_steps)
        self._rows = np.arange(num_envs)
        self._max_delay = int(delay_steps(self.config.randomization.actuation_delay[1], self.config.dt))
        self.reset(seed)

    # -- episode bookkeeping -------------------------------------------------

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reseed the generator with ``seed`` and draw every vehicle anew; returns ``[n, obs_dim]``."""
        self.rng = np.random.default_rng(seed)
        ids = self._rows
        self._params: VehicleParams | None = None
        self._fresh(ids)
        return self._observe(ids)

    def reset_envs(self, env_ids: np.ndarray) -> np.ndarray:
        """New vehicles for ``env_ids`` only, from the environment's generator; returns their observation rows."""
        ids = np.asarray(env_ids, dtype=np.int64)
        self._fresh(ids)
        return self._observe(ids)

    def _fresh(self, ids: np.ndarray) -> None:
        """New vehicles, references, roads and rest states for ``ids``."""
        cfg = self.config
        k = ids.size
        params = sample_vehicles(self.rng, cfg.randomization, k)
        coeffs = plant_coeffs(params, cfg.dt / cfg.substeps, cfg.plant)
        ref = generate_reference(
            self.rng, params, cfg.reference, cfg.grade.clip, cfg.episode_steps + cfg.preview_steps, cfg.dt
        )
        grid = grade_grid(self.rng, cfg.grade, k)
        if self._params is None:  # first reset: adopt the arrays
            self._params, self._coeffs, self._ref, self._grid = params, coeffs, ref, grid
            self._state = PlantState.at_rest(k)
            self._t = np.zeros(k, dtype=np.int64)
            self._u_prev, self._a_prev = np.zeros(k), np.zeros(k)
            self._v_meas, self._theta, self._theta_meas = np.zeros(k), np.zeros(k), np.zeros(k)
            self._commands = np.zeros((k, self._max_delay + 1))  # [:, j]: the command given j steps ago
        else:
            self._params.put(ids, params)
            self._coeffs.put(ids, coeffs)
            self._ref[ids], self._grid[ids] = ref, grid
            self._state.put(ids, PlantState.at_rest(k))
            self._t[ids] = 0
            self._u_prev[ids], self._a_prev[ids] = 0.0, 0.0
            self._commands[ids] = 0.0
        self._delay = delay_steps(self._params.actuation_delay, cfg.dt)
        self._theta[ids] = self._grid[ids, 0]
        self._v_meas[ids] = self._measure_speed(ids)
        self._theta_meas[ids] = self._theta[ids] + cfg.grade.pitch_noise * self.rng.standard_normal(k)

    def _measure_speed(self, ids: np.ndarray) -> np.ndarray:
        return self._state.v[ids] + self._params.speed_noise[ids] * self.rng.standard_normal(ids.size)

    def _observe(self, ids: np.ndarray, v_meas_prev: np.ndarray | None = None) -> np.ndarray:
        """Observation rows for ``ids`` from the stored measurements (``v_meas_prev`` defaults to ``v_meas``)."""
        obs = np.empty((ids.size, self.observation_dim), dtype=np.float32)
        obs[:, 0] = self._v_meas[ids]
        obs[:, 1] = self._v_meas[ids] if v_meas_prev is None else v_meas_prev
        obs[:, 2] = self._u_prev[ids]
        obs[:, 3] = self._theta_meas[ids]
        width = self._ref.shape[1]
        obs[:, 4:] = self._ref.reshape(-1)[(ids * width + self._t[ids])[:, None] + self._preview]
        return obs

    # -- stepping --------------------------------------------------------------

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every vehicle by one control step with ``actions`` ``[n, 1]`` (clipped to [−1, 1])."""
        cfg = self.config
        u = np.asarray(actions, dtype=np.float64).reshape(self.num_envs)
        u = np.clip(np.where(np.isnan(u), 0.0, u), -1.0, 1.0)  # a NaN action is no action
        applied = u[:, None].copy()  # u becomes u_prev, which a new vehicle's reset zeroes in place
        actuated = self._actuate(u)
        st = self._state
        v0 = st.v
        samples = np.empty((self.num_envs, 4))
        samples[:, 0], samples[:, 1], samples[:, 3] = actuated, self._v_meas, self._theta_meas
        control_step(st, actuated, np.sin(self._theta), self._coeffs, cfg.dt, cfg.substeps, cfg.plant)
        accel = (st.v - v0) * (1.0 / cfg.dt)
        samples[:, 2] = accel
        self._t += 1
        v_ref = self._ref[self._rows, self._t]
        jerk = (accel - self._a_prev) * (1.0 / cfg.dt)
        r = reward(st.v, v_ref, u, self._u_prev, st.fb * self._coeffs.wheel_radius, jerk, cfg.reward)
        v_meas_prev = self._v_meas
        self._v_meas = self._measure_speed(self._rows)
        self._theta = grade_at(self._grid, st.s, cfg.grade.spacing)
        self._theta_meas = self._theta + cfg.grade.pitch_noise * self.rng.standard_normal(self.num_envs)
        self._u_prev, self._a_prev = u, accel
        final_obs = self._observe(self._rows, v_meas_prev)
        speed_error = np.abs(st.v - v_ref)
        truncated = self._t >= cfg.episode_steps
        obs = final_obs
        if truncated.any():
            done = np.flatnonzero(truncated)
            self._fresh(done)
            obs = final_obs.copy()
            obs[done] = self._observe(done)
        return VecStep(
            obs=obs,
            final_obs=final_obs,
            reward=r,
            terminated=np.zeros(self.num_envs, dtype=bool),
            truncated=truncated,
            dynamics_samples=samples,
            speed_error=speed_error,
            applied_action=applied,
        )

    def _actuate(self, u: np.ndarray) -> np.ndarray:
        """The command the plant applies now: ``u`` itself, or with an actuation delay the one given that many steps
        ago (zero before the episode's first). The dynamics samples carry it: the motor controller reports the
        torque it applies."""
        if self._max_delay == 0:
            return u
        self._commands[:, 1:] = self._commands[:, :-1]
        self._commands[:, 0] = u
        return self._commands[self._rows, self._delay]

    # -- information for the dynamics map and diagnostics ------------------------

    @property
    def true_params(self) -> VehicleParams:
        """The drawn parameters of the current vehicles (a copy; each field ``[n]``)."""
        return self._params.take(self._rows)

    @property
    def plant_coeffs(self) -> PlantCoeffs:
        """Derived per-vehicle constants of the plant (read-only use)."""
        return self._coeffs

    @property
    def speed(self) -> np.ndarray:
        """True speeds ``[n]`` (for tests and diagnostics; never part of the observation)."""
        return self._state.v.copy()

    @property
    def reference(self) -> np.ndarray:
        """The current episodes' reference profiles ``[n, episode_steps + preview_steps]`` (a copy)."""
        return self._ref.copy()

    @property
    def elapsed_steps(self) -> np.ndarray:
        """Control steps taken in each current episode ``[n]``."""
        return self._t.copy()

    def true_dynamics_map(self, u_grid: np.ndarray, v_grid: np.ndarray) -> np.ndarray:
        """``[n, len(u_grid), len(v_grid)]`` flat-ground steady-state acceleration of the current vehicles.

        Exact definition in ``actors.vehicle.dynamics_map`` (steady current and
        brake, θ = 0; at v = 0 the brake acts as static friction, so a brake
        stronger than the creep gives 0). Never shown to the policy.
        """
        return dynamics_map(self._params, u_grid, v_grid, self.config.plant)
