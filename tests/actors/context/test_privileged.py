"""Privileged information for the critic only (``context.privileged_critic``): the critics see the vehicle's true
parameters after the policy's context; the policy, wherever it runs, sees only its own part."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.context.base import policy_context_dim
from actors.context.privileged import JoinedContext
from actors.policy import PolicyCopy
from cluster.evaluate import evaluate_trained
from cluster.factory import make_env_and_context, make_learner, make_worker, probe_dimensions
from cluster.local import run_local
from learner.checkpoint import Checkpointer
from tests.cluster.test_vehicle_context import vehicle_config


class Fixed:
    """A provider of fixed rows that counts one fallback per call."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows, self.context_dim, self.calls = rows, rows.shape[1], []

    def reset(self, env_ids):
        self.calls.append(("reset", list(env_ids)))

    def observe(self, samples, present=None):
        self.calls.append(("observe", samples.shape))

    def context(self):
        return self.rows.copy()

    def take_fallback_counts(self):
        return {"nan": 1}


def test_the_context_is_the_policy_part_then_the_critic_part():
    policy_part, critic_part = Fixed(np.ones((2, 3), np.float32)), Fixed(np.full((2, 2), 5.0, np.float32))
    both = JoinedContext(policy_part, critic_part, second_for_critics_only=True)
    assert (both.context_dim, policy_context_dim(both), policy_context_dim(policy_part)) == (5, 3, 3)
    assert both.context().tolist() == [[1, 1, 1, 5, 5]] * 2
    both.observe(np.zeros((2, 4)))
    both.reset(np.array([1]))
    assert policy_part.calls == critic_part.calls == [("observe", (2, 4)), ("reset", [1])]
    assert both.take_fallback_counts() == {"nan": 2}
    for_both = JoinedContext(policy_part, critic_part)  # context.append_history: the policy sees all of it
    assert (for_both.context_dim, policy_context_dim(for_both)) == (5, 5)


def test_append_history_puts_the_last_samples_after_the_maps_context_for_policy_and_critics(tmp_path):
    from actors.context.history import normalized_samples
    from actors.context.provider import DynamicsMapContext
    from cluster.config import ConfigError

    config = vehicle_config(tmp_path, "context.append_history=true", "context.history_steps=3",
                            "env.vehicle.action=residual_map")  # fmt: skip
    dims = probe_dimensions(config)
    assert (dims.context_dim, dims.policy_context_dim) == (32 + 12, None)
    worker = make_worker(config)
    assert isinstance(worker.env.base.source.provider, DynamicsMapContext)  # the map, not the joined context
    samples = []
    for _ in range(5):
        step = worker.env.step(np.zeros((worker.env.num_envs, 1)))
        worker.provider.observe(step.dynamics_samples)
        samples.append(step.dynamics_samples)
    history = worker.provider.context()[:, 32:].reshape(-1, 3, 4)
    for k in range(3):  # newest first
        assert np.allclose(history[:, k], normalized_samples(samples[-1 - k], config.context))
    with pytest.raises(ConfigError, match="context.append_history: appends to a dynamics_map or oracle context, not history"):
        vehicle_config(tmp_path, "context.mode=history", "context.append_history=true")


def test_the_critics_see_the_true_parameters_and_the_policy_never_does(tmp_path):
    config = vehicle_config(tmp_path, "context.privileged_critic=true")
    dims = probe_dimensions(config)
    assert (dims.context_dim, dims.policy_context_dim) == (32 + 17, 32)
    learner = make_learner(config, dims)
    assert learner.sac.actor.net[0].in_features == dims.obs_dim + 32
    assert learner.sac.critic.weights[0].shape[-1] == dims.obs_dim + 32 + 17 + dims.action_dim
    # the oracle part is each vehicle's normalized parameters, in [-1, 1]
    env, provider = make_env_and_context(config, seed=3)
    provider.reset(np.arange(env.num_envs))
    oracle = provider.context()[:, 32:]
    assert oracle.shape == (4, 17) and np.abs(oracle).max() <= 1.0 and np.abs(oracle).max() > 0.1
    # the policy's actions do not change when only the critic's part does
    policy = PolicyCopy(dims.obs_dim + 32, dims.action_dim, (16,), seed=0)
    obs, context = np.ones((4, dims.obs_dim), np.float32), provider.context()
    changed = context.copy()
    changed[:, 32:] += 1.0
    np.testing.assert_array_equal(policy.act(obs, context, True), policy.act(obs, changed, True))
    assert make_worker(config).policy.in_dim == dims.obs_dim + 32


def test_a_short_run_with_a_privileged_critic_trains_and_its_policy_evaluates(tmp_path):
    config = vehicle_config(tmp_path, "context.privileged_critic=true")
    summary = run_local(config)
    assert (summary["env_steps"], summary["updates"]) == (640, 440)
    assert summary["counters"]["nan_blocks"] == 0
    state = Checkpointer(tmp_path / "checkpoints", 2).load(tmp_path / "checkpoints" / "step_000000640").state
    actor = state["learner"]["sac"]["actor"]
    assert actor["net.0.weight"].shape[1] == probe_dimensions(config).obs_dim + 32
    report = evaluate_trained(config, actor, episodes=2, seed=7_770_001)
    assert np.isfinite(report.mean_return) and torch.isfinite(state["learner"]["sac"]["critic"]["weights.0"]).all()
