"""``cluster.dashboard``: the Grafana dashboard rendered for a config (rows, panels, thresholds, layout).

The shipped deploy/grafana/dashboard.json (== the render of the default config): tests/deploy/test_dashboard.py.
"""

from __future__ import annotations

import json

from cluster.config import Config, load_config
from cluster.dashboard import (
    UID,
    alert_list,
    dashboard,
    layout,
    panel,
    panel_queries,
    render_dashboard,
    steps,
    target,
)
from tests.deploy.prom_helpers import REPO


def default_board() -> dict:
    """The dashboard of the default config as its JSON file holds it."""
    return json.loads(render_dashboard(Config()))


def by_title(board: dict) -> dict[str, dict]:
    return {p["title"]: p for p in board["panels"] if p["type"] != "row"}


def threshold_values(panel: dict) -> list[float | None]:
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_fixed_uid_datasource_variable_and_every_query_uses_it() -> None:
    board = default_board()
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
    rows = [p["title"] for p in default_board()["panels"] if p["type"] == "row"]
    assert rows == ["Health", "Gradients", "Q values", "Learning", "Throughput", "Checkpoints", "Actors", "Alerts"]
    assert [p["type"] for p in default_board()["panels"]][-1] == "alertlist"


def test_gradient_panels_draw_the_warning_and_clip_lines() -> None:
    panels = by_title(default_board())
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
    board = default_board()
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


def test_layout_puts_at_most_four_panels_a_line_and_numbers_every_panel() -> None:
    board = layout([("A", [{"title": f"a{i}"} for i in range(5)]), ("B", [{"title": "b0"}])])
    grid = {p["title"]: (p["id"], *(p["gridPos"][k] for k in "xywh")) for p in board}
    assert grid == {
        "A": (1, 0, 0, 24, 1), "a0": (2, 0, 1, 6, 8), "a1": (3, 6, 1, 6, 8), "a2": (4, 12, 1, 6, 8),
        "a3": (5, 18, 1, 6, 8), "a4": (6, 0, 9, 6, 8),  # the fifth starts a second line
        "B": (7, 0, 17, 24, 1), "b0": (8, 0, 18, 24, 8),  # one panel spans the width
    }  # fmt: skip
    assert [p["type"] for p in board if p["title"] in ("A", "B")] == ["row", "row"]


def test_a_row_without_panels_takes_its_title_line_only() -> None:
    board = layout([("empty", []), ("B", [{"title": "b0"}])])
    assert [(p["title"], p["gridPos"]["y"], p["gridPos"]["h"]) for p in board] == [("empty", 0, 1), ("B", 1, 1), ("b0", 2, 8)]


def test_steps_target_and_panel_build_grafanas_fields() -> None:
    assert steps(("green", None), ("red", 3.0)) == {
        "mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 3.0}]
    }  # fmt: skip
    assert target("up", "u", "B", instant=True) == {
        "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": "up", "legendFormat": "u", "refId": "B",
        "instant": True, "range": False, "format": "table",
    }  # fmt: skip
    table = panel("Run", [("a", "x"), ("b", "y")], kind="table")
    assert [(t["refId"], t.get("instant")) for t in table["targets"]] == [("A", True), ("B", True)]
    stat = panel("Alive", [("a", "x")], kind="stat", unit="s", lines=steps(("red", None)))
    # threshold lines are drawn on time series only
    assert stat["fieldConfig"]["defaults"] == {"unit": "s", "thresholds": steps(("red", None))}
    assert stat["options"] == {}


def test_every_query_selects_the_configured_job() -> None:
    config = load_config(REPO / "configs" / "vehicle.yaml", ["alerts.job=train-a"])
    queries = panel_queries(dashboard(config))
    assert len(queries) == 32  # targets of the 23 query panels
    assert [expr for _, expr in queries if '{job="train-a"}' not in expr] == []
    assert ("Actors alive", 'dmsac_actors_alive{job="train-a"}') in queries


def test_gradient_panels_plot_the_clip_limit_as_their_last_target() -> None:
    panels = by_title(default_board())
    for title in ("Policy gradient norm (before clipping)", "Critic gradient norm (before clipping)"):
        last = panels[title]["targets"][-1]
        assert (last["expr"], last["legendFormat"]) == ('dmsac_grad_clip_norm{job="dmsac"}', "clip limit")
        assert panels[title]["description"] == "Orange line: warning 4.5; red line: clip limit 5."


def test_the_alert_list_shows_firing_pending_and_error_dmsac_alerts() -> None:
    options = alert_list()["options"]
    assert (options["alertName"], options["maxItems"], options["showInstances"]) == ("Dmsac", 20, True)
    assert options["stateFilter"] == {"firing": True, "pending": True, "noData": False, "normal": False, "error": True}


def test_the_dashboard_has_grafanas_settings_of_the_spec() -> None:
    board = dashboard(Config())
    assert (board["uid"], board["title"], board["schemaVersion"], board["refresh"]) == (UID, "dmsac learner", 39, "30s")
    assert (board["time"], board["graphTooltip"]) == ({"from": "now-6h", "to": "now"}, 1)
    assert board["tags"] == ["dmsac", "sac", "ray"]
    assert render_dashboard(Config()).endswith("}\n")
