"""The rollout worker on real gymnasium environments and on a fake one that misbehaves."""

import numpy as np
import pytest

from actors.context.base import NoContext
from actors.envs import VecStep
from actors.gym_env import GymVectorEnv
from actors.policy import PolicyCopy
from actors.worker import NonFiniteResetError, RolloutWorker
from learner.weights import make_versioned


def pendulum_worker(num_envs: int = 2, seed: int = 0) -> RolloutWorker:
    env = GymVectorEnv("Pendulum-v1", num_envs)
    policy = PolicyCopy(env.observation_dim, env.action_dim, (16,), seed=seed)
    return RolloutWorker(env, NoContext(num_envs), policy, actor_id=3, incarnation=1, seed=seed)


def test_fragment_shapes_provenance_and_action_range():
    worker = pendulum_worker()
    fragment = worker.rollout(10)
    assert fragment.obs.shape == (10, 2, 3) and fragment.next_obs.shape == (10, 2, 3)
    assert fragment.context.shape == (10, 2, 0) and fragment.action.shape == (10, 2, 1)
    assert (fragment.actor_id, fragment.incarnation, fragment.seq) == (3, 1, 1)
    assert worker.rollout(1).seq == 2
    assert np.abs(fragment.action).max() <= 1.0
    # consecutive observations chain: next_obs(t) == obs(t+1) while no episode ends
    assert np.array_equal(fragment.next_obs[:-1], fragment.obs[1:])


def test_time_limit_is_truncation_with_the_true_final_observation():
    worker = pendulum_worker()
    fragment = worker.rollout(200)  # Pendulum-v1 truncates at 200 steps
    assert not fragment.terminated.any()
    assert fragment.truncated[-1].all() and not fragment.truncated[:-1].any()
    # the stored next_obs is the final state (|cos, sin| = 1 and |theta_dot| <= 8), not the reset one
    final = fragment.next_obs[-1]
    assert np.allclose(final[:, 0] ** 2 + final[:, 1] ** 2, 1.0, atol=1e-5)
    assert not np.allclose(final, worker.obs)
    assert [e.length for e in fragment.episodes] == [200, 200]
    assert fragment.episodes[0].episode_return == pytest.approx(float(fragment.reward[:, 0].sum()), rel=1e-6)


def test_rewards_travel_unscaled_and_random_actions_cover_the_range():
    worker = pendulum_worker(num_envs=4)
    fragment = worker.rollout(50, random_actions=True)
    assert fragment.reward.min() < -1.0  # Pendulum's raw cost, not scaled
    assert fragment.action.min() < -0.9 and fragment.action.max() > 0.9


def test_set_weights_swaps_only_to_newer_versions():
    worker = pendulum_worker()
    source = PolicyCopy(3, 1, (16,), seed=99)
    worker.set_weights(make_versioned(5, source.network.state_dict()))
    assert worker.weights_version == 5
    worker.set_weights(make_versioned(4, PolicyCopy(3, 1, (16,), seed=1).network.state_dict()))
    assert worker.weights_version == 5
    obs = np.zeros((2, 3), np.float32)
    empty = np.zeros((2, 0), np.float32)
    assert np.allclose(worker.policy.act(obs, empty, True), source.act(obs, empty, True))
    assert worker.rollout(2).weights_version == 5


class NaNEnv:
    """Two environments; env 1 reports a NaN observation at step 2 and an Inf reward at step 4.

    Records every action it is stepped with and every environment reset on its own.
    """

    num_envs, observation_dim, action_dim = 2, 2, 1
    action_low, action_high = np.array([-1.0], np.float32), np.array([1.0], np.float32)

    def __init__(self):
        self.t = 0
        self.actions: list[np.ndarray] = []
        self.resets: list[list[int]] = []

    def reset(self, seed):
        return np.zeros((2, 2), np.float32)

    def reset_envs(self, env_ids):
        self.resets.append(list(env_ids))
        return np.full((len(env_ids), 2), -1.0, np.float32)

    def step(self, actions):
        self.actions.append(actions.copy())
        self.t += 1
        obs = np.full((2, 2), float(self.t), np.float32)
        reward = np.ones(2)
        if self.t == 2:
            obs[1, 0] = np.nan
        if self.t == 4:
            reward[1] = np.inf
        return VecStep(obs, obs.copy(), reward, np.zeros(2, bool), np.zeros(2, bool))


class BrokenContext(NoContext):
    context_dim = 2

    def __init__(self):
        self.t = 0

    def observe(self, samples, present=None):
        self.t += 1

    def context(self):
        ctx = np.ones((2, 2), np.float32)
        if self.t == 1:
            ctx[0, 1] = np.nan
        if self.t == 3:
            ctx[1, 0] = -np.inf
        return ctx


def test_non_finite_values_never_leave_the_worker_nor_reach_policy_or_environment():
    env = NaNEnv()
    worker = RolloutWorker(env, BrokenContext(), PolicyCopy(4, 1, (8,), seed=0))
    seen = []
    act = worker.policy.act
    worker.policy.act = lambda obs, context, deterministic=False: seen.append(obs.copy()) or act(obs, context)
    fragment = worker.rollout(5)
    # step 2 makes env 1's next_obs NaN: that transition (t=1) is dropped, env 1 is reset and acts on the
    # reset observation at t=2 (kept); the Inf reward of step 4 drops t=3
    assert fragment.valid[:, 1].tolist() == [True, False, True, False, True]
    assert fragment.valid[:, 0].all()
    assert fragment.rejected == {"obs_nonfinite": 1, "reward_nonfinite": 1, "action_nonfinite": 0}
    assert env.resets == [[1]]
    assert fragment.obs[2, 1].tolist() == [-1.0, -1.0]  # the reset observation
    assert fragment.truncated[1].tolist() == [False, True] and not fragment.terminated.any()
    (cut,) = fragment.episodes
    assert cut.cut_short and cut.length == 2 and cut.episode_return == 2.0
    assert all(np.isfinite(obs).all() for obs in seen) and len(seen) == 5
    assert all(np.isfinite(a).all() for a in env.actions)
    assert fragment.context_fallbacks["nan"] == 1 and fragment.context_fallbacks["inf"] == 1
    for name in ("context", "next_context"):
        assert np.isfinite(getattr(fragment, name)).all()
    assert fragment.next_context[0, 0].tolist() == [0.0, 0.0]  # the zero context
    assert fragment.next_context[2, 1].tolist() == [0.0, 0.0]


def test_a_non_finite_action_is_replaced_and_its_transition_dropped():
    env = NaNEnv()
    worker = RolloutWorker(env, NoContext(2), PolicyCopy(2, 1, (8,), seed=0))
    worker.policy.act = lambda obs, context, deterministic=False: np.array([[0.5], [np.nan]], np.float32)
    fragment = worker.rollout(1)
    assert env.actions[0].tolist() == [[0.5], [0.0]]  # the middle of [-1, 1] instead of NaN
    assert fragment.valid[0].tolist() == [True, False]
    assert fragment.rejected["action_nonfinite"] == 1


def test_an_environment_that_only_resets_to_nan_is_a_clear_error():
    class AlwaysNaN(NaNEnv):
        def reset_envs(self, env_ids):
            return np.full((len(env_ids), 2), np.nan, np.float32)

    worker = RolloutWorker(AlwaysNaN(), NoContext(2), PolicyCopy(2, 1, (8,), seed=0))
    with pytest.raises(NonFiniteResetError, match=r"environments \[1\] of actor 0 .* 10 resets"):
        worker.rollout(2)
