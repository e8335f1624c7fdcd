"""Several runs trained by one learner (``train.parallel_runs``): each run's updates, statistics, rollbacks and
weights are those it makes alone (the same samples, flags and counts; the numbers to float32 rounding: a stack's
products round differently from one run's)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner.parallel import JointTrainer, may_train_alone, time_to_train
from learner.safety import NonFiniteStop, RollbackToLastGood, Safety, SafetyConfig, Stop
from learner.service import LearnerService, Schedule
from tests.learner.helpers import RUN_ALONE_TOLERANCE, make_fragment, make_learner, with_config
from tests.learner.test_safety import one_shot_nan_at

SAFETY = SafetyConfig(reward_scale_factor=1.0, lr_factor=1.0)
SCHEDULE = Schedule(warmup_steps=0, update_to_data=1.0, block_updates=5, broadcast_every=5, batch_size=8)
RUNS = [(0, with_config(lr=1e-3)), (1, with_config(lr=3e-4)), (2, with_config(lr=1e-3, reward_scale=0.1))]
"""(seed, learner config) of three runs: different seeds, a learning rate and a reward scale of a small grid."""


def make_services(schedules: list[Schedule] | None = None) -> list[LearnerService]:
    schedules = schedules or [SCHEDULE] * len(RUNS)
    return [
        LearnerService(make_learner(config, seed=seed), schedule, safety=Safety(SAFETY, RollbackToLastGood(SAFETY), ""))
        for (seed, config), schedule in zip(RUNS, schedules, strict=True)
    ]


def state(service: LearnerService) -> torch.Tensor:
    """Networks, targets, optimizer moments and log alpha, flat."""
    return torch.cat([t.detach().reshape(-1) for t in service.learner.sac.state_tensors()])


def train(services: list[LearnerService], joint: bool, rounds: int = 4) -> list[list]:
    """Every run ingests its own fragments (a different stream per run); the weight versions each round published
    (gated), by run."""
    trainer = JointTrainer(services) if joint else None
    published: list[list] = [[] for _ in services]
    for seq in range(1, rounds + 1):
        for k, service in enumerate(services):
            service.ingest(make_fragment(steps=3 + seq, envs=2, seq=seq, seed=100 * k + seq))
        weights = trainer.train() if trainer else [service.train() for service in services]
        for k, w in enumerate(weights):
            published[k].append(None if w is None else w.version)
    return published


def assert_same_runs(joint: list[LearnerService], alone: list[LearnerService], same_blocks: bool = True) -> None:
    for together, by_itself in zip(joint, alone, strict=True):
        assert together.learner.updates_done == by_itself.learner.updates_done
        torch.testing.assert_close(state(together), state(by_itself), **RUN_ALONE_TOLERANCE)
        if same_blocks:  # the same updates cut into the same blocks: the same block statistics
            mine, theirs = dataclasses.asdict(together.last_stats), dataclasses.asdict(by_itself.last_stats)
            assert mine == pytest.approx(theirs, rel=1e-4, abs=1e-6)
        assert together.safety.counts == by_itself.safety.counts


def test_runs_trained_together_make_exactly_the_updates_they_make_alone():
    joint, alone = make_services(), make_services()
    published = train(joint, joint=True)
    assert published == train(alone, joint=False)
    assert_same_runs(joint, alone)
    # 8 + 10 + 12 + 14 transitions at UTD 1: 44 updates each, a broadcast each round (gated, checksummed)
    assert [s.learner.updates_done for s in joint] == [44, 44, 44]
    assert [w for w in published[0] if w] == [1, 2, 3, 4]
    assert len({state(s).sum().item() for s in joint}) == 3  # three different runs, not one run three times


def test_a_run_that_owes_more_updates_finishes_them_alone():
    """Run 1 at UTD 2: the lockstep blocks cover what every run owes; run 1's extra updates run by themselves."""
    schedules = [SCHEDULE, dataclasses.replace(SCHEDULE, update_to_data=2.0), SCHEDULE]
    joint, alone = make_services(schedules), make_services(schedules)
    assert train(joint, joint=True) == train(alone, joint=False)
    assert_same_runs(joint, alone, same_blocks=False)  # round 1: run 1 owes 16, 5 + 3 with the others, 5 + 3 alone
    assert [s.learner.updates_done for s in joint] == [44, 88, 44]


def test_a_non_finite_update_rolls_back_only_its_own_run():
    joint, alone = make_services(), make_services()
    for services in (joint, alone):
        services[1].learner.sac.grad_hook = one_shot_nan_at(7)
    train(joint, joint=True)
    train(alone, joint=False)
    assert_same_runs(joint, alone)
    assert [s.safety.counts["rollbacks"] for s in joint] == [0, 1, 0]
    assert [s.safety.counts["nan_blocks"] for s in joint] == [0, 1, 0]
    assert all(torch.isfinite(state(s)).all() for s in joint)


def recorded(trainer: JointTrainer, services: list[LearnerService]) -> list:
    """The order of the trainer's joint launches and the runs' reads, as it happens."""
    events: list = []
    launch = trainer.launch

    def launch_recorded():
        block = launch()
        if block is not None:
            events.append("launch")
        return block

    def read_recorded(k: int, finish):
        def read(part, ahead):
            events.append(("read", k))
            return finish(part, ahead)

        return read

    trainer.launch = launch_recorded
    for k, service in enumerate(services):
        service.finish = read_recorded(k, service.finish)
    return events


def test_the_next_joint_block_runs_while_the_host_reads_the_one_before():
    """Two joint blocks in flight (``learner.overlap_blocks``): every read but the last block's has the next block
    launched already; the runs end where they end one block at a time."""
    services, one_at_a_time = make_services(), make_services()
    for service in one_at_a_time:
        service.blocks_in_flight = 1
    for runs in (services, one_at_a_time):
        for k, service in enumerate(runs):  # 20 updates each: 4 blocks of 5
            service.ingest(make_fragment(steps=10, envs=2, seq=1, seed=k))
    trainer = JointTrainer(services)
    events = recorded(trainer, services)
    trainer.train()
    reads = [("read", 0), ("read", 1), ("read", 2)]
    assert events == ["launch", "launch", *reads, "launch", *reads, "launch", *reads, *reads]
    JointTrainer(one_at_a_time).train()
    assert_same_runs(services, one_at_a_time)


def test_a_run_stopped_on_a_non_finite_update_leaves_the_others_blocks_read_and_guarded():
    """Run 1's response is to stop: its later block in flight is undone; the other runs' blocks in flight are still
    read (statistics recorded, guarded), no block starts after the stop, and the stop is raised."""
    services = make_services()
    services[1].safety = Safety(SAFETY, Stop(), "")
    services[1].learner.sac.grad_hook = one_shot_nan_at(7)  # in run 1's second block
    for k, service in enumerate(services):
        service.ingest(make_fragment(steps=10, envs=2, seq=1, seed=k))
    trainer = JointTrainer(services)
    events = recorded(trainer, services)
    with pytest.raises(NonFiniteStop):
        trainer.train()
    reads = [("read", 0), ("read", 1), ("read", 2)]
    assert events == ["launch", "launch", *reads, "launch", *reads, ("read", 0), ("read", 2)]
    assert services[1].learner.updates_done == 7  # back to just before the bad update; the block after it undone
    assert [s.learner.updates_done for s in (services[0], services[2])] == [15, 15]  # three blocks each, all read
    assert [s.safety.counts["nan_blocks"] for s in services] == [0, 1, 0]
    assert all(torch.isfinite(state(s)).all() for s in services)


def test_a_stop_request_ends_the_lockstep_blocks():
    services = make_services()
    for k, service in enumerate(services):
        service.ingest(make_fragment(steps=8, envs=2, seq=1, seed=k))
    services[0].request_stop()
    JointTrainer(services).train()
    assert services[0].learner.updates_done == 0
    assert [s.learner.updates_done for s in services[1:]] == [16, 16]  # the others train alone what they owe


@pytest.mark.parametrize("count", [1, 3])
def test_a_single_run_needs_no_partner(count):
    services = make_services()[:count]
    for k, service in enumerate(services):
        service.ingest(make_fragment(steps=4, envs=2, seq=1, seed=k))
    JointTrainer(services).train()
    assert [s.learner.updates_done for s in services] == [8] * count


def test_a_joint_graph_that_cannot_be_captured_leaves_each_run_its_own(caplog):
    """On the CPU no graph can be captured: a trainer told to use one falls back to each run's own blocks."""
    joint, alone = make_services(), make_services()
    trainer = JointTrainer(joint)
    trainer.graphed = True  # as on CUDA
    for k, service in enumerate(joint):
        service.ingest(make_fragment(steps=4, envs=2, seq=1, seed=k))
    with caplog.at_level("WARNING", logger="learner.parallel"):
        trainer.train()
    assert not trainer.joint and "one CUDA graph for 3 runs failed (ValueError" in caplog.text
    for k, service in enumerate(alone):
        service.ingest(make_fragment(steps=4, envs=2, seq=1, seed=k))
        service.train()
    assert_same_runs(joint, alone)


def test_runs_fed_one_fragment_at_a_time_train_once_all_of_them_owe():
    patience = [100, 100, 100]
    assert not time_to_train([40, 0, 0], [True] * 3, patience)  # the others' fragments are on their way
    assert time_to_train([40, 40, 40], [True] * 3, patience)  # a lockstep block for all three
    assert time_to_train([40, 0, 40], [True, False, True], patience)  # run 1 has its budget: nobody waits for it
    assert time_to_train([101, 0, 0], [True] * 3, patience)  # run 0 waited long enough
    assert not time_to_train([0, 0, 0], [True] * 3, patience) and time_to_train([5], [True], [100])
    assert time_to_train([3, 0], [False, False], [100, 100])  # every budget spent: the last updates run


def test_what_a_run_owes_beyond_a_joint_block_waits_for_the_next_while_the_others_collect():
    """On Ray a run trains alone only when nobody else will owe again, or it has waited past its patience: a
    leftover that waits goes into the next joint block (no graph of its own to capture and compile meanwhile)."""
    patience = [100, 100, 100]
    assert may_train_alone([20, 0, 0], [True] * 3, patience)[0] is False
    assert may_train_alone([20, 0, 0], [True, False, False], patience)[0] is True  # the others are done
    assert may_train_alone([101, 0, 0], [True] * 3, patience)[0] is True  # waited long enough
    assert may_train_alone([5], [True], [100]) == [True]  # a single run has nobody to wait for
    services = make_services()
    for k, service in enumerate(services):  # run 0 owes 12 updates, the others 8
        service.ingest(make_fragment(steps=6 if k == 0 else 4, envs=2, seq=1, seed=k))
    trainer = JointTrainer(services)
    trainer.train(alone=[False, True, True])
    assert [s.learner.updates_done for s in services] == [8, 8, 8] and services[0].updates_due() == 4
    for k, service in enumerate(services):  # the next fragments: 8 more each; run 0 still 4 ahead of the others
        service.ingest(make_fragment(steps=4, envs=2, seq=2, seed=10 + k))
    trainer.train(alone=[False, False, False])
    assert [s.learner.updates_done for s in services] == [16, 16, 16] and services[0].updates_due() == 4
    trainer.train(alone=[True, False, False])  # the others' budgets spent, say: run 0 trains its 4 by itself
    assert [s.learner.updates_done for s in services] == [20, 16, 16] and services[0].updates_due() == 0
