"""Real Prometheus scrapes a real short training run on the local Ray head (loopback only).

The learner actor serves ``/metrics`` and writes its file_sd target into the run
directory; Prometheus (the OS package) watches that file, scrapes every second
and evaluates the rules rendered from the run's own config, whose thresholds are
tiny so the gradient and Q warnings fire on healthy training. The driver's
``on_tick`` hook holds the driver twice: at the first tick, until Prometheus has
a first sample (a smoke run is over in seconds; this way Prometheus sees the
counters move), and, once the run has written a checkpoint and finished an
episode, while the test reads Prometheus's HTTP API (the learner drains its
queue, the exporter stays up): the scraped ``dmsac_*`` series equal what the
learner reports, the induced alerts are ``firing`` and only they, and every
dashboard panel query answers with finite values. Then the run goes on to its end.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
import ray

from cluster.alerts import render_rules
from cluster.config import load_config
from cluster.dashboard import RATE, dashboard, panel_queries
from cluster.ray_driver import run_ray
from learner.metrics import NAN_SOURCES, TARGETS_FILE_NAME
from learner.weights import WEIGHT_REJECT_REASONS
from tests.conftest import ROOT
from tests.deploy import prom_helpers as ph

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ph.PROMETHEUS is None, reason="prometheus not installed (make promtool installs it)"),
]

TOTAL_ENV_STEPS = 1600
TINY = [
    "safety.warnings.grad_norm_fraction=1e-6", "safety.warnings.q_mean_abs_max=1e-6", "safety.warnings.q_std_max=1e-6",
    "alerts.sustain_for=0s",
]  # fmt: skip
INDUCED = {"DmsacPolicyGradNormNearClip", "DmsacQGradNormNearClip", "DmsacQValuesExploding", "DmsacQValueSpreadHigh"}
WINDOW = "5m"  # stands in for Grafana's $__rate_interval: spans the whole run, so rate() has samples while held
TIMEOUT = 90.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def api(url: str, path: str, params: dict[str, str] | None = None) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with _OPENER.open(f"{url}{path}{query}", timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


def instant(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """``expr`` evaluated now, or at the Unix time ``at``."""
    data = api(url, "/api/v1/query", {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})})
    assert data["resultType"] == "vector", (expr, data)
    return data["result"]


def value(url: str, expr: str, at: float | None = None) -> float:
    """The value of a query that must return exactly one series."""
    result = instant(url, expr, at)
    assert len(result) == 1, (expr, at, result)
    return float(result[0]["value"][1])


def by_label(url: str, expr: str, label: str, at: float | None = None) -> dict[str, float]:
    return {s["metric"][label]: float(s["value"][1]) for s in instant(url, expr, at)}


def settled_instant() -> float:
    """An instant whose scrapes are all in: a scrape times out after one interval, so none that started two intervals
    ago is still running. Queries at it answer the same however often they are asked; at "now" a scrape that times
    out on a busy machine turns the series stale between two queries."""
    return time.time() - 2 * ph.SCRAPE_INTERVAL_S


def firing(url: str) -> dict[str, dict[str, Any]]:
    return {a["labels"]["alertname"]: a for a in api(url, "/api/v1/alerts")["alerts"] if a["state"] == "firing"}


@pytest.fixture
def no_proxy_env(monkeypatch):
    """``running_prometheus`` polls readiness with plain urlopen: keep any proxy from the environment out of it."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


class LiveCheck:
    """The ``on_tick`` hook: once the run is far enough along, checks Prometheus while the driver waits."""

    def __init__(self, url: str, config, run_dir) -> None:
        self.url, self.config, self.run_dir = url, config, run_dir
        self.sel = f'{{job="{config.alerts.job}"}}'
        self.started = time.time()
        self.first_scrape: list[dict[str, Any]] | None = None
        self.checked: dict[str, Any] = {}
        self.at: float | None = None
        """The instant the series checks read (``check_series``)."""

    def __call__(self, driver) -> None:
        if self.first_scrape is None:  # the first tick comes early: hold until Prometheus has a sample of the run
            self.first_scrape = ph.wait_until(lambda: instant(self.url, f"dmsac_env_steps_total{self.sel}"), TIMEOUT)
            return
        progress = driver.progress
        if self.checked or progress is None or progress.last_checkpoint_step <= 0 or progress.episodes == 0:
            return
        # Ordered after every step already queued on the learner actor: the figures no longer move.
        settled = ray.get(driver.learner.actor.progress.remote(), timeout=TIMEOUT)[0]  # the one run's
        target = json.loads((self.run_dir / TARGETS_FILE_NAME).read_text())[0]["targets"][0]
        self.checked = {"progress": settled, "instance": target}
        self.check_series(settled, target)
        self.check_alerts(settled, target)
        self.check_panels()

    def scraped(self, metric: str) -> float:
        return value(self.url, f"{metric}{self.sel}", self.at)

    def check_series(self, progress, instance: str) -> None:
        url, sel = self.url, self.sel
        settled = f"dmsac_learner_updates_total{sel} == {progress.updates} and dmsac_env_steps_total{sel} == {progress.env_steps}"

        def settled_at() -> float | None:
            at = settled_instant()
            return at if instant(url, settled, at) else None

        at = self.at = ph.wait_until(settled_at, TIMEOUT)  # every series below is read at this instant
        assert value(url, f'up{{job="{self.config.alerts.job}",instance="{instance}"}}', at) == 1.0
        [info] = instant(url, f"dmsac_build_info{sel}", at)
        assert info["metric"]["run"] == self.run_dir.name and info["metric"]["instance"] == instance
        assert float(info["value"][1]) == 1.0
        assert 0 < progress.updates <= self.config.train.update_to_data * progress.env_steps
        assert progress.env_steps >= self.config.checkpoint.every_env_steps
        assert self.scraped("dmsac_replay_size") == progress.replay_size > 0
        assert self.scraped("dmsac_weights_version") == progress.weights_version >= 1
        assert self.scraped("dmsac_policy_lag_versions") == progress.policy_lag >= 0
        assert self.scraped("dmsac_checkpoint_step") == progress.last_checkpoint_step
        assert self.scraped("dmsac_last_good_checkpoint_step") == progress.last_checkpoint_step
        assert self.started <= self.scraped("dmsac_checkpoint_last_success_timestamp_seconds") <= time.time()
        assert self.scraped("dmsac_episode_return") == pytest.approx(progress.recent_return, rel=1e-9)
        assert -2000.0 <= progress.recent_return <= 0.0  # Pendulum: 200 steps of reward in [-16.3, 0]
        self.check_update_stats(progress.last_stats)
        learner = self.config.learner
        assert self.scraped("dmsac_grad_clip_norm") == learner.max_grad_norm
        assert self.scraped("dmsac_reward_scale") == learner.reward_scale
        assert by_label(url, f"dmsac_learning_rate{sel}", "network", at) == {"policy": learner.lr, "q": learner.lr}
        clipped = by_label(url, f"dmsac_grad_clipped_total{sel}", "network", at)
        assert set(clipped) == {"policy", "q"} and all(0 <= n <= progress.updates for n in clipped.values())
        assert by_label(url, f"dmsac_nan_events_total{sel}", "source", at) == dict.fromkeys(NAN_SOURCES, 0.0)
        assert by_label(url, f"dmsac_weights_rejected_total{sel}", "reason", at) == dict.fromkeys(
            WEIGHT_REJECT_REASONS, 0.0
        )
        assert self.scraped("dmsac_rollbacks_total") == 0.0
        assert self.scraped("dmsac_actors_alive") == self.config.cluster.num_actors
        assert self.scraped("dmsac_actor_restarts_total") == 0.0
        assert self.scraped("dmsac_learner_restarts_total") == 0.0
        for metric in ("dmsac_context_fallbacks_total", "dmsac_transitions_rejected_total"):
            counts = instant(url, f"{metric}{sel}", at)
            assert counts and all(float(s["value"][1]) == 0.0 for s in counts), metric

    def check_update_stats(self, stats) -> None:
        assert stats is not None
        for name in ("policy_grad_norm", "q_grad_norm", "q_mean", "q_std", "alpha", "policy_loss", "q_loss"):
            scraped = self.scraped(f"dmsac_{name}")
            assert math.isfinite(scraped), name
            assert scraped == pytest.approx(float(getattr(stats, name)), rel=1e-6, abs=1e-12), name
        for name in ("policy_grad_norm", "q_grad_norm", "alpha"):
            assert self.scraped(f"dmsac_{name}") > 0.0, name
        assert self.scraped("dmsac_q_std") >= 0.0

    def check_alerts(self, progress, instance: str) -> None:
        stats = progress.last_stats
        expected = {
            "DmsacPolicyGradNormNearClip": stats.policy_grad_norm,
            "DmsacQGradNormNearClip": stats.q_grad_norm,
            "DmsacQValuesExploding": abs(stats.q_mean),
            "DmsacQValueSpreadHigh": stats.q_std,
        }

        def settled() -> dict[str, dict[str, Any]] | None:  # every induced alert evaluated on the settled figures
            now = firing(self.url)
            ok = all(n in now and float(now[n]["value"]) == pytest.approx(v, rel=1e-6) for n, v in expected.items())
            return now if ok else None

        try:
            alerts = ph.wait_until(settled, TIMEOUT, interval=0.5)
        except TimeoutError:
            states = {
                a["labels"]["alertname"]: (a["state"], a["value"]) for a in api(self.url, "/api/v1/alerts")["alerts"]
            }
            pytest.fail(f"induced alerts not firing with the settled values {expected}; alerts now: {states}")
        assert set(alerts) == INDUCED  # health and progress rules stay quiet on a healthy run
        for name in INDUCED:
            labels = alerts[name]["labels"]
            assert labels["severity"] == "warning" and labels["instance"] == instance, labels
            assert labels["run"] == self.run_dir.name, labels  # file_sd labels reach the alert

    def check_panels(self) -> None:
        queries = [(title, expr.replace(RATE, WINDOW)) for title, expr in panel_queries(dashboard(self.config))]
        assert len(queries) == 32 and not any("$" in expr for _, expr in queries), queries
        on_disk = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
        assert len(panel_queries(on_disk)) == len(queries)  # the shipped board has the same targets

        def empty(at: float) -> list[str]:
            return [f"{title}: {expr}" for title, expr in queries if not instant(self.url, expr, at)]

        def all_answer() -> float | None:
            at = settled_instant()
            return at if not empty(at) else None

        try:
            at = ph.wait_until(all_answer, TIMEOUT, interval=0.5)
        except TimeoutError:
            pytest.fail(f"panel queries with an empty result: {empty(settled_instant())}")
        for title, expr in queries:
            for sample in instant(self.url, expr, at):
                assert math.isfinite(float(sample["value"][1])), (title, expr, sample)
        ratio = dict(queries)["Update-to-data ratio"]
        assert 0.0 < value(self.url, ratio, at) <= 1.1 * self.config.train.update_to_data


def test_prometheus_scrapes_a_ray_run_fires_induced_alerts_and_answers_every_panel(
    ray_client, tmp_path, no_proxy_env
) -> None:
    run_dir = tmp_path / "run"
    config = load_config(
        ROOT / "configs" / "smoke.yaml",
        [*ray_client.overrides(), f"train.run_dir={run_dir}", f"train.total_env_steps={TOTAL_ENV_STEPS}", *TINY],
    )
    assert config.metrics.bind_address == "127.0.0.1"
    prom_dir = ph.local_prometheus_dir(run_dir, render_rules(config))  # file_sd: ../prometheus_targets.json
    with ph.running_prometheus(prom_dir / "prometheus.yml", prom_dir / "data", timeout=60.0) as url:
        check = LiveCheck(url, config, run_dir)
        summary = run_ray(config, on_tick=check)
        assert check.checked, "the run ended before it had a checkpoint and a finished episode"
        [first] = check.first_scrape
        assert float(first["value"][1]) < check.checked["progress"].env_steps  # Prometheus saw the counters move
    assert summary == json.loads((run_dir / "final_stats.json").read_text())
    assert summary["env_steps"] == TOTAL_ENV_STEPS and summary["exit_code"] == 0
    held = check.checked["progress"]
    assert 0 < held.updates <= summary["updates"] and held.env_steps < TOTAL_ENV_STEPS
    assert check.checked["instance"].startswith("127.0.0.1:")
