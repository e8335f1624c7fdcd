"""Real Prometheus scrapes a live exporter fed hand-made figures: an alert fires, every panel query answers.

The target is an exporter instance (not a training run); the rules are rendered
with ``for: 0s`` and evaluated every second, so the test takes seconds. The
end-to-end test with a real training run on Ray reuses ``prom_helpers``.
"""

from __future__ import annotations

import dataclasses

import pytest

from cluster.alerts import AlertsConfig, render_rules
from cluster.config import Config
from cluster.dashboard import RATE, dashboard, panel_queries
from learner.metrics import TARGETS_FILE_NAME, MetricsConfig, MetricsExporter, write_file_sd
from learner.types import UpdateStats

from . import prom_helpers as ph

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ph.PROMETHEUS is None, reason="prometheus not installed (make promtool installs it)"),
]

HUGE_POLICY_GRAD = UpdateStats(
    updates=50, policy_grad_norm=1000.0, q_grad_norm=1.5, q_mean=-42.0, q_std=3.0, alpha=0.2,
    policy_loss=1.0, q_loss=0.5, policy_clipped=50, q_clipped=0, nonfinite_loss=0, nonfinite_grad=0, nonfinite_q=0,
)  # fmt: skip


def firing(url: str) -> dict[str, dict]:
    return {a["labels"]["alertname"]: a for a in ph.alerts(url) if a["state"] == "firing"}


def test_policy_grad_alert_fires_and_every_panel_query_answers(tmp_path) -> None:
    # DmsacLearnerDown keeps its 2 minutes: one scrape that times out (1 s here) on a busy machine marks the target down
    # and its series stale, which is not what this test is about; the queries below wait out such a gap.
    config = dataclasses.replace(Config(), alerts=AlertsConfig(sustain_for="0s"))
    exporter = MetricsExporter(MetricsConfig(port=0, bind_address="127.0.0.1"), run="live-test", version="test")
    exporter.set_in_force(0.001, {"policy": 3e-5, "q": 3e-5}, 5.0)
    exporter.set_actors(config.cluster.num_actors)
    exporter.set_replay_size(5000)
    exporter.set_checkpoint(1000)
    exporter.set_last_good(1000)
    host, port = exporter.start()
    run_dir = tmp_path / "run"
    write_file_sd(run_dir / TARGETS_FILE_NAME, host, port, {"run": "live-test"})
    prom_dir = ph.local_prometheus_dir(run_dir, render_rules(config))

    def feed() -> None:  # counters keep rising, as in a run that trains
        exporter.record_update_stats(HUGE_POLICY_GRAD)
        exporter.counter("dmsac_env_steps_total").inc(100)

    try:
        with ph.running_prometheus(prom_dir / "prometheus.yml", prom_dir / "data") as url:
            def near_clip() -> dict[str, dict] | None:  # one view of the alerts, read once
                now = firing(url)
                return now if "DmsacPolicyGradNormNearClip" in now else None

            alerts = ph.wait_until(near_clip, timeout=40, tick=feed)
            assert set(alerts) == {"DmsacPolicyGradNormNearClip"}  # the healthy figures stay quiet
            alert = alerts["DmsacPolicyGradNormNearClip"]
            assert float(alert["value"]) == 1000.0
            assert alert["labels"]["severity"] == "warning"
            assert alert["labels"]["instance"] == f"127.0.0.1:{port}"
            assert alert["labels"]["run"] == "live-test"  # file_sd labels reach the series
            [sample] = ph.wait_until(lambda: ph.query(url, 'dmsac_policy_grad_norm{job="dmsac"}'), timeout=20, tick=feed)
            assert float(sample["value"][1]) == 1000.0

            queries = [(title, expr.replace(RATE, "10s")) for title, expr in panel_queries(dashboard(config))]
            assert len(queries) == 32  # targets of the 23 query panels

            def empty_panels() -> list[str]:
                return [f"{title}: {expr}" for title, expr in queries if not ph.query(url, expr)]

            ph.wait_until(lambda: not empty_panels() or None, timeout=20, tick=feed)
            utd = queries[[t for t, _ in queries].index("Update-to-data ratio")][1]
            [ratio] = ph.wait_until(lambda: ph.query(url, utd), timeout=20, tick=feed)
            assert float(ratio["value"][1]) == pytest.approx(0.5, rel=0.2)  # 50 updates per 100 env steps
    finally:
        exporter.stop()
