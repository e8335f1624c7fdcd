"""The residual-PID action: a zero correction drives exactly as the PID; a correction moves the command by scale · a."""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import VehicleConfig
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.pid import PIDController
from actors.vehicle.residual import ResidualEnv

SHORT = VehicleConfig(episode_steps=40)


def test_a_zero_correction_is_the_pid_itself_across_new_vehicles():
    residual = ResidualEnv(VehicleVectorEnv(3, SHORT, seed=9), residual_scale=0.5)
    direct, pid = VehicleVectorEnv(3, SHORT, seed=9), PIDController(3, SHORT.pid, SHORT.dt)
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
    env = ResidualEnv(VehicleVectorEnv(3, SHORT, seed=4), residual_scale=0.5)
    obs = env.reset(4)
    u_pid = PIDController(3, SHORT.pid, SHORT.dt)(obs)[:, 0]
    correction = np.array([[0.4], [-1.0], [1.0]])
    step = env.step(correction)
    applied = np.clip(u_pid + 0.5 * correction[:, 0], -1.0, 1.0)
    assert step.dynamics_samples[:, 0].tolist() == applied.tolist() == step.applied_action[:, 0].tolist()
    assert (env.observation_dim, env.action_low.tolist(), env.true_params.mass.shape) == (34, [-1.0], (3,))


def test_comfort_figures_measure_the_command_applied_not_the_correction():
    from actors.vehicle.evaluation import evaluate_policy

    residual = ResidualEnv(VehicleVectorEnv(3, SHORT, seed=9), residual_scale=0.5)
    zero = evaluate_policy(residual, lambda obs: np.zeros((3, 1)), 3, seed=9)
    pid = PIDController(3, SHORT.pid, SHORT.dt)

    class PIDPolicy:
        def __call__(self, obs):
            return pid(obs)

        def reset(self, ids):
            pid.reset(ids)

    direct = evaluate_policy(VehicleVectorEnv(3, SHORT, seed=9), PIDPolicy(), 3, seed=9)
    assert zero.mean_abs_action_change == direct.mean_abs_action_change > 0.003  # not 0: the PID's command moves
    assert (zero.episode_returns, zero.mean_abs_jerk) == (direct.episode_returns, direct.mean_abs_jerk)


def test_the_pid_under_the_correction_has_the_configured_gains():
    from actors.vehicle.config import PIDGains

    config = VehicleConfig(episode_steps=40, pid=PIDGains(kp=0.6, ki=0.0, lookahead=1))
    residual = ResidualEnv(VehicleVectorEnv(2, config, seed=3), residual_scale=0.5)
    obs = residual.reset(3)
    expected = PIDController(2, PIDGains(kp=0.6, ki=0.0, lookahead=1), config.dt)(obs)[:, 0]
    assert not np.allclose(expected, PIDController(2, SHORT.pid, SHORT.dt)(obs)[:, 0])  # the gains matter here
    assert residual.step(np.zeros((2, 1))).applied_action[:, 0].tolist() == np.clip(expected, -1, 1).tolist()
