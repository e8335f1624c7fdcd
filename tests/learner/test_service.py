"""The learner service loop: the update schedule, ingestion bookkeeping, broadcasts, stops, checkpoints, progress."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from learner.checkpoint import Checkpointer
from learner.metrics import MetricsExporter
from learner.service import LearnerService, Schedule
from learner.types import EpisodeSummary
from tests.learner.helpers import make_fragment, make_learner

SCHEDULE = Schedule(warmup_steps=0, update_to_data=1.0, block_updates=5, broadcast_every=5, batch_size=8,
                    checkpoint_every=0)  # fmt: skip


def make_service(schedule: Schedule = SCHEDULE, checkpointer=None, metrics=None) -> LearnerService:
    return LearnerService(make_learner(), schedule, checkpointer=checkpointer, metrics=metrics)


class DeviceScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``.item()``, indexing by a 0-d tensor): on CUDA each one waits
    for every kernel queued before it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def metric(exporter: MetricsExporter, name: str, **labels) -> float:
    return exporter.registry.get_sample_value(name, labels or None)


def test_a_step_reports_the_statistics_of_every_block_it_ran():
    service = make_service()
    for seq in (1, 2):  # 16 transitions a step: 16 updates due, in blocks of at most 5
        report = service.step(make_fragment(steps=8, envs=2, seq=seq, seed=seq))
        assert [b.updates for b in report.blocks] == [5, 5, 5, 1]
        assert report.blocks[-1] == service.last_stats
    assert service.learner.updates_done == 32


def test_training_reads_no_device_value_until_it_reads_a_block():
    """With two blocks in flight the device runs the next block while the host reads the one before; a host read of
    a device value as a block is launched (it was ``summarize_block`` indexing by a 0-d tensor) waits for that block
    too and drains the queue each block (93.6 % of the learner's rate in its service on an H200). Without a
    broadcast due, training 16 updates reads nothing but the blocks' pinned statistics (host tensors)."""
    service = make_service(dataclasses.replace(SCHEDULE, broadcast_every=10_000))
    service.ingest(make_fragment(steps=8, envs=2, seq=1))
    with DeviceScalarReads() as reads:
        service.train()
    assert service.learner.updates_done == 16 and [b.updates for b in service._step_blocks] == [5, 5, 5, 1]
    assert reads.count == 0


def test_updates_due_hand_computed():
    """utd 0.5 after a warmup of 100 steps: int(0.5 (env_steps - 100)) minus those done, once a batch is held."""
    schedule = Schedule(warmup_steps=100, update_to_data=0.5, block_updates=5, broadcast_every=10, batch_size=8)
    assert schedule.updates_due(99, 0, 1000) == 0  # still warming up
    assert schedule.updates_due(120, 0, 7) == 0  # not a full batch yet
    assert [schedule.updates_due(120, done, 1000) for done in (0, 3, 10, 12)] == [10, 7, 0, 0]
    assert [schedule.updates_due(steps, 0, 8) for steps in (100, 101, 103)] == [0, 0, 1]


def test_ingest_counts_duplicates_cut_short_episodes_and_rejections_by_reason():
    exporter = MetricsExporter()
    service = make_service(metrics=exporter)
    service.learner.weights_version = 3
    episodes = (EpisodeSummary(-10.0, 4), EpisodeSummary(-2.0, 2, cut_short=True))
    first = dataclasses.replace(make_fragment(seq=1), episodes=episodes, rejected={"obs_nonfinite": 2},
                                context_fallbacks={"nan": 1}, weights_version=1)  # fmt: skip
    assert service.ingest(first) == 8 and service.policy_lag == 2
    assert service.ingest(first) == 0  # the same fragment again
    second = dataclasses.replace(make_fragment(seq=2), rejected={"obs_nonfinite": 3, "reward_nonfinite": 1})
    assert service.ingest(second) == 8
    assert list(service.returns) == [-10.0]  # a cut-short return is partial: not in the window
    counters = service.counters
    assert (service.episodes, counters["episodes_cut_short"], counters["fragments_duplicate"]) == (2, 1, 1)
    assert service.rejected == {"obs_nonfinite": 5, "reward_nonfinite": 1, "action_nonfinite": 0}
    assert service.fallbacks == {"nan": 1, "inf": 0, "map_nonfinite": 0, "encoder_nonfinite": 0}
    assert metric(exporter, "dmsac_fragments_duplicate_total") == 1.0
    assert metric(exporter, "dmsac_transitions_rejected_total", reason="obs_nonfinite") == 5.0


def test_broadcasts_every_5_updates_and_a_rejected_one_is_counted_not_published():
    exporter = MetricsExporter()
    service = make_service(metrics=exporter)
    report = service.step(make_fragment(steps=4, envs=2, seq=1))  # 8 updates
    assert report.weights.version == 1 and metric(exporter, "dmsac_weights_version") == 1.0
    service.learner.export_hook = lambda tensors: {k: v.fill_(float("nan")) for k, v in tensors.items()}
    report = service.step(make_fragment(steps=4, envs=2, seq=2))  # 8 more: due again, refused by the gate
    assert report.weights is None and service.counters["weights_rejected"] == 1
    assert service.learner.weights_version == 1 and service.learner.updates_done == 16
    assert metric(exporter, "dmsac_weights_rejected_total", reason="nonfinite") == 1.0
    assert metric(exporter, "dmsac_nan_events_total", source="weights") == 1.0


def test_after_a_stop_request_a_step_only_ingests():
    service = make_service()
    service.step(make_fragment(steps=4, envs=2, seq=1))
    service.request_stop()
    service.request_stop()  # the first request's update count stays
    report = service.step(make_fragment(steps=4, envs=2, seq=2))
    assert report.accepted and report.weights is None and report.blocks == ()
    assert (service.learner.updates_done, len(service.learner.replay)) == (8, 16)
    assert report.progress.stop_requested_at_update == 8


def test_a_checkpoint_is_written_each_time_env_steps_cross_a_multiple(tmp_path: Path):
    assert make_service().checkpoint() is None and not make_service().checkpoint_due()  # no checkpointer
    schedule = dataclasses.replace(SCHEDULE, checkpoint_every=16)
    service = make_service(schedule, Checkpointer(tmp_path, keep_last=5))
    written = []
    for seq in range(1, 6):  # 8 environment steps each: 8, 16, 24, 32, 40
        service.step(make_fragment(steps=4, envs=2, seq=seq, seed=seq))
        written.append(service.last_checkpoint_step)
    assert written == [-1, 16, 16, 32, 32] and service.counters["checkpoints"] == 2
    assert [e.name for e in service.checkpointer.entries()] == ["step_000000016", "step_000000032"]


def test_a_checkpoint_restores_the_services_counters_and_window(tmp_path: Path):
    first = make_service(checkpointer=Checkpointer(tmp_path, keep_last=2))
    fragment = dataclasses.replace(make_fragment(seq=1), episodes=(EpisodeSummary(-4.0, 4), EpisodeSummary(-6.0, 4)),
                                   rejected={"reward_nonfinite": 2}, context_fallbacks={"inf": 3})  # fmt: skip
    first.step(fragment)
    loaded = first.checkpointer.load(first.checkpoint())
    second = make_service()
    second.load_full_state(loaded.state, loaded.replay)
    assert list(second.returns) == [-4.0, -6.0] and second.episodes == 2
    assert first.counters["checkpoints"] == 1
    assert second.counters == {  # the checkpoint it resumed from counts
        "weights_rejected": 0, "fragments_duplicate": 0, "episodes_cut_short": 0, "learner_restarts": 0,
        "checkpoints": 1,
    }  # fmt: skip
    assert second.rejected["reward_nonfinite"] == 2 and second.fallbacks["inf"] == 3
    assert (second.learner.env_steps, second.learner.updates_done, second.last_checkpoint_step) == (8, 8, 8)
    assert len(second.learner.replay) == 8 and second.progress().recent_return == -5.0


def test_progress_reports_the_update_to_data_ratio_after_warmup_and_the_recent_return():
    service = make_service(dataclasses.replace(SCHEDULE, warmup_steps=4))
    assert math.isnan(service.progress().recent_return)
    episodes = (EpisodeSummary(-1.0, 3), EpisodeSummary(-2.0, 5))
    service.ingest(dataclasses.replace(make_fragment(seq=1), episodes=episodes))
    service.train()
    progress = service.progress()
    assert (progress.env_steps, progress.updates, progress.update_to_data) == (8, 4, 1.0)  # 4 updates / (8 - 4)
    assert progress.recent_return == pytest.approx(-1.5) and progress.replay_size == 8


def test_a_replacement_learner_counts_restarts_on_and_publishes_above_the_floor():
    exporter = MetricsExporter()
    service = make_service(metrics=exporter)
    service.continue_after_restart(restarts=2, weights_floor=10)
    service.continue_after_restart(restarts=1, weights_floor=3)  # never backwards
    assert service.counters["learner_restarts"] == 2 and service.learner.weights_version == 10
    assert metric(exporter, "dmsac_learner_restarts_total") == 2.0
    assert service.broadcast().version == 11


def test_the_recent_return_is_the_windows_mean_and_null_in_checkpoint_meta_before_any_episode():
    service = make_service()
    assert math.isnan(service.progress().recent_return) and service.metrics_summary()["recent_return"] is None
    service.returns.extend([1.0, 2.0, 4.0])
    assert service.progress().recent_return == pytest.approx(7 / 3) == service.metrics_summary()["recent_return"]


def trained_with(overlap: bool, safety=None, nan_at: int | None = None) -> tuple[LearnerService, list]:
    """Three fragments' training of one service, blocks overlapped or one at a time; the blocks each step reported."""
    from learner.safety import RollbackToLastGood, Safety, SafetyConfig
    from tests.learner.test_safety import one_shot_nan_at

    safety = safety or SafetyConfig()
    service = LearnerService(make_learner(), SCHEDULE, safety=Safety(safety, RollbackToLastGood(safety)),
                             overlap_blocks=overlap)  # fmt: skip
    if nan_at is not None:
        service.learner.sac.grad_hook = one_shot_nan_at(nan_at)
    blocks = []
    for seq in (1, 2, 3):
        blocks.append(service.step(make_fragment(steps=8, envs=2, seq=seq, seed=seq)).blocks)
    return service, blocks


@pytest.mark.parametrize("case", ["plain", "rollback", "warning_remedy"])
def test_overlapped_blocks_make_exactly_the_updates_of_blocks_one_at_a_time(case):
    """The next block launched before the last is read: undone when reading the last changes its start (a NaN's
    rollback, a remedy's new rates), so every update, statistic and counter equals the one-at-a-time run."""
    from learner.safety import SafetyConfig, WarningSignsConfig

    safety = None
    if case == "warning_remedy":  # every gradient norm is a warning sign; held 10 updates: the remedies act
        safety = SafetyConfig(warnings=WarningSignsConfig(grad_norm_fraction=1e-6), on_warning="remedy",
                              warning_sustain_updates=10)  # fmt: skip
    nan_at = 12 if case == "rollback" else None
    (overlapped, blocks), (alone, alone_blocks) = (trained_with(flag, safety, nan_at) for flag in (True, False))
    assert repr(blocks) == repr(alone_blocks)  # every block's statistics in order, exact (a NaN block's too)
    assert overlapped.learner.updates_done == alone.learner.updates_done == 48
    for a, b in zip(overlapped.learner.sac.state_tensors(), alone.learner.sac.state_tensors(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(overlapped.learner.replay.generator.get_state(), alone.learner.replay.generator.get_state())
    assert torch.equal(overlapped.learner.sac.noise.get_state(), alone.learner.sac.noise.get_state())
    assert overlapped.learner.rates() == alone.learner.rates()
    assert overlapped.safety.counts == alone.safety.counts
    expected = {"plain": (0, 0), "rollback": (1, 0), "warning_remedy": (0, 2)}[case]
    assert (alone.safety.counts["rollbacks"], alone.safety.counts["warning_remedies"]) == expected
