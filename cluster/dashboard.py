"""The Grafana dashboard as code: plain dicts rendered to deploy/grafana/dashboard.json.

Plain dicts rather than ``grafana-foundation-sdk``: the SDK installs from PyPI,
but has no builder for the alert-list panel the dashboard needs, and pins by
epoch-style versions tied to Grafana releases. Threshold lines come from the
same resolved thresholds as the alert rules (``cluster.alerts.thresholds``),
so dashboard and alerts agree for any config.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cluster.alerts import Thresholds, thresholds
from learner.types import STATS

if TYPE_CHECKING:
    from cluster.config import Config

UID = "dmsac-learner"
TITLE = "dmsac learner"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
PANEL_HEIGHT = 8
GRID_WIDTH = 24


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    query: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        query.update(instant=True, range=False, format="table")
    return query


def steps(*pairs: tuple[str, float | None]) -> dict[str, Any]:
    """Absolute threshold steps: (color, value), the first value ``None`` (the base)."""
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in pairs]}


def panel(
    title: str, queries: list[tuple[str, str]], kind: str = "timeseries", unit: str = "short",
    lines: dict[str, Any] | None = None, description: str = "",
) -> dict[str, Any]:  # fmt: skip
    """A panel of ``kind`` with one target per (expr, legend); ``lines`` draws threshold lines."""
    defaults: dict[str, Any] = {"unit": unit}
    if lines is not None:
        defaults["thresholds"] = lines
        if kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [target(expr, legend, refs[i], instant=kind == "table") for i, (expr, legend) in enumerate(queries)],
    }


def alert_list() -> dict[str, Any]:
    return {
        "type": "alertlist",
        "title": "dmsac alerts",
        "description": "Firing and pending alerts of deploy/prometheus/alerts.yml (needs manageAlerts on the datasource).",
        "options": {
            "viewMode": "list",
            "groupMode": "default",
            "groupBy": [],
            "maxItems": 20,
            "sortOrder": 1,
            "dashboardAlerts": False,
            "alertName": "Dmsac",
            "alertInstanceLabelFilter": "",
            "showInstances": True,
            "stateFilter": {"firing": True, "pending": True, "noData": False, "normal": False, "error": True},
        },
    }


def _health(sel: str) -> list[dict]:
    return [
        panel("NaN events", [(f"sum by (source) (increase(dmsac_nan_events_total{sel}[{RATE}]))", "{{source}}")]),
        panel("Rollbacks", [(f"increase(dmsac_rollbacks_total{sel}[{RATE}])", "rollbacks")]),
        panel(
            "Rejected weights",
            [(f"sum by (reason) (increase(dmsac_weights_rejected_total{sel}[{RATE}]))", "{{reason}}")],
        ),
        panel(
            "Context fallbacks, rejected transitions and duplicate fragments / s",
            [
                (f"sum by (reason) (rate(dmsac_context_fallbacks_total{sel}[{RATE}]))", "fallback {{reason}}"),
                (f"sum by (reason) (rate(dmsac_transitions_rejected_total{sel}[{RATE}]))", "rejected {{reason}}"),
                (f"rate(dmsac_fragments_duplicate_total{sel}[{RATE}])", "duplicate fragments"),
            ],
            description="Duplicates stay at 0 unless a fragment is delivered twice (fragment identity is unique per process start).",
        ),
    ]


def stat_panels(sel: str, t: Thresholds) -> dict[str, dict]:
    """One panel per ``panel`` title of the statistics table (``learner.types.STATS``), its gauges as targets."""
    grad = steps(("green", None), ("orange", t.grad_warn), ("red", t.grad_clip))
    lines = {
        "Policy gradient norm (before clipping)": grad,
        "Critic gradient norm (before clipping)": grad,
        "Q mean (scaled units)": steps(("red", None), ("green", -t.q_mean_abs), ("red", t.q_mean_abs)),
        "Q std (scaled units)": steps(("green", None), ("red", t.q_std)),
    }
    notes = {
        "Policy gradient norm (before clipping)": f"Orange line: warning {t.grad_warn:g}; red line: clip limit {t.grad_clip:g}.",
        "Critic gradient norm (before clipping)": f"Orange line: warning {t.grad_warn:g}; red line: clip limit {t.grad_clip:g}.",
        "Q mean (scaled units)": "Rewards are negative: divergence shows as large negative Q.",
    }
    queries: dict[str, list[tuple[str, str]]] = {}
    for name, spec in STATS.items():
        if spec.kind == "gauge" and spec.panel:
            queries.setdefault(spec.panel, []).append((f"{spec.metric}{sel}", spec.legend or name))
    for title in ("Policy gradient norm (before clipping)", "Critic gradient norm (before clipping)"):
        queries[title].append((f"dmsac_grad_clip_norm{sel}", "clip limit"))
    return {title: panel(title, q, lines=lines.get(title), description=notes.get(title, "")) for title, q in queries.items()}


def _gradients(panels: dict[str, dict], sel: str) -> list[dict]:
    clipped = f"sum by (network) (rate(dmsac_grad_clipped_total{sel}[{RATE}]))"
    return [
        panels["Policy gradient norm (before clipping)"],
        panels["Critic gradient norm (before clipping)"],
        panel("Clipped updates / s", [(clipped, "{{network}}")]),
    ]


def _learning(panels: dict[str, dict], sel: str) -> list[dict]:
    return [
        panel("Episode return (unscaled, recent window)", [(f"dmsac_episode_return{sel}", "return")]),
        panels["Alpha"],
        panels["Losses"],
        panel(
            "Reward scale and learning rates in force",
            [(f"dmsac_reward_scale{sel}", "reward scale"), (f"dmsac_learning_rate{sel}", "lr {{network}}")],
        ),
    ]


def _throughput(sel: str) -> list[dict]:
    updates, steps_ = f"rate(dmsac_learner_updates_total{sel}[{RATE}])", f"rate(dmsac_env_steps_total{sel}[{RATE}])"
    return [
        panel("Env steps / s", [(steps_, "env steps/s")]),
        panel("Updates / s", [(updates, "updates/s")]),
        panel("Update-to-data ratio", [(f"{updates} / {steps_}", "updates per env step")]),
        panel(
            "Policy lag and weights version",
            [(f"dmsac_policy_lag_versions{sel}", "lag (versions)"), (f"dmsac_weights_version{sel}", "weights version")],
        ),
        panel("Replay size", [(f"dmsac_replay_size{sel}", "transitions")]),
    ]


def _checkpoints(sel: str, t: Thresholds) -> list[dict]:
    return [
        panel(
            "Checkpoint steps", [(f"dmsac_checkpoint_step{sel}", "last written"), (f"dmsac_last_good_checkpoint_step{sel}", "last good")],
            kind="stat",
        ),
        panel(
            "Time since last checkpoint", [(f"time() - dmsac_checkpoint_last_success_timestamp_seconds{sel}", "age")],
            unit="s", lines=steps(("green", None), ("red", t.stale_seconds)),
        ),
    ]  # fmt: skip


def _actors(sel: str, t: Thresholds) -> list[dict]:
    return [
        panel("Actors alive", [(f"dmsac_actors_alive{sel}", "alive")], kind="stat",
              lines=steps(("red", None), ("green", t.min_actors))),
        panel(
            "Actor and learner restarts",
            [
                (f"increase(dmsac_actor_restarts_total{sel}[{RATE}])", "rollout actor restarts"),
                (f"max by (run) (dmsac_learner_restarts_total{sel})", "learner restarts (run total)"),
            ],
            description="A learner that died is replaced from last_good; its counter carries the run's total.",
        ),
        panel("Run", [(f"dmsac_build_info{sel}", "")], kind="table"),
    ]  # fmt: skip


def sections(config: Config) -> list[tuple[str, list[dict]]]:
    """The dashboard's rows and their panels, in order."""
    t, sel = thresholds(config), f'{{job="{config.alerts.job}"}}'
    panels = stat_panels(sel, t)
    return [
        ("Health", _health(sel)),
        ("Gradients", _gradients(panels, sel)),
        ("Q values", [panels["Q mean (scaled units)"], panels["Q std (scaled units)"]]),
        ("Learning", _learning(panels, sel)),
        ("Throughput", _throughput(sel)),
        ("Checkpoints", _checkpoints(sel, t)),
        ("Actors", _actors(sel, t)),
        ("Alerts", [alert_list()]),
    ]


def layout(rows: list[tuple[str, list[dict]]]) -> list[dict]:
    """Row panels and their panels with ids and grid positions (at most 4 panels a line)."""
    out: list[dict] = []
    y = 0
    for title, panels in rows:
        out.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        y += 1
        per_line = max(1, min(len(panels), 4))  # a row without panels takes its title line only
        width = GRID_WIDTH // per_line
        for i, p in enumerate(panels):
            line, col = divmod(i, per_line)
            out.append(
                {**p, "gridPos": {"h": PANEL_HEIGHT, "w": width, "x": col * width, "y": y + line * PANEL_HEIGHT}}
            )
        y += -(-len(panels) // per_line) * PANEL_HEIGHT
    return [{"id": i + 1, **p} for i, p in enumerate(out)]


def dashboard(config: Config) -> dict[str, Any]:
    datasource_var = {
        "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
    }  # fmt: skip
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Health of a dmsac SAC learner: gradients, Q values, NaN events, throughput, checkpoints, actors.",
        "tags": ["dmsac", "sac", "ray"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {"list": [datasource_var]},
        "annotations": {"list": []},
        "panels": layout(sections(config)),
    }


def render_dashboard(config: Config) -> str:
    """The text of deploy/grafana/dashboard.json for ``config`` (deterministic)."""
    return json.dumps(dashboard(config), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of a dashboard dict."""
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
