"""TensorBoard scalars: the seed's tags, read back with TensorBoard's own event reader, equal to the gauges."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from learner.metrics import MetricsExporter
from learner.service import LearnerService, Schedule
from learner.tensorboard import EPISODE_RETURN_TAG, TRAIN_TAGS, TensorBoardLog
from learner.types import EpisodeSummary, UpdateStats
from tests.learner.helpers import SEED_TAGS, make_fragment, make_learner, read_back


def stats(q_mean: float) -> UpdateStats:
    return UpdateStats(updates=5, policy_grad_norm=1.5, q_grad_norm=2.5, q_mean=q_mean, q_std=0.25, alpha=0.5,
                       policy_loss=-1.0, q_loss=0.125, policy_clipped=0, q_clipped=1, nonfinite_loss=0,
                       nonfinite_grad=0, nonfinite_q=0)  # fmt: skip


def test_the_seed_tags_at_most_once_per_interval(tmp_path: Path):
    board = TensorBoardLog(tmp_path, every_updates=10)
    for updates, q_mean in ((5, -1.0), (8, -2.0), (10, -3.0), (25, -4.0), (29, -5.0), (30, float("nan"))):
        board.record(stats(q_mean), lambda u=updates: {"rollbacks": u // 10}, updates)
    board.episode_return(-150.5, env_steps=400)
    board.episode_return(float("nan"), env_steps=500)  # no episode yet: no point
    board.close()
    scalars = read_back(tmp_path)
    assert set(scalars) >= SEED_TAGS and set(TRAIN_TAGS.values()) <= set(scalars)
    assert len(TRAIN_TAGS) == 7  # the gauges of UpdateStats; counts and flags go to Prometheus counters
    steps, values = zip(*scalars["train/q_mean"], strict=True)
    assert steps == (5, 10, 25, 30) and values[:3] == (-1.0, -3.0, -4.0) and math.isnan(values[3])
    assert scalars["train/q_std"] == [(5, 0.25), (10, 0.25), (25, 0.25), (30, 0.25)]
    assert scalars["safety/rollbacks"] == [(5, 0.0), (10, 1.0), (25, 2.0), (30, 3.0)]
    assert scalars[EPISODE_RETURN_TAG] == [(400, -150.5)]


def test_every_value_equals_its_prometheus_gauge_for_the_same_update(tmp_path: Path):
    exporter = MetricsExporter()
    service = LearnerService(make_learner(), Schedule(0, 1.0, 5, 10_000, 8), metrics=exporter,
                             board=TensorBoardLog(tmp_path, every_updates=1))  # fmt: skip
    seen = []
    for seq in (1, 2, 3):
        fragment = make_fragment(steps=8, envs=2, seq=seq, seed=seq)
        episodes = (EpisodeSummary(-100.0 * seq, 8),)
        service.step(dataclasses.replace(fragment, episodes=episodes))
        gauges = {tag: exporter.registry.get_sample_value(f"dmsac_{name}") for name, tag in TRAIN_TAGS.items()}
        seen.append((service.learner.updates_done, gauges, exporter.registry.get_sample_value("dmsac_episode_return")))
    service.close()
    scalars = read_back(tmp_path)
    for updates, gauges, _ in seen:  # the last point written at or before each step's end is that step's gauge
        for tag, gauge in gauges.items():
            step, value = [p for p in scalars[tag] if p[0] <= updates][-1]
            assert step == updates and value == np.float32(gauge), tag  # event files hold float32
    assert [v for _, v in scalars[EPISODE_RETURN_TAG]] == [r for _, _, r in seen] == [-100.0, -150.0, -200.0]
    assert {tag for tag in scalars if tag.startswith("safety/")} >= {"safety/nan_blocks", "safety/rollbacks",
                                                                        "safety/obs_nonfinite"}  # fmt: skip
