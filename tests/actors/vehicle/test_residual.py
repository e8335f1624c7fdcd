"""The residual-PID action: a zero correction drives exactly as the PID; a correction moves the command by scale · a."""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import VehicleConfig
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.pid import PIDController, PIDGains
from actors.vehicle.residual import ResidualPIDEnv

SHORT = VehicleConfig(episode_steps=40)


def test_a_zero_correction_is_the_pid_itself_across_new_vehicles():
    residual = ResidualPIDEnv(VehicleVectorEnv(3, SHORT, seed=9), residual_scale=0.5)
    direct, pid = VehicleVectorEnv(3, SHORT, seed=9), PIDController(3, PIDGains(dt=SHORT.dt))
    obs_r, obs_d = residual.reset(9), direct.reset(9)
    assert np.array_equal(obs_r, obs_d)
    for t in range(100):  # two new vehicles per env on the way (episodes of 40 steps)
        a = residual.step(np.zeros((3, 1)))
        b = direct.step(pid(obs_d))
        if b.truncated.any():
            pid.reset(np.flatnonzero(b.truncated))
        assert np.array_equal(a.reward, b.reward) and np.array_equal(a.dynamics_samples, b.dynamics_samples), t
        obs_d = b.obs
    assert np.array_equal(residual.obs, obs_d)


def test_a_correction_moves_the_command_by_scale_times_a_within_the_limits():
    env = ResidualPIDEnv(VehicleVectorEnv(3, SHORT, seed=4), residual_scale=0.5)
    obs = env.reset(4)
    u_pid = PIDController(3, PIDGains(dt=SHORT.dt))(obs)[:, 0]
    correction = np.array([[0.4], [-1.0], [1.0]])
    step = env.step(correction)
    assert step.dynamics_samples[:, 0].tolist() == np.clip(u_pid + 0.5 * correction[:, 0], -1.0, 1.0).tolist()
    assert (env.observation_dim, env.action_low.tolist(), env.true_params.mass.shape) == (34, [-1.0], (3,))
