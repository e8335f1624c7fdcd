"""The wire types: fragment identity and sizes, the statistics table and its vector layout."""

from __future__ import annotations

import dataclasses
import math

import pytest

from learner.types import (
    COUNT_FIELDS,
    FLAG_FIELDS,
    STAT_FIELDS,
    STATS,
    EpisodeSummary,
    UpdateStats,
    stat_index,
)
from tests.learner.helpers import make_fragment

GAUGES = ("policy_grad_norm", "q_grad_norm", "q_mean", "q_std", "alpha", "policy_loss", "q_loss")


def test_fragment_sizes_and_key():
    fragment = make_fragment(steps=4, envs=3, seq=7, actor_id=2, incarnation=5)
    assert (fragment.num_steps, fragment.num_envs, fragment.env_steps) == (4, 3, 12)
    assert fragment.key == (2, 5, 7)
    assert fragment.episodes == () and fragment.rejected == {} and fragment.context_fallbacks == {}


def test_episode_summary_defaults():
    episode = EpisodeSummary(episode_return=-3.5, length=200)
    assert math.isnan(episode.mean_abs_speed_error) and episode.cut_short is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        episode.length = 1


def test_the_statistics_vector_layout_is_gauges_then_counts_then_flags():
    assert (*GAUGES, "policy_clipped", "q_clipped", "nonfinite_loss", "nonfinite_grad", "nonfinite_q") == STAT_FIELDS
    assert FLAG_FIELDS == ("nonfinite_loss", "nonfinite_grad", "nonfinite_q")
    assert {"policy_clipped", "q_clipped", *FLAG_FIELDS} == COUNT_FIELDS
    assert [stat_index(name) for name in ("policy_grad_norm", "alpha", "q_clipped", "nonfinite_q")] == [0, 4, 8, 11]
    assert "updates" in STATS and "updates" not in STAT_FIELDS


def test_stats_name_their_metric_and_labels():
    assert (STATS["updates"].kind, STATS["updates"].metric) == ("count", "dmsac_learner_updates_total")
    assert STATS["q_clipped"].labels == (("network", "q"),) and STATS["q_clipped"].metric == "dmsac_grad_clipped_total"
    assert STATS["nonfinite_grad"].labels == (("source", "grad"),) and STATS["nonfinite_grad"].kind == "flag"
    assert all(STATS[name].nan_alert and STATS[name].panel for name in GAUGES)
    assert not any(STATS[name].nan_alert for name in COUNT_FIELDS)


def test_from_vector_keeps_gauges_as_floats_rounds_counts_and_reads_finite_from_the_flags():
    values = [1.5, 2.5, -3.0, 0.25, 0.1, 0.0, 7.0, 2.6, 0.0, 0.0, 0.0, 0.0]
    stats = UpdateStats.from_vector(values, updates=5)
    assert stats.as_dict() == {
        "updates": 5, "policy_grad_norm": 1.5, "q_grad_norm": 2.5, "q_mean": -3.0, "q_std": 0.25, "alpha": 0.1,
        "policy_loss": 0.0, "q_loss": 7.0, "policy_clipped": 3, "q_clipped": 0,
        "nonfinite_loss": 0, "nonfinite_grad": 0, "nonfinite_q": 0,
    }  # fmt: skip
    assert isinstance(stats.policy_clipped, int) and stats.finite
    flagged = UpdateStats.from_vector([*values[:-1], 1.0], updates=5)
    assert flagged.nonfinite_q == 1 and not flagged.finite
