"""``RayDriver`` without Ray: stand-in actors and learner; the step budget, the fleet's bookkeeping, failures.

The driver on a real Ray head: tests/e2e/test_ray.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError

from cluster import ray_driver
from cluster.config import load_config
from cluster.ray_actors import FragmentHeader
from cluster.ray_driver import Fleet, RayDriver, record_failures, resumed_step
from cluster.runner import CapacityError, LearnerStartError, RunRecord, Stopper
from learner.checkpoint import Checkpointer
from tests.cluster.ray_fakes import FakeActor, FakeActorClass, progress
from tests.conftest import ROOT


class FakeLearner:
    """The driver's ``LearnerHandle``: its actor, its request, its weights, the fragments it was handed."""

    def __init__(self, config, resume, hooks, stopper) -> None:
        self.actor = FakeActor(99, ())
        self.options = {"num_cpus": 1}
        self.weights = [(3, ["weights v3"])]
        self.steps: list[tuple] = []
        self.ready = False

    def step(self, fragment, env_steps: int, run: int = 0) -> None:
        self.steps.append((fragment, env_steps))

    def report_fleet(self, alive: int, new_restarts: int, run: int = 0) -> None:  # as LearnerHandle does: to its actor
        self.actor.report_fleet.remote(alive, new_restarts)

    def summary(self, run: int = 0) -> dict:
        return {"restarts": 0, "env_steps_lost": 0, "events": []}


@pytest.fixture
def rollout(monkeypatch) -> FakeActorClass:
    actors = FakeActorClass()
    monkeypatch.setattr(ray_driver, "RolloutActor", actors)
    monkeypatch.setattr(ray_driver, "LearnerHandle", FakeLearner)
    monkeypatch.setattr(ray_driver, "rollout_options", lambda config: {"num_cpus": 1, "max_restarts": 3})
    return actors


def make_driver(tmp_path: Path, *extra: str) -> RayDriver:
    """Smoke config: 2 actors, fragments of 25 steps x 2 envs = 50 env steps, warm-up 200."""
    config = load_config(ROOT / "configs" / "smoke.yaml", [f"train.run_dir={tmp_path}", *extra])
    return RayDriver(config, None, None, Stopper())


def header(actor_id: int, incarnation: int, weights_version: int = 3) -> FragmentHeader:
    return FragmentHeader(actor_id, incarnation, seq=0, env_steps=50, weights_version=weights_version, episodes=0)


def test_resumed_step_is_the_checkpoints_step_and_zero_for_a_fresh_start(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "smoke.yaml", [f"train.run_dir={tmp_path}"])
    assert (resumed_step(None, config), resumed_step("auto", config)) == (0, 0)  # nothing to resume yet
    path = Checkpointer(tmp_path / "checkpoints", keep_last=2).save(20_000, {"w": torch.zeros(1)}, None, "hash", {})
    assert (resumed_step("auto", config), resumed_step(str(path), config)) == (20_000, 20_000)  # last good, or named


def test_alive_count_leaves_out_actors_awaiting_a_restart() -> None:
    fleet = Fleet(["a", "b", "c"], [0, 0, 0], [True, True, False], [None] * 3, retry_at={0: 5.0})
    assert fleet.alive_count == 1


def test_the_driver_starts_one_rollout_actor_per_configured_actor(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path, "cluster.num_actors=3")
    assert [actor.args[1:] for actor in rollout.started] == [(0, 0), (1, 0), (2, 0)]  # (actor id, seed stream)
    assert rollout.options_seen == [{"num_cpus": 1, "max_restarts": 3}] * 3
    assert driver.fragment_steps == 50
    assert driver.needs() == "the job needs 4 CPUs (3 rollout actors + the learner)"
    driver.learner.options = {"num_cpus": 1, "num_gpus": 1}
    assert driver.needs() == "the job needs 4 CPUs and 1 GPU (3 rollout actors + the learner)"
    driver.learner.options = {"num_cpus": 1, "num_gpus": 0.25}
    assert driver.needs() == "the job needs 4 CPUs and 0.25 GPU (3 rollout actors + the learner)"


def test_the_budget_is_handed_out_in_whole_fragments_rounded_up(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path, "train.total_env_steps=1210")
    handed = 0
    while driver.take_fragment():
        handed += 1
    assert (handed, driver.env_steps_handed_out) == (25, 1250)  # 24 fragments hold 1200 steps: one more


def test_no_fragment_is_handed_out_after_a_stop(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    driver.stopper.requested = True
    assert driver.take_fragment() is False and driver.env_steps_handed_out == 0


def test_submit_asks_for_random_actions_while_the_fragment_starts_inside_the_warmup(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    for handed_out, random_actions in [(200, True), (250, False)]:  # fragments of steps 150..200 and 200..250
        driver.env_steps_handed_out = handed_out
        driver.submit(1)
        assert rollout.started[1].calls[-1] == ("rollout", (25, random_actions, (3, ["weights v3"])))
    # header ref -> (actor, fragment ref, weights version sent); refs: (actor, method, call number, return index)
    assert driver.pending == {
        (1, "rollout", 1, 0): (1, (1, "rollout", 1, 1), 3),
        (1, "rollout", 2, 0): (1, (1, "rollout", 2, 1), 3),
    }


def test_idle_actors_are_alive_without_a_fragment_or_a_pending_retry(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path, "cluster.num_actors=4")
    driver.pending = {"header ref": (0, "fragment ref", 3)}
    driver.fleet.retry_at = {1: 0.0}
    driver.fleet.alive[3] = False
    assert driver.idle() == [2]


def test_a_header_hands_its_fragment_to_the_learner_and_asks_the_actor_again(tmp_path: Path, rollout, monkeypatch):
    driver = make_driver(tmp_path)
    submitted: list[int] = []
    driver.submit = submitted.append
    monkeypatch.setattr(ray_driver.ray, "get", lambda ref: header(0, incarnation=0))
    driver.pending = {"header ref": (0, "fragment ref", 3)}
    driver.on_header("header ref")
    assert (driver.learner.steps, driver.env_steps_received, submitted) == ([("fragment ref", 50)], 50, [0])
    assert (driver.pending, driver.env_steps_handed_out, driver.fleet.incarnations) == ({}, 50, [0, None])


def test_a_new_incarnation_counts_a_restart_and_the_weights_it_came_back_with(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    driver.note_incarnation(0, header(0, incarnation=0), version_sent=3)
    driver.note_incarnation(0, header(0, incarnation=0), version_sent=3)
    assert driver.fleet.restarts == [0, 0] and driver.learner.actor.calls == []
    driver.note_incarnation(0, header(0, incarnation=1, weights_version=5), version_sent=4)
    fleet = driver.fleet
    assert (fleet.restarts, fleet.restart_versions, fleet.incarnations) == ([1, 0], [(4, 5)], [1, None])
    assert driver.learner.actor.calls == [("report_fleet", (2, 1))]


def test_an_unavailable_actor_is_asked_again_at_once(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    submitted: list[int] = []
    driver.submit = submitted.append
    driver.on_actor_failure(1, ActorUnavailableError("restarting", None))
    assert (submitted, driver.restarting, driver.fleet.retry_at, driver.fleet.died_in_a_row) == ([1], {1}, {}, {})


def test_a_dead_actor_is_retried_later_and_given_up_after_three_deaths_in_a_row(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    driver.pending = {"header ref": (1, "fragment ref", 3)}  # actor 1 is busy: nothing else is handed out
    driver.env_steps_handed_out = 100
    driver.on_actor_failure(0, ActorDiedError())
    assert list(driver.fleet.retry_at) == [0] and driver.fleet.died_in_a_row == {0: 1}
    assert driver.learner.actor.calls == [("report_fleet", (1, 0))]
    driver.on_actor_failure(0, ActorDiedError())
    driver.on_actor_failure(0, ActorDiedError())
    assert (driver.fleet.alive, driver.fleet.retry_at, driver.env_steps_handed_out) == ([False, True], {}, 50)


def test_an_actor_whose_restarts_are_spent_is_given_up_at_its_first_death(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)  # cluster.max_actor_restarts: 3
    driver.pending = {"header ref": (1, "fragment ref", 3)}
    driver.fleet.restarts[0], driver.env_steps_handed_out = 3, 100
    driver.on_actor_failure(0, ActorDiedError())
    assert (driver.fleet.alive, driver.env_steps_handed_out) == ([False, True], 50)


def test_after_a_stop_a_failed_fragment_goes_back_to_the_budget(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    submitted: list[int] = []
    driver.submit = submitted.append
    driver.stopper.requested, driver.env_steps_handed_out = True, 100
    driver.on_actor_failure(0, ActorUnavailableError("restarting", None))
    assert (submitted, driver.env_steps_handed_out, driver.restarting) == ([], 50, set())


def test_with_every_actor_gone_past_the_timeout_the_job_ends_with_exit_3(tmp_path: Path, rollout, monkeypatch):
    now = [1000.0]  # the driver's clock, moved by hand
    monkeypatch.setattr(ray_driver, "time", SimpleNamespace(monotonic=lambda: now[0]))
    driver = make_driver(tmp_path, "cluster.actors_gone_timeout_s=60")
    driver.check_fleet()
    assert driver.gone_since is None  # actors alive
    driver.fleet.alive = [False, False]
    driver.check_fleet()
    assert driver.gone_since == 1000.0  # the clock starts when the last actor is seen gone
    now[0] = 1060.0
    driver.check_fleet()  # 60 s: not over the timeout yet
    driver.fleet.alive = [False, True]
    driver.check_fleet()
    assert driver.gone_since is None  # one came back: the clock resets
    driver.fleet.alive = [False, False]
    driver.check_fleet()
    now[0] = 1100.0
    driver.check_fleet()  # 100 s after the first loss, 40 s after the second
    now[0] = 1120.5
    with pytest.raises(CapacityError, match=r"^every rollout actor has been gone for over 60.0 s"):
        driver.check_fleet()


def test_fleet_summary_reports_what_the_driver_knows(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    driver.fleet.restarts, driver.fleet.incarnations, driver.env_steps_received = [1, 0], [1, 0], 1200
    driver.fleet.restart_versions = [(4, 5)]
    assert driver.fleet_summary() == {
        "restarts": [1, 0], "alive": 2, "incarnations": [1, 0], "restart_versions": [(4, 5)],
        "env_steps_received": 1200, "actors": [],
    }  # fmt: skip


def test_a_run_that_fails_before_training_records_only_the_exit_code(tmp_path: Path) -> None:
    record_failures([], tmp_path, [tmp_path], CapacityError("no node for the learner"))
    written = json.loads((tmp_path / "final_stats.json").read_text())
    assert written == {"exit_code": 3, "exit_reason": "no node for the learner"}


def test_a_run_that_fails_while_training_records_its_progress_and_fleet(tmp_path: Path, rollout) -> None:
    driver = make_driver(tmp_path)
    driver.record = RunRecord(tmp_path, progress(0))
    driver.record.update(progress(600, updates=200))
    record_failures([driver], tmp_path, [tmp_path], LearnerStartError("port taken"))
    written = json.loads((tmp_path / "final_stats.json").read_text())
    assert (written["exit_code"], written["exit_reason"]) == (2, "port taken")
    assert (written["env_steps"], written["updates"]) == (600, 200)
    assert written["fleet"]["alive"] == 2 and written["learner"] == {"restarts": 0, "env_steps_lost": 0, "events": []}


def test_each_run_of_a_job_has_its_own_actors_and_budget_and_shares_the_learner(tmp_path: Path, rollout) -> None:
    from cluster.config import run_configs

    config = load_config(ROOT / "configs" / "smoke.yaml", [f"train.run_dir={tmp_path}", "train.parallel_runs=2"])
    learner = FakeLearner(config, None, None, Stopper())
    learner.weights = [(3, ["weights v3"]), (5, ["weights v5"])]
    drivers = [RayDriver(c, None, None, Stopper(), learner, run, 2) for run, c in enumerate(run_configs(config))]
    assert [(a.args[0].train.seed, a.args[1]) for a in rollout.started] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert drivers[1].needs() == "the job needs 5 CPUs (4 rollout actors of 2 runs + the learner)"
    drivers[1].env_steps_handed_out = 250
    drivers[1].submit(0)
    assert rollout.started[2].calls[-1] == ("rollout", (25, False, (5, ["weights v5"])))  # run 1's weights
    while drivers[0].take_fragment():
        pass
    assert (drivers[0].env_steps_handed_out, drivers[1].env_steps_handed_out) == (1200, 250)  # budgets apart


def test_a_job_of_two_runs_that_fails_records_each_run_and_the_job(tmp_path: Path, rollout) -> None:
    from cluster.config import run_configs

    config = load_config(ROOT / "configs" / "smoke.yaml", [f"train.run_dir={tmp_path}", "train.parallel_runs=2"])
    learner = FakeLearner(config, None, None, Stopper())
    drivers = [RayDriver(c, None, None, Stopper(), learner, run, 2) for run, c in enumerate(run_configs(config))]
    run_dirs = [tmp_path / "runs" / str(k) for k in range(2)]
    for driver, run_dir, steps in zip(drivers, run_dirs, (600, 650), strict=True):
        run_dir.mkdir(parents=True)
        driver.record = RunRecord(run_dir, progress(0))
        driver.record.update(progress(steps, updates=steps // 3))
    record_failures(drivers, tmp_path, run_dirs, CapacityError("every rollout actor has been gone"))
    job = json.loads((tmp_path / "final_stats.json").read_text())
    assert (job["exit_code"], [r["env_steps"] for r in job["runs"]]) == (3, [600, 650])
    assert json.loads((run_dirs[1] / "final_stats.json").read_text())["updates"] == 216


def test_every_header_in_is_routed_in_one_turn_not_only_the_first_listed(monkeypatch) -> None:
    """Three runs' headers, two of them in: both are taken (one per turn, in list order, starved the last runs)."""
    arrived: list[str] = []
    asked: list[tuple] = []

    def wait(refs, num_returns, timeout):
        asked.append((len(refs), num_returns, timeout))
        ready = [ref for ref in refs if ref in arrived]
        return ready[:num_returns], [ref for ref in refs if ref not in ready[:num_returns]]

    monkeypatch.setattr(ray_driver.ray, "wait", wait)
    refs = ["run 0 header", "run 1 header", "run 2 header"]
    assert ray_driver.headers_in(refs) == [] and asked == [(3, 1, 1.0)]  # none within the second: nothing to route
    arrived += ["run 2 header", "run 1 header"]
    asked.clear()
    assert ray_driver.headers_in(refs) == ["run 1 header", "run 2 header"]
    assert asked == [(3, 1, 1.0), (3, 3, 0)]  # waits for the first, then takes all that are in without waiting
    assert ray_driver.headers_in([]) == []
