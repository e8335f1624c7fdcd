"""Helpers for tests that run real Prometheus/promtool (the OS packages) on loopback.

``running_prometheus(config, storage)`` starts Prometheus on a free 127.0.0.1
port and yields its URL; ``query``/``alerts`` read its HTTP API; ``local_prometheus_dir``
lays out the shipped ``prometheus.local.yml`` in a run directory the way
``make monitor`` does (with shorter intervals for tests). ``metric_names``
extracts the ``dmsac_*`` metrics a PromQL expression reads. ``SPEC_ALERTS`` and ``ADDED_ALERTS`` name
the alerts the rules must hold (tests/cluster/test_alerts.py checks the render against them).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"\bdmsac_[a-z_]+")
_SERIES_SUFFIXES = ("_bucket", "_count", "_sum")

T = TypeVar("T")

SPEC_ALERTS = {
    "DmsacPolicyGradNormNearClip", "DmsacQGradNormNearClip", "DmsacQValuesExploding", "DmsacQValueSpreadHigh",
    "DmsacNonFiniteDetected", "DmsacRollbackLoop", "DmsacLearnerDown", "DmsacTrainingStalled",
    "DmsacContextFallbacks", "DmsacWeightsRejected", "DmsacCheckpointStale", "DmsacActorsDown",
}  # fmt: skip
"""The alerts of the spec's table (specs/observability.md)."""
ADDED_ALERTS = {"DmsacLearnerRestarted"}
"""Alerts beyond the spec's table (the learner recovers inside the job: README, "The learner recovers inside the job")."""


def metric_names(promql: str) -> set[str]:
    """``dmsac_*`` metric names read by a PromQL expression (string literals ignored, histogram suffixes stripped)."""
    names = set(_METRIC.findall(_STRING.sub('""', promql)))
    return {next((n[: -len(s)] for s in _SERIES_SUFFIXES if n.endswith(s)), n) for n in names}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is not installed"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


SCRAPE_INTERVAL_S = 1
"""The tests' scrape interval and timeout (``local_prometheus_dir``'s default)."""


def local_prometheus_dir(
    run_dir: Path, rules_text: str, scrape_interval: str = f"{SCRAPE_INTERVAL_S}s", evaluation_interval: str = "1s"
) -> Path:
    """``<run_dir>/prometheus/`` with the shipped local config (intervals replaced) and ``rules_text`` as alerts.yml."""
    config = yaml.safe_load((PROM_DIR / "prometheus.local.yml").read_text())
    config["global"].update(
        scrape_interval=scrape_interval, scrape_timeout=scrape_interval, evaluation_interval=evaluation_interval
    )
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["refresh_interval"] = scrape_interval
    out = run_dir / "prometheus"
    out.mkdir(parents=True, exist_ok=True)
    (out / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "alerts.yml").write_text(rules_text)
    return out


def api_get(url: str, path: str, params: dict[str, str] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{query}", timeout=timeout) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """Result of an instant query (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
    data = api_get(url, "/api/v1/query", {"query": expr})
    return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]


def alerts(url: str) -> list[dict[str, Any]]:
    """Active (pending and firing) alerts: ``[{"labels": ..., "state": ..., "value": ...}, ...]``."""
    return api_get(url, "/api/v1/alerts")["alerts"]


def wait_until(
    probe: Callable[[], T | None], timeout: float, interval: float = 0.25, tick: Callable[[], None] | None = None
) -> T:
    """Call ``tick`` then ``probe`` until ``probe`` returns something truthy; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            tick()
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_prometheus(config_file: Path, storage_dir: Path, timeout: float = 30.0) -> Iterator[str]:
    """Start Prometheus on a free loopback port with ``config_file``; yield its base URL; stop it (by pid) after."""
    assert PROMETHEUS, "prometheus is not installed"
    storage_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = storage_dir / "prometheus.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS, f"--config.file={config_file}", f"--storage.tsdb.path={storage_dir}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not become ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
