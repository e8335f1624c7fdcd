"""The composition root: fragment identity and seeds per worker start."""

from __future__ import annotations

import dataclasses

import pytest

from cluster.config import load_config
from cluster.factory import (
    actor_seed,
    job_learner_config,
    make_learner,
    make_learner_service,
    make_worker,
    planned_updates,
    probe_dimensions,
)
from learner.checkpoint import NoGoodCheckpointError
from learner.learner import Dimensions
from learner.types import ConfigValueError
from tests.conftest import ROOT


def test_every_worker_start_is_a_new_incarnation_and_a_resume_a_new_seed_stream(tmp_path):
    config = load_config(ROOT / "configs" / "smoke.yaml", [f"train.run_dir={tmp_path}"])
    first, again = make_worker(config, actor_id=1), make_worker(config, actor_id=1)
    assert first.incarnation != again.incarnation  # a restart never repeats (actor, incarnation, seq)
    assert 0 <= first.incarnation < 2**62
    # a fresh start reproduces its episodes; a resume (seed stream = its env step) gets new ones
    assert first.rollout(3, random_actions=True).obs.tolist() == again.rollout(3, random_actions=True).obs.tolist()
    resumed = make_worker(config, actor_id=1, seed_stream=600)
    assert resumed.rollout(3, random_actions=True).obs.tolist() != make_worker(config, 1).rollout(3, True).obs.tolist()
    assert actor_seed(config, 1, 0) == 10_008 and actor_seed(config, 1, 600) == 10_008 + 600 * 101


def test_a_replacement_learner_that_finds_no_checkpoint_fails_at_once(tmp_path):
    """A node that cannot see the checkpoint directory must not start the run from scratch."""
    config = load_config(ROOT / "configs" / "smoke.yaml", [f"train.run_dir={tmp_path}", "metrics.enabled=false"])
    assert make_learner_service(config, resume="auto").learner.env_steps == 0  # a first start may start fresh
    with pytest.raises(NoGoodCheckpointError, match=r"no checkpoint under .*checkpoints on node .* must be on storage"):
        make_learner_service(config, resume="auto", require_checkpoint=True)


def test_the_dynamics_map_needs_an_environment_that_reports_samples():
    pendulum = load_config(ROOT / "configs" / "smoke.yaml", ["context.mode=dynamics_map"])
    with pytest.raises(ConfigValueError) as err:
        probe_dimensions(pendulum)
    assert err.value.key == "env.id" and "Pendulum-v1: context.mode dynamics_map needs info['dynamics_samples']" in str(
        err.value
    )
    vehicle_as_gym = load_config(ROOT / "configs" / "smoke.yaml", [
        "context.mode=dynamics_map", "env.id=actors.vehicle.gym_wrapper:VehicleGymEnv"])  # fmt: skip
    assert probe_dimensions(vehicle_as_gym) == Dimensions(34, 32, 1)  # the built-in env through the protocol
    assert probe_dimensions(pendulum.__class__(env=pendulum.env)) == Dimensions(3, 0, 1)  # no context: no need


@pytest.mark.parametrize(
    ("sets", "updates", "fast_path"),
    [
        (["train.total_env_steps=20000", "train.warmup_steps=1000"], 19_000, "graph"),  # the Pendulum job
        (["train.total_env_steps=41000", "train.warmup_steps=1000"], 40_000, "auto"),  # at the bar: compiled
        (["train.total_env_steps=40999", "train.warmup_steps=1000"], 39_999, "graph"),
        (["train.total_env_steps=30000", "train.warmup_steps=10000", "train.update_to_data=2.0"], 40_000, "auto"),
        (["train.total_env_steps=70000", "train.warmup_steps=10000"], 60_000, "auto"),  # the vehicle bench job
        (["train.total_env_steps=500", "train.warmup_steps=1000"], 0, "graph"),  # all warm-up: no update
        (["train.total_env_steps=20000", "learner.fast_path=compiled"], 10_000, "compiled"),  # only auto is settled
        (["train.total_env_steps=20000", "learner.fast_path=off"], 10_000, "off"),
    ],
)
def test_auto_compiles_only_for_a_job_whose_updates_pay_the_compile_back(sets, updates, fast_path):
    config = load_config(ROOT / "configs" / "smoke.yaml", ["train.warmup_steps=10000", "train.update_to_data=1.0", *sets])
    assert planned_updates(config) == updates
    settled = job_learner_config(config)
    assert settled.fast_path == fast_path
    assert dataclasses.replace(settled, fast_path=config.learner.fast_path) == config.learner  # nothing else changes
    assert make_learner(config, probe_dimensions(config)).config.fast_path == fast_path  # what the learner gets
