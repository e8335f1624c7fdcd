"""The learner dies inside the job and a new one resumes from last_good: a real two-node Ray cluster on loopback.

``ray.cluster_utils.Cluster`` starts a real GCS and a real raylet per node, all on
127.0.0.1: the head (2 CPUs, ``dmsac_rollout`` for the rollout actors) and a
learner node (1 CPU, ``dmsac_learner``), so the learner lands on the second node.
The tests kill the learner's process, remove its node (with and without a
replacement node joining) and crash it inside a checkpoint write, from the
driver's own hook, never after a sleep; they assert what happened, not how long it took.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import ray

from cluster.config import load_config
from cluster.ray_actors import TestHooks
from cluster.ray_driver import run_ray
from cluster.runner import CapacityError
from learner.checkpoint import Checkpointer
from learner.metrics import TARGETS_FILE_NAME
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow
LEARNER_NODE = {"num_cpus": 1, "resources": {"dmsac_learner": 1}, "node_ip_address": "127.0.0.1"}


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2, "resources": {"dmsac_rollout": 2}, "node_ip_address": "127.0.0.1", "gcs_server_port": free_port(),
            "include_dashboard": False,
        },
    )  # fmt: skip
    cluster.add_node(**LEARNER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", namespace="dmsac-recovery")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def learner_node(cluster):
    return next(node for node in cluster.worker_nodes if node.node_ip_address == "127.0.0.1")


def smoke(tmp_path, cluster, *extra: str):
    sets = [f"cluster.address={cluster.address}", "cluster.node_ip_address=127.0.0.1", f"train.run_dir={tmp_path}",
            "train.total_env_steps=2000", *extra]  # fmt: skip
    return load_config(ROOT / "configs" / "smoke.yaml", sets)


def verifies(tmp_path) -> bool:
    checkpointer = Checkpointer(tmp_path / "checkpoints", 2)
    good = checkpointer.latest_good()
    return good is not None and checkpointer.verify(good).ok


def test_a_killed_learner_is_replaced_from_last_good_and_nothing_is_lost(two_nodes, tmp_path):
    killed: list[int] = []
    targets = tmp_path / TARGETS_FILE_NAME

    def kill_learner(driver) -> None:
        progress = driver.progress
        if not killed and progress.last_checkpoint_step >= 500 and progress.env_steps >= 800:
            killed.append(driver.learner.weights[0][0])
            killed.append(json.loads(targets.read_text())[0]["targets"])
            os.kill(ray.get(driver.learner.actor.pid.remote()), signal.SIGKILL)

    summary = run_ray(smoke(tmp_path, two_nodes), on_tick=kill_learner)
    assert killed and summary["exit_code"] == 0
    assert json.loads(targets.read_text())[0]["targets"] != killed[1]  # the new learner's endpoint, for Prometheus
    assert summary["env_steps"] == summary["fleet"]["env_steps_received"] == 2000  # the budget, exactly
    events = summary["learner"]["events"]
    assert summary["learner"]["restarts"] == 1 == summary["counters"]["learner_restarts"]
    assert events[0]["resumed_from_step"] >= 500 and events[0]["env_steps_lost"] == 0
    assert "actor" in events[0]["cause"].lower() and events[0]["node"].startswith("127.0.0.1 pid ")
    # the fragments the checkpoint lacked went to the new learner once: none twice, none missing
    assert summary["counters"]["fragments_duplicate"] == 0 and summary["replay_size"] == 2000
    assert summary["updates"] == 900  # utd 0.5 over the 1 800 steps after warm-up: owed updates redone
    # weight versions went on increasing: every actor swapped to the new learner's weights
    assert summary["weights_version"] > killed[0]
    assert all(killed[0] < a["weights_version"] <= summary["weights_version"] for a in summary["fleet"]["actors"])
    assert verifies(tmp_path)


def test_a_lost_learner_node_is_replaced_by_a_node_that_joins(two_nodes, tmp_path):
    removed, added = [], []

    def lose_then_bring_a_node(driver) -> None:
        progress = driver.progress
        if not removed and progress.last_checkpoint_step >= 500 and progress.env_steps >= 800:
            removed.append(learner_node(two_nodes))
            two_nodes.remove_node(removed[0])
        elif removed and not added and driver.learner.restarts == [] and driver.learner.awaiting:
            added.append(two_nodes.add_node(**LEARNER_NODE))  # as an autoscaler or KubeRay would bring one

    summary = run_ray(smoke(tmp_path, two_nodes), on_tick=lose_then_bring_a_node)
    assert removed and added and summary["exit_code"] == 0
    assert summary["env_steps"] == 2000 and summary["learner"]["restarts"] == 1
    assert summary["learner"]["events"][0]["env_steps_lost"] == 0
    assert summary["counters"]["fragments_duplicate"] == 0 and summary["replay_size"] == 2000
    assert verifies(tmp_path)


def test_with_no_node_for_the_learner_the_job_ends_with_exit_3(two_nodes, tmp_path):
    removed = []

    def lose_the_node(driver) -> None:
        if not removed and driver.progress.last_checkpoint_step >= 500:
            removed.append(learner_node(two_nodes))
            two_nodes.remove_node(removed[0])

    config = smoke(tmp_path, two_nodes, "cluster.learner_restart_timeout_s=3")
    try:
        with pytest.raises(CapacityError, match=r"the learner cannot be started again: .*\{CPU: 1, dmsac_learner: 1\}"):
            run_ray(config, on_tick=lose_the_node)
    finally:
        two_nodes.add_node(**LEARNER_NODE)  # the next test's learner node
        two_nodes.wait_for_nodes()
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    assert summary["exit_code"] == 3 and "cluster.learner_restart_timeout_s" in summary["exit_reason"]
    assert f"last good checkpoint: {tmp_path / 'checkpoints'}/step_" in summary["exit_reason"]
    assert f"resume with: python -m cluster.train --config {tmp_path}/config.yaml --resume auto" in summary["exit_reason"]
    assert verifies(tmp_path)  # the checkpoints the dead learner left


def test_a_learner_killed_inside_a_checkpoint_write_resumes_from_the_previous_one(two_nodes, tmp_path):
    hooks = TestHooks(crash_writing_checkpoint_from_step=1000)  # the write of step 1000 dies before its rename
    summary = run_ray(smoke(tmp_path, two_nodes), hooks=hooks)
    assert summary["exit_code"] == 0 and summary["learner"]["restarts"] == 1
    event = summary["learner"]["events"][0]
    assert event["resumed_from_step"] == 500 and event["env_steps_lost"] == 0
    assert summary["env_steps"] == summary["replay_size"] == 2000
    assert summary["counters"]["fragments_duplicate"] == 0
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp_")]  # cleaned up
    assert verifies(tmp_path)


def test_a_job_of_two_runs_trains_both_with_one_learner_and_its_replacement_resumes_each(two_nodes, tmp_path):
    """``train.parallel_runs: 2`` on Ray: one learner actor for both runs, a rollout actor each; the learner dies
    inside run 0's checkpoint write of step 1000; the new one resumes each run from its own last good checkpoint and
    gets the fragments each lacks."""
    hooks = TestHooks(crash_writing_checkpoint_from_step=1000)
    config = smoke(tmp_path, two_nodes, "train.parallel_runs=2", "cluster.num_actors=1", "train.total_env_steps=1500",
                   "train.run_overrides=[[], [learner.lr=3e-4]]")  # fmt: skip
    summary = run_ray(config, hooks=hooks)
    assert summary["exit_code"] == 0 and json.loads((tmp_path / "final_stats.json").read_text()) == summary
    runs = summary["runs"]
    for k, run in enumerate(runs):
        assert run["env_steps"] == run["replay_size"] == 1500  # nothing lost, nothing twice
        assert run["counters"]["fragments_duplicate"] == 0 and run["counters"]["learner_restarts"] == 1
        assert run["learner"]["restarts"] == 1 and run["learner"]["env_steps_lost"] == 0
        assert run["fleet"]["alive"] == 1 and verifies(tmp_path / "runs" / str(k))
    (event,) = runs[0]["learner"]["events"]
    assert event["runs"][0]["resumed_from_step"] == 500  # run 0's write of step 1000 died before its rename
    # Run 1 checkpoints on its own, every 500 of its env steps (its actor runs at its own pace: by run 0's crash it
    # may have any of its checkpoints, its final one at 1 500 included): the newest it had when the learner died.
    every = config.checkpoint.every_env_steps
    assert event["runs"][1]["resumed_from_step"] == event["runs"][1]["at_env_step"] // every * every >= every
    assert load_config(tmp_path / "runs" / "1" / "config.yaml").learner.lr == 3e-4
