"""evaluate_policy on a scripted fake environment, figures by hand."""

from __future__ import annotations

import numpy as np
import pytest

from actors.envs import VecStep
from actors.vehicle.evaluation import evaluate_policy, step_accel


class Scripted:
    """Two envs; env 0 ends every 2 steps, env 1 every 4. Reward −(env+1)·t, error 0.5, accel = t (per env)."""

    num_envs, observation_dim, action_dim = 2, 1, 1
    action_low, action_high = np.array([-1.0]), np.array([1.0])

    def reset(self, seed: int) -> np.ndarray:
        self.t = np.zeros(2)
        return np.zeros((2, 1), dtype=np.float32)

    def step(self, actions: np.ndarray) -> VecStep:
        self.t += 1
        done = self.t >= np.array([2, 4])
        reward = -np.array([1.0, 2.0]) * self.t
        samples = np.zeros((2, 4))
        samples[:, 2] = self.t
        self.t[done] = 0
        obs = np.zeros((2, 1), dtype=np.float32)
        return VecStep(obs, obs, reward, np.zeros(2, bool), done, samples, np.full(2, 0.5))


def test_report_by_hand():
    calls = []
    policy = lambda obs: np.array([[0.5], [-0.5]]) * (1 if len(calls.append(0) or calls) % 2 else -1)  # noqa: E731
    report = evaluate_policy(Scripted(), policy, episodes=3, dt=0.1)
    # finishing order: env 0 at step 2 (return −3), env 0 at step 4 (−3), env 1 at step 4 (−2·10 = −20)
    assert report.episodes == 3
    assert report.mean_return == pytest.approx((-3 - 3 - 20) / 3)
    assert report.std_return == pytest.approx(np.std([-3, -3, -20]))
    assert report.mean_abs_speed_error == pytest.approx(0.5)
    # jerk: accel 1, 2 per env-0 episode -> one change of 1 over 2 steps -> 10/2 = 5 m/s³;
    # env 1: 1,2,3,4 -> 3 changes of 1 over 4 steps -> 30/4 = 7.5
    assert report.mean_abs_jerk == pytest.approx((5 + 5 + 7.5) / 3)
    # actions flip sign every step: |du| = 1.0 after the first step of an episode
    assert report.mean_abs_action_change == pytest.approx((0.5 + 0.5 + 0.75) / 3)


def test_step_accel_reads_one_sample_a_step_or_the_first_reported_one():
    obs = np.zeros((2, 1), np.float32)
    flat = VecStep(obs, obs, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.array([[0, 0, 1.5, 0], [0, 0, -2.0, 0]]))
    assert step_accel(flat, 2).tolist() == [1.5, -2.0]
    samples = np.zeros((2, 2, 4))
    samples[:, 0, 2], samples[:, 1, 2] = [0.25, 9.0], [7.0, 7.0]
    packed = VecStep(obs, obs, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), samples,
                     dynamics_present=np.array([[True, True], [False, False]]))  # fmt: skip
    accel = step_accel(packed, 2)
    assert accel[0] == 0.25 and np.isnan(accel[1])
    assert np.isnan(step_accel(VecStep(obs, obs, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool)), 2)).all()
