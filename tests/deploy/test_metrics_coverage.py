"""Every metric named in the alert rules and the dashboard is emitted by the exporter (set comparisons).

The names come from the shipped files (PromQL parsed for ``dmsac_*``) and from the
exporter's registry (``registry.collect()`` sample names), never from a list typed here.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from cluster.dashboard import panel_queries
from learner.metrics import MetricsConfig, MetricsExporter

from .prom_helpers import PROM_DIR, REPO, metric_names

SPEC = REPO.parent / "shared" / "specs" / "observability.md"


def emitted() -> set[str]:
    """Sample names a fresh exporter serves (counters as ``*_total``; ``_created`` left out)."""
    registry = MetricsExporter(MetricsConfig(port=0)).registry
    return {s.name for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}


def rule_metrics() -> set[str]:
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    return set().union(*(metric_names(r["expr"]) for g in groups for r in g["rules"]))


def dashboard_metrics() -> set[str]:
    board = json.loads((REPO / "deploy" / "grafana" / "dashboard.json").read_text())
    return set().union(*(metric_names(expr) for _, expr in panel_queries(board)))


def test_metric_name_extraction() -> None:
    expr = 'label_replace(dmsac_q_mean{job="dmsac_x"} != dmsac_q_mean, "g", "dmsac_fake", "", "") or x_bucket'
    assert metric_names(expr) == {"dmsac_q_mean"}
    assert metric_names("histogram_quantile(0.9, rate(dmsac_latency_seconds_bucket[5m]))") == {"dmsac_latency_seconds"}


def test_every_metric_in_the_rules_is_emitted() -> None:
    used = rule_metrics()
    assert len(used) >= 15
    assert used - emitted() == set()


def test_every_metric_on_the_dashboard_is_emitted() -> None:
    used = dashboard_metrics()
    assert len(used) >= 25
    assert used - emitted() == set()


def test_every_emitted_metric_is_on_the_dashboard() -> None:
    assert emitted() - dashboard_metrics() == set()


def readme_extras() -> set[str]:
    """The metrics the README lists as added to the spec's table (its "Beyond the spec's table" paragraph)."""
    text = (REPO / "README.md").read_text()
    paragraph = text.split("**Beyond the spec's table**", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`(dmsac_[a-z_]+)`", paragraph))


@pytest.mark.skipif(not SPEC.exists(), reason=f"spec not found at {SPEC}")
def test_the_exporter_emits_the_spec_table_and_the_readme_names_the_rest() -> None:
    table = SPEC.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `dmsac_")]
    names = {n for row in rows for n in re.findall(r"`(dmsac_[a-z_]+)", row.split("|")[1])}
    assert len(names) == 28
    assert names <= emitted()
    assert emitted() - names == readme_extras()
    for row in rows:
        kind = row.split("|")[2].strip()
        for name in re.findall(r"`(dmsac_[a-z_]+)", row.split("|")[1]):
            if kind in ("gauge", "counter"):
                assert name.endswith("_total") == (kind == "counter"), name


def test_every_metric_the_readme_adds_is_emitted() -> None:
    extras = readme_extras()
    assert "dmsac_fragments_duplicate_total" in extras
    assert extras <= emitted()
