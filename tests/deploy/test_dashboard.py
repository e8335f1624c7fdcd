"""The shipped Grafana files: dashboard JSON and alert rules == renders of the default config, provisioning.

What ``cluster.dashboard`` renders (rows, panels, thresholds, layout): tests/cluster/test_dashboard.py;
what ``cluster.grafana_alerts`` renders: tests/cluster/test_grafana_alerts.py and tests/cluster/test_grafana.py.
"""

from __future__ import annotations

import pytest
import yaml

from cluster import grafana
from cluster.config import Config, load_config
from cluster.dashboard import render_dashboard
from cluster.grafana_alerts import DEFAULT_ALERTS_PATH, DEFAULT_DATASOURCE_UID, render_alert_rules

from .prom_helpers import ADDED_ALERTS, REPO, SPEC_ALERTS

GRAFANA_DIR = REPO / "deploy" / "grafana"
SHIPPED = GRAFANA_DIR / "dashboard.json"
SHIPPED_ALERTS = GRAFANA_DIR / "provisioning" / "alerting" / "dmsac-alerts.yml"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"


@pytest.mark.parametrize(
    ("shipped", "default_out", "render", "command"),
    [
        (SHIPPED, grafana.DEFAULT_DASHBOARD, render_dashboard, "render"),
        (SHIPPED_ALERTS, DEFAULT_ALERTS_PATH, render_alert_rules, "render-alerts"),
    ],
    ids=["dashboard", "alert-rules"],
)
def test_shipped_file_is_the_render_of_the_default_config(shipped, default_out, render, command) -> None:
    """The file was written by another process (``python -m cluster.grafana COMMAND``): equal to this process's
    render, so the render does not depend on hash or set order."""
    text = shipped.read_text()
    assert shipped == default_out  # what `render --check` compares with
    assert text == render(load_config(REPO / "configs" / "vehicle.yaml"))
    assert text == render(Config())
    assert grafana.main([command, "--check"]) == 0


def test_provisioning_files() -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())
    [ds] = datasources["datasources"]
    assert datasources["apiVersion"] == 1
    assert (ds["type"], ds["access"], ds["isDefault"]) == ("prometheus", "proxy", True)
    assert ds["url"].startswith("http")
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dmsac.yml").read_text())
    [provider] = providers["providers"]
    assert (providers["apiVersion"], provider["type"]) == (1, "file")
    assert provider["options"]["path"].startswith("/")


def test_the_alert_rules_query_the_provisioned_datasource() -> None:
    [ds] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert ds["uid"] == DEFAULT_DATASOURCE_UID
    provisioning = yaml.safe_load(SHIPPED_ALERTS.read_text())
    [group] = provisioning["groups"]
    assert (provisioning["apiVersion"], group["orgId"], group["name"], group["folder"]) == (1, 1, "dmsac", "dmsac")
    assert {r["title"] for r in group["rules"]} == SPEC_ALERTS | ADDED_ALERTS
    assert {r["data"][0]["datasourceUid"] for r in group["rules"]} == {ds["uid"]}
