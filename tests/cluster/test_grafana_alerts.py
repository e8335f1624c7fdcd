"""``cluster.grafana_alerts``: the Grafana twins of the Prometheus rules (mapping, states, uids, API bodies).

That every Grafana rule mirrors its Prometheus rule, for the default config and changed
thresholds, through both render commands: tests/cluster/test_grafana.py. The shipped
provisioning file (== the render of the default config): tests/deploy/test_dashboard.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cluster import grafana_alerts as ga
from cluster.alerts import alert_groups
from cluster.config import Config
from tests.deploy.prom_helpers import ADDED_ALERTS, SPEC_ALERTS

STATES = dict.fromkeys(SPEC_ALERTS | ADDED_ALERTS, ("OK", "OK")) | {"DmsacLearnerDown": ("OK", "Alerting")}
"""(noDataState, execErrState) per rule: no data is every rule's quiet state (the comparison is in the query);
only the learner-down rule fires when Prometheus cannot be queried."""


def rules_by_title(groups: list[dict]) -> dict[str, dict]:
    return {r["title"]: r for g in groups for r in g["rules"]}


def test_the_no_data_and_error_states_per_rule() -> None:
    rules = rules_by_title(ga.grafana_groups(Config()))
    assert set(rules) == SPEC_ALERTS | ADDED_ALERTS
    assert {name: (r["noDataState"], r["execErrState"]) for name, r in rules.items()} == STATES


def test_a_rule_in_both_forms() -> None:
    """DmsacActorsDown: value 0 or 1 when it fires, so the condition cannot be a threshold on the value."""
    [prom] = [r for r in alert_groups(Config())[0]["rules"] if r["alert"] == "DmsacActorsDown"]
    assert ga.grafana_rule(prom) == {
        "uid": "dmsac-actors-down",
        "title": "DmsacActorsDown",
        "condition": "B",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": "dmsac-prometheus",
                "model": {
                    "refId": "A", "datasource": {"type": "prometheus", "uid": "dmsac-prometheus"},
                    "expr": 'dmsac_actors_alive{job="dmsac"} < 2', "instant": True, "range": False,
                    "intervalMs": 1000, "maxDataPoints": 43200,
                },  # fmt: skip
            },
            {
                "refId": "B",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "B", "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "type": "math", "expression": "$A == $A || is_nan($A)",
                },  # fmt: skip
            },
        ],
        "noDataState": "OK",
        "execErrState": "OK",
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "dmsac rollout actors down",
            "description": "{{ $labels.instance }}: {{ $values.A.Value }} rollout actors alive, 2 expected.",
            "runbook_url": "deploy/prometheus/RUNBOOK.md#dmsacactorsdown",
        },
        "isPaused": False,
    }


def test_the_group_is_the_prometheus_group_in_folder_dmsac_every_30s() -> None:
    [group] = ga.grafana_groups(Config())
    assert {k: v for k, v in group.items() if k != "rules"} == {
        "orgId": 1, "name": "dmsac", "folder": "dmsac", "interval": "30s"
    }  # fmt: skip
    assert [r["title"] for r in group["rules"]] == [r["alert"] for r in alert_groups(Config())[0]["rules"]]


def test_uids_are_the_kebab_case_names_and_fit_grafanas_limit() -> None:
    rules = rules_by_title(ga.grafana_groups(Config()))
    assert rules["DmsacQValueSpreadHigh"]["uid"] == "dmsac-q-value-spread-high"
    assert rules["DmsacLearnerDown"]["uid"] == "dmsac-learner-down"
    uids = [r["uid"] for r in rules.values()]
    assert len(set(uids)) == len(uids) == 13
    assert all(ga.UID_PATTERN.fullmatch(uid) for uid in uids)
    with pytest.raises(ValueError, match=r"gives uid 'dmsac-x-x-x.*', which Grafana refuses"):
        ga.rule_uid("Dmsac" + "X" * 40)


def test_the_evaluation_interval_divides_every_pending_period() -> None:
    assert ga.evaluation_interval(["0s", "2m", "5m"]) == "30s"
    assert ga.evaluation_interval(["0s", "90s", "1h"]) == "30s"
    assert ga.evaluation_interval(["0s", "45s"]) == "10s"  # 30 s would fire at 60 s
    assert (ga.seconds("45s"), ga.seconds("7m"), ga.seconds("2h")) == (45, 420, 7200)


def test_descriptions_use_query_as_value_and_keep_everything_else() -> None:
    assert ga.grafana_text("{{ $value | humanize }} of {{ $labels.x }}") == "{{ $values.A.Value | humanize }} of {{ $labels.x }}"
    assert ga.grafana_text("{{ $value | humanizeDuration }} ago") == "{{ $values.A.Value | humanizeDuration }} ago"
    assert ga.grafana_text(ga.grafana_text("{{ $value }}")) == "{{ $values.A.Value }}"  # $values is left alone
    assert ga.grafana_text("no template") == "no template"


def strings_outside(node: Any, skip: set[str], path: str = "") -> list[tuple[str, str]]:
    """Every (path, string) in ``node`` except under keys named in ``skip``."""
    if isinstance(node, dict):
        return [x for k, v in node.items() if k not in skip for x in strings_outside(v, skip, f"{path}.{k}")]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in strings_outside(v, skip, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def test_dollar_signs_only_where_grafana_does_not_expand_environment_variables() -> None:
    """Grafana's file provisioning expands $NAME in strings, except in annotations and the query models."""
    groups = ga.grafana_groups(Config())
    assert [(p, s) for p, s in strings_outside(groups, {"annotations", "model"}) if "$" in s] == []
    assert any("$" in s for _, s in strings_outside(groups, set()))  # the check looks at the right strings


def test_a_datasource_uid_goes_into_every_prometheus_query_and_nowhere_else() -> None:
    for rule in ga.grafana_groups(Config(), datasource_uid="prom-b")[0]["rules"]:
        query, condition = rule["data"]
        assert (query["datasourceUid"], query["model"]["datasource"]) == ("prom-b", {"type": "prometheus", "uid": "prom-b"})
        assert condition["datasourceUid"] == condition["model"]["datasource"]["uid"] == "__expr__"


def test_api_rules_name_the_folder_by_uid_and_the_group_per_rule() -> None:
    provisioning = yaml.safe_load(ga.render_alert_rules(Config()))
    bodies = ga.api_rules(provisioning, "f-uid")
    file_rules = provisioning["groups"][0]["rules"]
    assert len(bodies) == len(file_rules) == 13
    for body, rule in zip(bodies, file_rules, strict=True):
        assert body == {**rule, "orgID": 1, "folderUID": "f-uid", "ruleGroup": "dmsac"}
    assert ga.interval_seconds(provisioning) == {"dmsac": 30}


def test_read_provisioning_refuses_what_push_cannot_send(tmp_path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(ga.render_alert_rules(Config()))
    assert ga.read_provisioning(path) == yaml.safe_load(ga.render_alert_rules(Config()))
    cases = {
        "groups: [\n": r"^not YAML: ",
        "apiVersion: 2\ngroups: []\n": r"^not a Grafana alerting provisioning file",
        "apiVersion: 1\ngroups:\n- name: g\n  rules: []\n": r"^group without interval$",
        "apiVersion: 1\ngroups:\n- {name: g, interval: 30s, rules: [{title: t}]}\n": r"^group g: a rule without uid",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            ga.read_provisioning(path)


def test_render_starts_with_the_header_and_writes_multiline_promql_as_blocks() -> None:
    """Deterministic across processes: tests/deploy/test_dashboard.py compares the shipped file (another process's
    render) with this process's; two renders in one process would agree even if one came from a set's order."""
    text = ga.render_alert_rules(Config())
    assert text.startswith(ga.HEADER + "apiVersion: 1\ngroups:\n- orgId: 1\n  name: dmsac\n  folder: dmsac\n")
    assert '        expr: |-\n          up{job="dmsac"} == 0\n          or absent(up{job="dmsac"})\n' in text


def test_datasource_queries_have_a_range_grafana_accepts() -> None:
    """Grafana refuses a datasource query whose relativeTimeRange has from <= to (expressions are exempt)."""
    for rule in ga.grafana_groups(Config())[0]["rules"]:
        for item in rule["data"]:
            span = item["relativeTimeRange"]
            assert item["datasourceUid"] == "__expr__" or span["from"] > span["to"] >= 0, rule["title"]
