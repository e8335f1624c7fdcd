"""The default vehicle job with the dynamics-map context on: wiring, fragments and a short training run."""

from __future__ import annotations

import json
import math

import numpy as np

from cluster.config import load_config
from cluster.factory import make_worker, probe_dimensions
from cluster.local import run_local
from learner.types import CONTEXT_FALLBACK_REASONS
from tests.conftest import ROOT

SHORT = [
    "cluster.mode=local", "env.num_envs=4", "train.warmup_steps=200", "train.total_env_steps=640",
    "rollout.steps_per_fragment=40", "learner.hidden_sizes=[32, 32]", "learner.batch_size=32",
    "learner.block_updates=10", "learner.broadcast_every=20", "learner.device=cpu", "replay.capacity=2000",
    "checkpoint.every_env_steps=100000", "metrics.port=0", "metrics.bind_address=127.0.0.1",
]  # fmt: skip


def vehicle_config(tmp_path, *extra: str):
    return load_config(ROOT / "configs" / "vehicle.yaml", [*SHORT, f"train.run_dir={tmp_path}", *extra])


def test_the_default_config_turns_the_context_on(tmp_path):
    config = vehicle_config(tmp_path)
    assert config.context.mode == "dynamics_map" and config.context.context_dim == 32
    dims = probe_dimensions(config)
    assert (dims.obs_dim, dims.context_dim) == (
        probe_dimensions(vehicle_config(tmp_path, "context.mode=none")).obs_dim,
        32,
    )


def test_fragments_carry_finite_contexts_that_follow_each_vehicle(tmp_path):
    config = vehicle_config(tmp_path)
    worker = make_worker(config)
    fragment = worker.rollout(60, random_actions=True)
    context, next_context = fragment.context, fragment.next_context
    assert context.shape == next_context.shape == (60, 4, 32)
    assert np.isfinite(context).all() and np.isfinite(next_context).all()
    # next_context of step t is the context the policy sees at t + 1
    np.testing.assert_array_equal(next_context[:-1], context[1:])
    # before the first rebuild (update_every = 10 steps) every environment shows the prior's context;
    # after it each vehicle's own samples move its context away from the prior and from the others
    prior_context = context[0, 0]
    np.testing.assert_array_equal(context[0], np.broadcast_to(prior_context, (4, 32)))
    late = context[-1]
    assert np.linalg.norm(late - prior_context, axis=1).min() > 1e-3
    assert np.linalg.norm(late[0] - late[1]) > 1e-3
    assert fragment.context_fallbacks == dict.fromkeys(CONTEXT_FALLBACK_REASONS, 0)


def test_a_short_vehicle_run_with_the_context_trains_and_stays_finite(tmp_path):
    summary = run_local(vehicle_config(tmp_path))
    assert summary["env_steps"] == 640
    assert summary["updates"] == 440  # update_to_data 1.0 over the 440 steps after warmup
    assert summary["counters"]["nan_blocks"] == 0
    stats = summary["last_stats"]
    assert all(math.isfinite(value) for value in stats.values())
    written = json.loads((tmp_path / "final_stats.json").read_text())
    assert written["updates"] == 440
