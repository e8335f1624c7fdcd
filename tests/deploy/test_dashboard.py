"""The shipped Grafana files: dashboard JSON == render of the default config, provisioning.

What ``cluster.dashboard`` renders (rows, panels, thresholds, layout): tests/cluster/test_dashboard.py.
"""

from __future__ import annotations

import yaml

from cluster import grafana
from cluster.config import Config, load_config
from cluster.dashboard import render_dashboard

from .prom_helpers import REPO

GRAFANA_DIR = REPO / "deploy" / "grafana"
SHIPPED = GRAFANA_DIR / "dashboard.json"


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
