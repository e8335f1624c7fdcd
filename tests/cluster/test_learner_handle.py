"""``LearnerHandle`` without Ray: the learner actor is a stand-in that records calls; queue, kept fragments, hand-over.

Replacing a learner on a real Ray cluster: tests/e2e/test_learner_recovery.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ray.exceptions import ActorDiedError, ObjectLostError, RayActorError, RayTaskError

from cluster import learner_handle
from cluster.config import load_config
from cluster.learner_handle import Delivery, LearnerHandle, LearnerLost, is_learner_death, is_object_lost
from cluster.ray_actors import TestHooks
from cluster.runner import CapacityError, RunRecord, Stopper
from learner.checkpoint import Checkpointer
from learner.service import StepReport
from tests.cluster.ray_fakes import FakeActorClass, progress
from tests.conftest import ROOT


@pytest.fixture
def actors(monkeypatch) -> FakeActorClass:
    fake = FakeActorClass()
    monkeypatch.setattr(learner_handle, "LearnerActor", fake)
    monkeypatch.setattr(learner_handle, "learner_options", lambda config: {"num_cpus": 1})
    return fake


@pytest.fixture
def handle(tmp_path: Path, actors: FakeActorClass) -> LearnerHandle:
    overrides = [f"train.run_dir={tmp_path}", "cluster.max_learner_restarts=1"]
    config = load_config(ROOT / "configs" / "smoke.yaml", overrides)
    handle = LearnerHandle(config, None, None, Stopper())
    handle.started([RunRecord(tmp_path, progress(0))])
    return handle


def test_object_loss_is_told_apart_from_other_errors() -> None:
    lost = ObjectLostError("00" * 28, None, "")
    assert is_object_lost(lost) and is_object_lost(RayTaskError("step", "traceback", lost))
    assert not is_object_lost(RayTaskError("step", "traceback", ValueError("bad fragment")))
    assert not is_object_lost(RayActorError())


def test_learner_death_is_a_dead_actor_not_an_error_its_code_raised() -> None:
    assert is_learner_death(RayActorError()) and is_learner_death(ActorDiedError())
    assert not is_learner_death(RayTaskError("step", "traceback", ValueError("bad fragment")))
    assert not is_learner_death(RayTaskError("step", "traceback", RayActorError()).as_instanceof_cause())
    assert not is_learner_death(ValueError())


def test_the_handle_starts_one_learner_with_the_jobs_request(tmp_path: Path, handle, actors) -> None:
    [actor] = actors.started
    assert actor.args == (handle.config, None, TestHooks())
    assert actors.options_seen == [{"num_cpus": 1}]
    assert handle.weights == [(0, [None])]


def test_started_takes_earlier_restarts_and_the_checkpoint_from_the_record(tmp_path: Path, handle) -> None:
    handle.started([RunRecord(tmp_path, progress(5000, checkpoint=4000, counters={"learner_restarts": 2}))])
    assert (handle.restarts_before, handle.checkpoint_steps) == (2, [[4000]])
    handle.started([RunRecord(tmp_path, progress(0))])  # no checkpoint yet (-1)
    assert (handle.restarts_before, handle.checkpoint_steps) == (0, [[0]])


def test_step_queues_the_fragment_on_the_learner(handle) -> None:
    handle.step("f1", 50)
    assert handle.queue == [((0, "step", 1), Delivery("f1", 50))]  # the ref of the actor's first call
    assert handle.actor.calls == [("step", ("f1", 0))]  # run 0 of the job


def test_fragments_are_kept_until_two_checkpoints_hold_them(handle) -> None:
    kept = []
    for fragment, env_steps, checkpoint in [("f1", 100, -1), ("f2", 200, -1), ("f3", 300, 200), ("f4", 400, 400)]:
        handle.on_report(StepReport(None, progress(env_steps, checkpoint=checkpoint), True), Delivery(fragment, 100))
        kept.append([d.ingested_at for d in handle.kept])
    assert kept == [[100], [100, 200], [100, 200, 300], [300, 400]]
    assert handle.checkpoint_steps == [[200, 400]]
    assert handle.records[0].latest.env_steps == 400


def test_hand_over_requeues_what_the_checkpoint_lacks_in_order(handle) -> None:
    handle.kept = [Delivery("f1", 100, 100), Delivery("f2", 100, 200), Delivery("f3", 100, 300)]
    handle.queue = [("old ref", Delivery("f4", 100))]  # queued: not in the dead learner's 300 steps
    assert handle.hand_over(resumed=[progress(100, checkpoint=100)], known=[progress(300)]) == [0]
    assert handle.kept == [Delivery("f1", 100, 100)]
    assert [delivery for _, delivery in handle.queue] == [Delivery("f2", 100), Delivery("f3", 100), Delivery("f4", 100)]
    assert handle.actor.calls == [("step", ("f2", 0)), ("step", ("f3", 0)), ("step", ("f4", 0))]
    assert handle.checkpoint_steps == [[100, 100]]


def test_hand_over_counts_the_steps_no_kept_fragment_holds_as_lost(handle) -> None:
    handle.kept = [Delivery("f3", 100, 300)]  # the fragment of steps 101..200 was freed already
    assert handle.hand_over(resumed=[progress(100, checkpoint=100)], known=[progress(300)]) == [100]


def test_a_fragment_lost_with_its_node_is_counted_and_the_queue_goes_on(handle) -> None:
    answers = {"r1": ObjectLostError("00" * 28, None, ""), "r2": StepReport(None, progress(70), True)}

    def get(ref):
        if isinstance(answers[ref], Exception):
            raise answers[ref]
        return answers[ref]

    handle.get = get
    handle.queue = [("r1", Delivery("f1", 50)), ("r2", Delivery("f2", 70))]
    handle.drain(keep=0)
    assert (handle.queue, handle.env_steps_lost) == ([], [50])
    assert handle.kept == [Delivery("f2", 70, 70)]


def test_drain_raises_an_error_of_the_learners_code_and_keeps_the_queue(handle) -> None:
    def get(ref):
        raise RayTaskError("step", "traceback", ValueError("bad fragment"))

    handle.get = get
    handle.queue = [("r1", Delivery("f1", 50))]
    with pytest.raises(RayTaskError):
        handle.drain(keep=0)
    assert len(handle.queue) == 1 and handle.env_steps_lost == [0]


def test_a_stop_is_forwarded_once(handle) -> None:
    handle.forward_stop()
    assert handle.actor.calls == []
    handle.stopper.requested = True
    handle.forward_stop()
    handle.forward_stop()
    assert handle.actor.calls == [("request_stop", ())]



def test_fleet_reports_go_to_the_current_learner(handle) -> None:
    handle.report_fleet(2, 1)
    assert handle.actor.calls == [("report_fleet", (2, 1, 0))]


def test_call_replaces_a_dead_learner_and_asks_again(handle) -> None:
    answers: list = [LearnerLost("the actor died"), "cpu"]
    causes: list[str] = []

    def get(ref):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    handle.get, handle.recover = get, causes.append
    assert handle.call("device") == "cpu"
    assert causes == ["the actor died"]
    assert handle.actor.calls == [("device", ()), ("device", ())]


def test_past_the_restart_limit_the_job_ends_naming_last_good_and_the_resume_command(tmp_path: Path, handle, actors):
    good = Checkpointer(tmp_path / "checkpoints", keep_last=2).save(500, {"w": torch.zeros(2)}, None, "hash", {})
    handle.restarts = [{"cause": "first death"}]  # max_learner_restarts=1 spent
    with pytest.raises(CapacityError) as err:
        handle.recover("second death")
    assert str(err.value) == (
        "the learner died 2 times in this job (cluster.max_learner_restarts=1), last: second death; "
        f"last good checkpoint: {good}; "
        f"resume with: python -m cluster.train --config {tmp_path / 'config.yaml'} --resume auto"
    )
    assert len(actors.started) == 1  # no new learner


def test_where_to_resume_without_a_checkpoint_says_none(tmp_path: Path, handle) -> None:
    assert handle.where_to_resume().startswith("last good checkpoint: none; resume with: python -m cluster.train")


def test_summary_counts_restarts_and_lost_steps(handle) -> None:
    handle.restarts, handle.env_steps_lost = [{"cause": "x"}], [150]
    assert handle.summary() == {"restarts": 1, "env_steps_lost": 150, "events": [{"cause": "x"}]}


@pytest.fixture
def two_runs(tmp_path: Path, actors: FakeActorClass) -> LearnerHandle:
    """A job of two runs (``train.parallel_runs``): one learner, weights, kept fragments and records per run."""
    overrides = [f"train.run_dir={tmp_path}", "train.parallel_runs=2"]
    handle = LearnerHandle(load_config(ROOT / "configs" / "smoke.yaml", overrides), None, None, Stopper())
    handle.started([RunRecord(tmp_path / "runs" / "0", progress(0)), RunRecord(tmp_path / "runs" / "1", progress(0))])
    return handle


def test_a_job_of_two_runs_keeps_each_runs_fragments_until_its_own_checkpoints_hold_them(two_runs, actors) -> None:
    assert len(actors.started) == 1  # one learner for both runs
    assert two_runs.weights == [(0, [None]), (0, [None])]
    reports = [("a1", 0, 100, -1), ("b1", 1, 100, -1), ("a2", 0, 200, 100), ("b2", 1, 200, -1), ("a3", 0, 300, 200)]
    for fragment, run, env_steps, checkpoint in reports:
        two_runs.on_report(StepReport(None, progress(env_steps, checkpoint=checkpoint), True), Delivery(fragment, 100, run=run))
    # run 0's checkpoints at 100 and 200 free its fragment of step 100; run 1 has none yet: all its fragments stay
    assert [(d.fragment, d.ingested_at) for d in two_runs.kept] == [("b1", 100), ("a2", 200), ("b2", 200), ("a3", 300)]
    assert two_runs.checkpoint_steps == [[100, 200], [0]]
    assert [r.latest.env_steps for r in two_runs.records] == [300, 200]


def test_a_new_learner_gets_each_runs_missing_fragments_in_the_order_they_came(two_runs) -> None:
    two_runs.kept = [Delivery("a1", 100, 100, 0), Delivery("b1", 100, 100, 1), Delivery("a2", 100, 200, 0),
                     Delivery("b2", 100, 200, 1)]  # fmt: skip
    two_runs.queue = [("old ref", Delivery("b3", 100, run=1))]
    lost = two_runs.hand_over(resumed=[progress(100, checkpoint=100), progress(0)], known=[progress(200), progress(300)])
    assert lost == [0, 100]  # run 1 had ingested 300 steps; 200 are kept (b3 was queued, not ingested)
    assert two_runs.actor.calls == [("step", ("b1", 1)), ("step", ("a2", 0)), ("step", ("b2", 1)), ("step", ("b3", 1))]
    assert two_runs.kept == [Delivery("a1", 100, 100, 0)] and two_runs.checkpoint_steps == [[100, 100], [-1, -1]]
    assert two_runs.summary(1) == {"restarts": 0, "env_steps_lost": 0, "events": []}
