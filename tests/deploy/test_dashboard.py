"""The shipped Grafana files: dashboard JSON and alert rules == renders of the default config, provisioning.

What ``cluster.dashboard`` renders (rows, panels, thresholds, layout): tests/cluster/test_dashboard.py;
what ``cluster.grafana_alerts`` renders: tests/cluster/test_grafana_alerts.py and tests/cluster/test_grafana.py.
"""

from __future__ import annotations

import yaml

from cluster import grafana
from cluster.config import Config, load_config
from cluster.dashboard import render_dashboard
from cluster.grafana_alerts import DEFAULT_ALERTS_PATH, DEFAULT_DATASOURCE_UID, render_alert_rules

from .prom_helpers import ADDED_ALERTS, REPO, SPEC_ALERTS

GRAFANA_DIR = REPO / "deploy" / "grafana"
SHIPPED = GRAFANA_DIR / "dashboard.json"
SHIPPED_ALERTS = GRAFANA_DIR / "provisioning" / "alerting" / "dmsac-alerts.yml"


def test_shipped_dashboard_is_the_render_of_the_default_config() -> None:
    text = SHIPPED.read_text()
    assert text == render_dashboard(load_config(REPO / "configs" / "vehicle.yaml"))
    assert text == render_dashboard(Config())
    assert grafana.main(["render", "--check"]) == 0


def test_provisioning_files() -> None:
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [ds] = datasources["datasources"]
    assert datasources["apiVersion"] == 1
    assert (ds["type"], ds["access"], ds["isDefault"]) == ("prometheus", "proxy", True)
    assert ds["url"].startswith("http")
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dmsac.yml").read_text())
    [provider] = providers["providers"]
    assert (providers["apiVersion"], provider["type"]) == (1, "file")
    assert provider["options"]["path"].startswith("/")


def test_shipped_alert_rules_are_the_render_of_the_default_config() -> None:
    text = SHIPPED_ALERTS.read_text()
    assert SHIPPED_ALERTS == DEFAULT_ALERTS_PATH
    assert text == render_alert_rules(load_config(REPO / "configs" / "vehicle.yaml"))
    assert text == render_alert_rules(Config())
    assert grafana.main(["render-alerts", "--check"]) == 0


def test_the_alert_rules_query_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [ds] = datasources["datasources"]
    assert ds["uid"] == DEFAULT_DATASOURCE_UID
    provisioning = yaml.safe_load(SHIPPED_ALERTS.read_text())
    [group] = provisioning["groups"]
    assert (provisioning["apiVersion"], group["orgId"], group["name"], group["folder"]) == (1, 1, "dmsac", "dmsac")
    assert {r["title"] for r in group["rules"]} == SPEC_ALERTS | ADDED_ALERTS
    assert {r["data"][0]["datasourceUid"] for r in group["rules"]} == {ds["uid"]}
