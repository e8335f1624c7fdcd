"""The learner's Prometheus exporter: names, pre-initialised labels, values, serving, file_sd."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from learner.metrics import (
    METRICS,
    NAN_SOURCES,
    UPDATE_STATS_METRICS,
    MetricsConfig,
    MetricsExporter,
    MetricsPortInUseError,
    file_sd_document,
    mean_return,
    target_host,
    write_file_sd,
)
from learner.types import (
    CONTEXT_FALLBACK_REASONS,
    REJECTED_TRANSITION_REASONS,
    Fragment,
    UpdateStats,
)
from learner.weights import WEIGHT_REJECT_REASONS
from tests.config_errors import error_of

STATS = UpdateStats(
    updates=50, policy_grad_norm=3.25, q_grad_norm=7.5, q_mean=-1234.5, q_std=87.25, alpha=0.125,
    policy_loss=-2.5, q_loss=0.75, policy_clipped=3, q_clipped=11, nonfinite_loss=0, nonfinite_grad=2, nonfinite_q=1,
)  # fmt: skip


def samples(exporter: MetricsExporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape of ``exporter`` as {(name, sorted labels): value} (``_created`` left out)."""
    text = exporter.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def value(exporter: MetricsExporter, name: str, **labels: str) -> float:
    return samples(exporter)[(name, tuple(sorted(labels.items())))]


def fragment(k: int = 4, n: int = 3, version: int = 5, fallbacks=None, rejected=None) -> Fragment:
    zeros = np.zeros((k, n, 1), np.float32)
    flags = np.zeros((k, n), bool)
    return Fragment(
        obs=zeros, context=zeros, action=zeros, reward=np.zeros((k, n), np.float32), next_obs=zeros,
        next_context=zeros, terminated=flags, truncated=flags, valid=~flags, actor_id=0, incarnation=0, seq=0,
        weights_version=version, context_fallbacks=fallbacks or {}, rejected=rejected or {},
    )  # fmt: skip


@pytest.fixture
def exporter() -> MetricsExporter:
    return MetricsExporter(MetricsConfig(port=0, bind_address="127.0.0.1"), run="r1", version="0.1.0")


def test_every_update_stats_field_maps_to_one_exported_metric() -> None:
    names = [f.name for f in dataclasses.fields(UpdateStats)]
    assert set(UPDATE_STATS_METRICS) == set(names)
    targets = [(m.metric, m.labels) for m in UPDATE_STATS_METRICS.values()]
    assert len(set(targets)) == len(targets)  # no two fields share a series
    exported = {spec.name for spec in METRICS}
    assert {m.metric for m in UPDATE_STATS_METRICS.values()} <= exported
    for m in UPDATE_STATS_METRICS.values():
        assert m.op == ("inc" if m.metric.endswith("_total") else "set"), m


def test_labelled_counters_start_at_zero_for_every_known_label_value(exporter: MetricsExporter) -> None:
    scraped = samples(exporter)
    expected = {
        "dmsac_grad_clipped_total": ("network", ("policy", "q")),
        "dmsac_nan_events_total": ("source", NAN_SOURCES),
        "dmsac_context_fallbacks_total": ("reason", CONTEXT_FALLBACK_REASONS),
        "dmsac_transitions_rejected_total": ("reason", REJECTED_TRANSITION_REASONS),
        "dmsac_weights_rejected_total": ("reason", WEIGHT_REJECT_REASONS),
    }
    for name, (label, values) in expected.items():
        series = {dict(labels)[label]: v for (n, labels), v in scraped.items() if n == name}
        assert series == dict.fromkeys(values, 0.0), name
    assert NAN_SOURCES == ("loss", "grad", "q", "params", "weights")
    assert len([k for k in scraped if k[0] == "dmsac_nan_events_total"]) == 5
    for name in (
        "dmsac_env_steps_total",
        "dmsac_learner_updates_total",
        "dmsac_rollbacks_total",
        "dmsac_actor_restarts_total",
    ):
        assert scraped[(name, ())] == 0.0
    assert scraped[("dmsac_build_info", (("run", "r1"), ("version", "0.1.0")))] == 1.0


def test_update_stats_are_exported_as_gauges_and_summed_counters(exporter: MetricsExporter) -> None:
    exporter.record_update_stats(STATS)
    exporter.record_update_stats(dataclasses.replace(STATS, policy_grad_norm=9.0, q_mean=-2000.0, nonfinite_q=0))
    assert value(exporter, "dmsac_policy_grad_norm") == 9.0
    assert value(exporter, "dmsac_q_grad_norm") == 7.5
    assert value(exporter, "dmsac_q_mean") == -2000.0
    assert value(exporter, "dmsac_q_std") == 87.25
    assert value(exporter, "dmsac_alpha") == 0.125
    assert value(exporter, "dmsac_policy_loss") == -2.5
    assert value(exporter, "dmsac_q_loss") == 0.75
    assert value(exporter, "dmsac_learner_updates_total") == 100.0
    assert value(exporter, "dmsac_grad_clipped_total", network="policy") == 6.0
    assert value(exporter, "dmsac_grad_clipped_total", network="q") == 22.0
    assert value(exporter, "dmsac_nan_events_total", source="loss") == 0.0
    assert value(exporter, "dmsac_nan_events_total", source="grad") == 4.0
    assert value(exporter, "dmsac_nan_events_total", source="q") == 1.0


def test_a_nan_statistic_is_exported_as_nan(exporter: MetricsExporter) -> None:
    exporter.record_update_stats(dataclasses.replace(STATS, q_mean=math.nan, q_grad_norm=math.inf))
    assert math.isnan(value(exporter, "dmsac_q_mean"))
    assert value(exporter, "dmsac_q_grad_norm") == math.inf


def test_fragment_figures_episode_window_and_policy_lag(exporter: MetricsExporter) -> None:
    exporter.record_fragment(fragment(fallbacks={"nan": 2, "map_nonfinite": 1}, rejected={"reward_nonfinite": 1}), 8)
    exporter.record_fragment(fragment(k=2, n=5, version=8, fallbacks={"nan": 3, "inf": 0}), learner_version=8)
    assert value(exporter, "dmsac_env_steps_total") == 4 * 3 + 2 * 5
    assert value(exporter, "dmsac_context_fallbacks_total", reason="nan") == 5.0
    assert value(exporter, "dmsac_context_fallbacks_total", reason="map_nonfinite") == 1.0
    assert value(exporter, "dmsac_context_fallbacks_total", reason="inf") == 0.0
    assert value(exporter, "dmsac_transitions_rejected_total", reason="reward_nonfinite") == 1.0
    assert value(exporter, "dmsac_policy_lag_versions") == 0.0  # the second fragment ran version 8
    exporter.record_fragment(fragment(version=5), learner_version=8)
    assert value(exporter, "dmsac_policy_lag_versions") == 3.0
    exporter.set_episode_return([-10.0, -20.0, -36.0])
    assert value(exporter, "dmsac_episode_return") == pytest.approx(-22.0)
    exporter.set_episode_return([])  # an empty window keeps the last mean
    assert value(exporter, "dmsac_episode_return") == pytest.approx(-22.0)
    assert math.isnan(mean_return([]))
    with pytest.raises(ValueError, match="reason='bogus'"):
        exporter.record_fragment(fragment(fallbacks={"bogus": 1}))


def test_learner_side_events_and_values_in_force(exporter: MetricsExporter) -> None:
    exporter.set_in_force(0.0005, {"policy": 1e-5, "q": 3e-5}, 5.0)
    exporter.nan_event("params")
    exporter.nan_event("weights", 2)
    exporter.weights_rejected("probe")
    exporter.rollback()
    exporter.rollback()
    exporter.set_weights_version(42)
    exporter.set_checkpoint(10_000, timestamp=1_700_000_000.0)
    exporter.set_last_good(9_000)
    exporter.set_actors(3)
    exporter.actor_restarted()
    exporter.set_replay_size(123_456)
    exporter.set_build_info("0.2.0", "run-b")
    got = samples(exporter)
    assert value(exporter, "dmsac_reward_scale") == 0.0005
    assert value(exporter, "dmsac_learning_rate", network="policy") == 1e-5
    assert value(exporter, "dmsac_learning_rate", network="q") == 3e-5
    assert value(exporter, "dmsac_grad_clip_norm") == 5.0
    assert value(exporter, "dmsac_nan_events_total", source="params") == 1.0
    assert value(exporter, "dmsac_nan_events_total", source="weights") == 2.0
    assert value(exporter, "dmsac_weights_rejected_total", reason="probe") == 1.0
    assert value(exporter, "dmsac_weights_rejected_total", reason="shape") == 0.0
    assert value(exporter, "dmsac_rollbacks_total") == 2.0
    assert value(exporter, "dmsac_weights_version") == 42.0
    assert value(exporter, "dmsac_checkpoint_step") == 10_000.0
    assert value(exporter, "dmsac_checkpoint_last_success_timestamp_seconds") == 1_700_000_000.0
    assert value(exporter, "dmsac_last_good_checkpoint_step") == 9_000.0
    assert value(exporter, "dmsac_actors_alive") == 3.0
    assert value(exporter, "dmsac_actor_restarts_total") == 1.0
    assert value(exporter, "dmsac_replay_size") == 123_456.0
    assert [k for k in got if k[0] == "dmsac_build_info"] == [
        ("dmsac_build_info", (("run", "run-b"), ("version", "0.2.0")))
    ]
    with pytest.raises(ValueError, match="network='pi'"):
        exporter.set_in_force(0.001, {"pi": 1e-4}, 5.0)
    with pytest.raises(ValueError, match="source='disk'"):
        exporter.nan_event("disk")


def test_staleness_clock_starts_with_the_exporter() -> None:
    import time

    before = time.time()
    exporter = MetricsExporter(MetricsConfig(port=0))
    after = time.time()
    assert before <= value(exporter, "dmsac_checkpoint_last_success_timestamp_seconds") <= after


def test_start_serves_the_registry_on_an_ephemeral_port(exporter: MetricsExporter) -> None:
    host, port = exporter.start()
    try:
        assert host == "127.0.0.1" and port > 0
        exporter.record_update_stats(STATS)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        scraped = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
        assert scraped["dmsac_policy_grad_norm"] == 3.25
        assert scraped["dmsac_learner_updates_total"] == 50.0
        assert "python_gc_objects_collected_total" not in scraped  # own registry, not the global one
    finally:
        exporter.stop()


def test_a_taken_port_names_the_port_and_the_config_key() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        exporter = MetricsExporter(MetricsConfig(port=port, bind_address="127.0.0.1"))
        with pytest.raises(MetricsPortInUseError) as err:
            exporter.start()
    assert f"metrics port {port} " in str(err.value)
    assert "metrics.port" in str(err.value)


def test_metrics_config_checks() -> None:
    assert MetricsConfig() == MetricsConfig(enabled=True, port=9400, bind_address="0.0.0.0")
    assert error_of(MetricsConfig, port=70000).key == "port"
    assert error_of(MetricsConfig, bind_address=" ").key == "bind_address"


def test_root_config_loads_the_metrics_section(tmp_path) -> None:
    from cluster.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("metrics:\n  port: 0\n  bind_address: 127.0.0.1\n")
    assert load_config(path).metrics == MetricsConfig(port=0, bind_address="127.0.0.1")
    with pytest.raises(ConfigError, match=r"metrics\.port: must be >= 0 \(got -1\)"):
        load_config(path, ["metrics.port=-1"])


def test_file_sd_target_file(tmp_path) -> None:
    path = write_file_sd(tmp_path / "run" / "prometheus_targets.json", "127.0.0.1", 9400, {"run": "r1"})
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:9400"], "labels": {"run": "r1"}}]
    write_file_sd(path, "10.0.0.7", 9401)  # replaced atomically, no temp file left behind
    assert json.loads(path.read_text()) == [{"targets": ["10.0.0.7:9401"], "labels": {}}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["prometheus_targets.json"]
    assert file_sd_document("::1", 9400)[0]["targets"] == ["[::1]:9400"]
    assert target_host("0.0.0.0", "10.1.2.3") == "10.1.2.3"
    assert target_host("127.0.0.1", "10.1.2.3") == "127.0.0.1"
    with pytest.raises(ValueError, match="__meta"):
        file_sd_document("h", 1, {"__meta": "x"})
