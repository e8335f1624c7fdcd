"""Grafana dashboard: shipped JSON == render, rows and panels of the spec, thresholds, layout, provisioning."""

from __future__ import annotations

import json

import yaml

from cluster import grafana
from cluster.config import Config, load_config
from cluster.dashboard import UID, dashboard, panel_queries, render_dashboard

from .prom_helpers import REPO

GRAFANA_DIR = REPO / "deploy" / "grafana"
SHIPPED = GRAFANA_DIR / "dashboard.json"


def load_shipped() -> dict:
    return json.loads(SHIPPED.read_text())


def by_title(board: dict) -> dict[str, dict]:
    return {p["title"]: p for p in board["panels"] if p["type"] != "row"}


def threshold_values(panel: dict) -> list[float | None]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_shipped_dashboard_is_the_render_of_the_default_config() -> None:
    text = SHIPPED.read_text()
    assert text == render_dashboard(load_config(REPO / "configs" / "vehicle.yaml"))
    assert text == render_dashboard(Config())
    assert grafana.main(["render", "--check"]) == 0


def test_fixed_uid_datasource_variable_and_every_query_uses_it() -> None:
    board = load_shipped()
    assert board["uid"] == UID == "dmsac-learner"
    [var] = board["templating"]["list"]
    assert (var["name"], var["type"], var["query"]) == ("datasource", "datasource", "prometheus")
    panels = [p for p in board["panels"] if "targets" in p]
    assert len(panels) == 23  # 4 + 3 + 2 + 4 + 5 + 2 + 3 in the rows Health … Actors
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
        assert [t["refId"] for t in p["targets"]] == list("ABCDEFGH"[: len(p["targets"])])
    assert all('{job="dmsac"}' in expr for _, expr in panel_queries(board))


def test_rows_of_the_spec_in_order() -> None:
    rows = [p["title"] for p in load_shipped()["panels"] if p["type"] == "row"]
    assert rows == ["Health", "Gradients", "Q values", "Learning", "Throughput", "Checkpoints", "Actors", "Alerts"]
    assert [p["type"] for p in load_shipped()["panels"]][-1] == "alertlist"


def test_gradient_panels_draw_the_warning_and_clip_lines() -> None:
    panels = by_title(load_shipped())
    for title in ("Policy gradient norm (before clipping)", "Critic gradient norm (before clipping)"):
        p = panels[title]
        assert threshold_values(p) == [None, 4.5, 5.0]
        assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "line"}
    assert threshold_values(panels["Q mean (scaled units)"]) == [None, -10000.0, 10000.0]
    assert threshold_values(panels["Q std (scaled units)"]) == [None, 5000.0]
    assert threshold_values(panels["Time since last checkpoint"]) == [None, 2700.0]
    assert threshold_values(panels["Actors alive"]) == [None, 2]


def test_threshold_lines_follow_the_config() -> None:
    config = load_config(REPO / "configs" / "vehicle.yaml", ["learner.max_grad_norm=10", "safety.warnings.grad_norm_fraction=0.8"])
    assert threshold_values(by_title(dashboard(config))["Policy gradient norm (before clipping)"]) == [None, 8.0, 10.0]


def test_layout_fits_the_grid_without_overlap() -> None:
    board = load_shipped()
    ids = [p["id"] for p in board["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, p["title"]
        cells |= area
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    assert bottom == 80  # 8 rows of height 1 + 9 lines of panels of height 8


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
