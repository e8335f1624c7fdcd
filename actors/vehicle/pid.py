"""A vectorized PID speed controller: the shipped baseline for the vehicle task.

It reads only the observation (measured speed, last action, pitch, preview)
and knows nothing of the vehicle it drives. The error is taken against the
reference ``lookahead`` steps ahead (the motor and the brake lag behind the
command); a feed-forward term follows the reference slope and the pitch; the
integral has conditional anti-windup; with a stop ahead and the car slow it
brakes firmly enough to engage the standstill hold.
"""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import PIDGains


class PIDController:
    """``__call__(obs [n, obs_dim]) -> actions [n, 1]``; ``reset(env_ids)`` clears finished environments."""

    def __init__(self, num_envs: int, gains: PIDGains | None = None, dt: float = 0.1) -> None:
        self.gains, self.dt = gains or PIDGains(), dt
        self.integral = np.zeros(num_envs)
        self.prev_error = np.zeros(num_envs)
        self.v_filt = np.zeros(num_envs)
        self.fresh = np.ones(num_envs, dtype=bool)

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        ids = slice(None) if env_ids is None else np.asarray(env_ids)
        self.integral[ids] = 0.0
        self.prev_error[ids] = 0.0
        self.fresh[ids] = True

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        g = self.gains
        obs = np.asarray(obs, dtype=np.float64)
        v_meas, pitch, preview = obs[:, 0], obs[:, 3], obs[:, 4:]
        self.v_filt = np.where(self.fresh, v_meas, g.noise_filter * v_meas + (1 - g.noise_filter) * self.v_filt)
        ahead = min(g.lookahead, preview.shape[1] - 2)
        target = preview[:, ahead]
        error = target - self.v_filt
        ref_accel = (preview[:, ahead + 1] - preview[:, ahead]) / self.dt
        derivative = np.where(self.fresh, 0.0, (error - self.prev_error) / self.dt)
        raw = g.kp * error + g.kd * derivative + g.k_accel * ref_accel + g.k_pitch * np.sin(pitch)
        u = raw + g.ki * self.integral
        saturated = ((u >= 1.0) & (error > 0)) | ((u <= -1.0) & (error < 0))
        self.integral = np.where(saturated, self.integral, self.integral + error * self.dt)
        u = raw + g.ki * self.integral
        stop = (preview[:, 0] <= 0.0) & (target <= 0.0) & (self.v_filt < g.hold_speed)
        u = np.where(stop, np.minimum(u, g.hold_brake), u)
        self.integral = np.where(stop, np.minimum(self.integral, 0.0), self.integral)
        self.prev_error = error
        self.fresh[:] = False
        return np.clip(u, -1.0, 1.0)[:, None].astype(np.float32)
