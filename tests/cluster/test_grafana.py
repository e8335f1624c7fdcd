"""``python -m cluster.grafana``: ``render`` / ``render-alerts`` (and ``--check``), ``push`` to Grafana's API.

No Grafana server runs in the test suite: ``push`` talks to a local HTTP endpoint that checks
what Grafana's ``POST /api/dashboards/db`` expects (JSON body with the dashboard, ``overwrite``,
Bearer token) and answers the way Grafana does; for the alert rules it keeps folders, rules
(``PUT``/``POST``/``GET /api/v1/provisioning/alert-rules``, 404 for a uid it does not hold, 400 for
a rule in a missing folder or without a required field) and rule-group intervals the way
Grafana's provisioning API does. Unverified here: Grafana evaluating the rules.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from grafana_client import GrafanaApi

from cluster import alerts, grafana
from cluster.alerts import load
from cluster.dashboard import render_dashboard
from cluster.grafana_alerts import api_rules, grafana_text, render_alert_rules, rule_uid
from tests.deploy.prom_helpers import REPO, free_port

TOKEN = "glsa_test-token-0123456789abcdef"
SHIPPED = json.loads((REPO / "deploy" / "grafana" / "dashboard.json").read_text())
SHIPPED_ALERTS = yaml.safe_load((REPO / "deploy" / "grafana" / "provisioning" / "alerting" / "dmsac-alerts.yml").read_text())
RULES = "/api/v1/provisioning/alert-rules"
SERIES_RETURNED = "$A == $A || is_nan($A)"
"""Grafana's condition for "query A returned this series", written out (not imported) so the check stands alone."""
REQUIRED = {"title", "condition", "data", "folderUID", "ruleGroup", "orgID", "for", "noDataState", "execErrState"}
"""The fields Grafana's ProvisionedAlertRule requires."""


class FakeGrafana(BaseHTTPRequestHandler):
    requests: list[dict] = []
    status = 200
    """The dashboard endpoint's answer."""
    rule_status = 0
    """Nonzero: the alert-rule endpoints refuse with this status."""
    folders: dict[str, dict] = {}
    rules: dict[str, dict] = {}
    intervals: dict[tuple[str, str], int] = {}

    def _record(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append(
            {"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
             "type": self.headers.get("Content-Type"), "provenance": self.headers.get("X-Disable-Provenance"),
             "body": body}
        )  # fmt: skip
        return body

    def _answer(self, status: int, answer: object) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dashboard(self, body: dict) -> None:
        if self.status == 200:
            uid = body["dashboard"]["uid"]
            answer = {
                "id": 7,
                "uid": uid,
                "url": f"/d/{uid}/dmsac-learner",
                "status": "success",
                "version": 3,
                "slug": "dmsac-learner",
            }
        else:
            answer = {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        self._answer(self.status, answer)

    def _save_rule(self, body: dict, status: int) -> None:
        missing = REQUIRED - set(body)
        if self.rule_status:
            self._answer(self.rule_status, {"message": "invalid alert rule: rule is too spicy"})
        elif missing:
            self._answer(400, {"message": f"missing {sorted(missing)}"})
        elif body["folderUID"] not in self.folders:
            self._answer(400, {"message": "folder does not exist"})
        else:
            self.rules[body["uid"]] = {**body, "provenance": "api"}
            self._answer(status, self.rules[body["uid"]])

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._record()
        kind, _, uid = self.path.rpartition("/")
        if kind == "/api/folders":
            found = self.folders.get(uid)
            self._answer(200 if found else 404, found or {"message": "folder not found"})
        elif self.path == RULES:
            self._answer(200, list(self.rules.values()))
        elif kind == RULES:
            found = self.rules.get(uid)
            self._answer(200 if found else 404, found or {"message": "could not find alert rule"})
        else:
            self._answer(404, {"message": "Not found"})

    def do_POST(self) -> None:  # noqa: N802
        body = self._record()
        if self.path == "/api/dashboards/db":
            self._dashboard(body)
        elif self.path == "/api/folders":
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(self.folders) + 1}
            self._answer(200, self.folders[body["uid"]])
        elif self.path == RULES and body.get("uid") in self.rules:
            self._answer(409, {"message": "conflict: a rule with this uid exists"})
        elif self.path == RULES:
            self._save_rule(body, 201)
        else:
            self._answer(404, {"message": "Not found"})

    def do_PUT(self) -> None:  # noqa: N802
        body = self._record()
        kind, _, uid = self.path.rpartition("/")
        parts = self.path.split("/")  # /api/v1/provisioning/folder/{folder}/rule-groups/{group}
        if kind == RULES and uid not in self.rules:
            self._answer(404, {"message": "could not find alert rule"})
        elif kind == RULES:
            self._save_rule({**body, "uid": uid}, 200)
        elif parts[:5] == ["", "api", "v1", "provisioning", "folder"] and parts[6] == "rule-groups":
            if "rules" in body:  # newer Grafana replaces the whole group (deleting rules left out)
                self._answer(400, {"message": "this fake takes interval-only updates"})
            else:
                self.intervals[(parts[5], parts[7])] = body["interval"]
                self._answer(200, {"title": parts[7], "folderUid": parts[5], "interval": body["interval"]})
        else:
            self._answer(404, {"message": "Not found"})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_grafana() -> Iterator[tuple[str, type[FakeGrafana]]]:
    handler = type(
        "Handler", (FakeGrafana,),
        {"requests": [], "status": 200, "rule_status": 0, "folders": {}, "rules": {}, "intervals": {}},
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_push_posts_the_dashboard_with_overwrite_and_bearer_token(fake_grafana, monkeypatch, capsys, caplog) -> None:
    url, handler = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    assert grafana.main(["push", "--url", url, "--folder", "ml-folder", "--message", "v2 thresholds"]) == 0
    request = handler.requests[0]  # then the alert rules (test_push_sends_the_alert_rules_...)
    assert (request["method"], request["path"]) == ("POST", "/api/dashboards/db")
    assert request["auth"] == f"Bearer {TOKEN}"
    assert request["type"].startswith("application/json")
    body = request["body"]
    assert (body["overwrite"], body["folderUid"], body["message"]) == (True, "ml-folder", "v2 thresholds")
    assert body["dashboard"]["id"] is None
    assert body["dashboard"]["uid"] == "dmsac-learner"
    assert body["dashboard"]["panels"] == SHIPPED["panels"]
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == f"pushed dmsac-learner (version 3): {url}/d/dmsac-learner/dmsac-learner"
    assert TOKEN not in out.out + out.err + caplog.text


def test_missing_token_is_a_clear_error_and_sends_nothing(fake_grafana, monkeypatch, capsys) -> None:
    url, handler = fake_grafana
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert grafana.main(["push", "--url", url]) == 1
    assert "GRAFANA_TOKEN is not set" in capsys.readouterr().err
    assert handler.requests == []


def test_a_refusal_is_reported_without_the_token(fake_grafana, monkeypatch, capsys, caplog) -> None:
    url, handler = fake_grafana
    handler.status = 412
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert grafana.main(["push", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: Grafana at {url} refused the dashboard: ") and "412" in err
    assert len(handler.requests) == 1 and "folderUid" not in handler.requests[0]["body"]
    assert TOKEN not in err + caplog.text


def test_the_token_comes_stripped_from_the_environment_and_an_empty_one_is_refused() -> None:
    assert grafana.token_from_env({"GRAFANA_TOKEN": "  glsa_abc\n"}) == "glsa_abc"
    for environ in ({}, {"GRAFANA_TOKEN": " \t"}):
        with pytest.raises(grafana.PushError, match=r"^GRAFANA_TOKEN is not set: create a Grafana service-account"):
            grafana.token_from_env(environ)


def test_display_url_drops_only_the_credentials() -> None:
    assert grafana.display_url("https://admin:pw@grafana.example:3000/sub") == "https://grafana.example:3000/sub"
    assert grafana.display_url("https://admin@grafana.example/d/x") == "https://grafana.example/d/x"
    assert grafana.display_url("http://grafana:3000") == "http://grafana:3000"
    assert grafana.display_url("not a url") == "not a url"  # no host: shown as given
    assert grafana.display_url("http://u:p@[::1]:3000/a") == "http://[::1]:3000/a"  # IPv6 keeps its brackets


def test_upload_payload_names_the_folder_and_leaves_the_board_alone() -> None:
    assert grafana.upload_payload({"id": 12, "uid": "u"}) == {
        "dashboard": {"id": None, "uid": "u"}, "overwrite": True, "message": "dmsac: push dashboard"
    }  # fmt: skip
    board = {"id": 12, "uid": "u", "title": "t"}
    assert grafana.upload_payload(board, folder="f1", message="m") == {
        "dashboard": {"uid": "u", "title": "t", "id": None}, "overwrite": True, "message": "m", "folderUid": "f1"
    }  # fmt: skip
    assert board == {"id": 12, "uid": "u", "title": "t"}


def test_an_unreachable_grafana_is_reported_without_the_credentials(monkeypatch, capsys) -> None:
    port = free_port()  # bound and released: nothing listens there
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert grafana.main(["push", "--url", f"http://admin:pw@127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot reach Grafana at http://127.0.0.1:{port}: ConnectionError\n"


@pytest.mark.parametrize(
    ("option", "what", "text", "why"),
    [
        ("--dashboard", "dashboard", "{not json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("--alerts", "alert rules", "apiVersion: 2\n", "not a Grafana alerting provisioning file (apiVersion 1 with groups)"),
    ],
)  # fmt: skip
def test_an_unreadable_file_exits_2_and_sends_nothing(fake_grafana, tmp_path, monkeypatch, capsys, option, what, text, why):
    """Both files are read before anything is sent: a broken or missing one exits 2 naming the file and why."""
    url, handler = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    broken, missing = tmp_path / "broken", tmp_path / "missing"
    broken.write_text(text)
    for path in (broken, missing):
        assert grafana.main(["push", "--url", url, option, str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: cannot read {what} {broken}: {why}",
        f"error: cannot read {what} {missing}: [Errno 2] No such file or directory: '{missing}'",
    ]
    assert handler.requests == []


def threshold_values(board: dict, title: str) -> list[float | None]:
    [panel] = [p for p in board["panels"] if p["title"] == title]
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_render_writes_the_dashboard_of_the_config_and_check_finds_it_stale(tmp_path, capsys) -> None:
    out = tmp_path / "grafana" / "dashboard.json"
    assert grafana.main(["render", "--set", "learner.max_grad_norm=10", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    written = json.loads(out.read_text())
    assert threshold_values(written, "Policy gradient norm (before clipping)") == [None, 9.0, 10.0]  # 0.9 x clip 10
    assert grafana.main(["render", "--set", "learner.max_grad_norm=10", "--out", str(out), "--check"]) == 0
    assert grafana.main(["render", "--out", str(out), "--check"]) == 1  # the default clip (5) draws other lines
    assert capsys.readouterr().err == f"{out} is stale: run python -m cluster.grafana render\n"
    assert grafana.main(["render", "--out", "-"]) == 0
    assert capsys.readouterr().out == render_dashboard(load(None, []))


def test_render_with_a_bad_config_key_exits_2(tmp_path, capsys) -> None:
    assert grafana.main(["render", "--set", "alerts.bogus=1", "--out", str(tmp_path / "d.json")]) == 2
    assert ": alerts.bogus: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "d.json").exists()


def mirror_mismatches(prometheus_groups: list[dict], grafana_groups: list[dict], datasource: str) -> list[str]:
    """Where a Grafana rule differs from its Prometheus rule (empty: every rule mirrors its twin)."""
    twins = {r["title"]: r for g in grafana_groups for r in g["rules"]}
    prom = {r["alert"]: r for g in prometheus_groups for r in g["rules"]}
    wrong = [f"rules: {sorted(prom)} != {sorted(twins)}"] if set(prom) != set(twins) else []
    for name, rule in prom.items():
        twin = twins.get(name, {"data": [{}, {}]})
        query, condition = twin["data"]
        expected = {
            "uid": rule_uid(name),
            "query": rule["expr"],
            "datasource": (datasource, {"type": "prometheus", "uid": datasource}),
            "instant": (True, False),
            "condition": ("B", "B", "math", SERIES_RETURNED),
            "for": rule["for"],
            "labels": rule["labels"],
            "summary": rule["annotations"]["summary"],
            "runbook_url": rule["annotations"]["runbook_url"],
            "description": grafana_text(rule["annotations"]["description"]),
        }
        model, cond = query.get("model", {}), condition.get("model", {})
        actual = {
            "uid": twin.get("uid"),
            "query": model.get("expr"),
            "datasource": (query.get("datasourceUid"), model.get("datasource")),
            "instant": (model.get("instant"), model.get("range")),
            "condition": (twin.get("condition"), condition.get("refId"), cond.get("type"), cond.get("expression")),
            "for": twin.get("for"),
            "labels": twin.get("labels"),
            **{k: twin.get("annotations", {}).get(k) for k in ("summary", "runbook_url", "description")},
        }
        wrong += [f"{name}.{k}: {actual[k]!r} != {expected[k]!r}" for k in expected if actual[k] != expected[k]]
    return wrong


@pytest.mark.parametrize(
    "overrides",
    [[], ["safety.warnings.q_std_max=123", "alerts.sustain_for=7m"]],
    ids=["default", "q_std_max=123,sustain_for=7m"],
)
def test_every_grafana_rule_mirrors_its_prometheus_rule(tmp_path, overrides: list[str]) -> None:
    sets = [x for o in overrides for x in ("--set", o)]
    assert alerts.main(["render", *sets, "--out", str(tmp_path / "alerts.yml")]) == 0
    assert grafana.main(["render-alerts", *sets, "--out", str(tmp_path / "grafana.yml")]) == 0
    prometheus = yaml.safe_load((tmp_path / "alerts.yml").read_text())["groups"]
    twins = yaml.safe_load((tmp_path / "grafana.yml").read_text())
    assert twins["apiVersion"] == 1 and len(twins["groups"]) == len(prometheus) == 1
    assert mirror_mismatches(prometheus, twins["groups"], "dmsac-prometheus") == []
    rules = {r["title"]: r for r in twins["groups"][0]["rules"]}
    spread, grad = rules["DmsacQValueSpreadHigh"], rules["DmsacPolicyGradNormNearClip"]
    if overrides:  # the new numbers, not only equal on both sides
        assert spread["data"][0]["model"]["expr"] == 'dmsac_q_std{job="dmsac"} > 123'
        assert spread["annotations"]["description"].endswith("is {{ $values.A.Value | humanize }} (limit 123).")
        assert (spread["for"], grad["for"], rules["DmsacLearnerDown"]["for"]) == ("7m", "7m", "2m")
    else:
        assert spread["data"][0]["model"]["expr"] == 'dmsac_q_std{job="dmsac"} > 5000'
        assert (spread["for"], grad["for"], rules["DmsacLearnerDown"]["for"]) == ("5m", "5m", "2m")
    assert twins["groups"][0]["interval"] == "30s"


def test_the_mirror_check_finds_a_drifted_rule() -> None:
    """The comparison above can fail: one changed threshold, one changed label, one missing rule."""
    prometheus = alerts.alert_groups(load(None, []))
    twins = yaml.safe_load(render_alert_rules(load(None, [])))["groups"]
    rules = twins[0]["rules"]
    rules[0]["data"][0]["model"]["expr"] = rules[0]["data"][0]["model"]["expr"].replace("4.5", "4.6")
    rules[1]["labels"] = {"severity": "critical"}
    del rules[-1]
    wrong = mirror_mismatches(prometheus, twins, "dmsac-prometheus")
    assert wrong[0].startswith("rules: ")
    assert "DmsacPolicyGradNormNearClip.query: 'dmsac_policy_grad_norm{job=\"dmsac\"} > 4.6' != " in wrong[1]
    assert wrong[2] == "DmsacQGradNormNearClip.labels: {'severity': 'critical'} != {'severity': 'warning'}"
    assert wrong[3].startswith("DmsacActorsDown.uid: None != 'dmsac-actors-down'")


def test_render_alerts_writes_checks_and_prints(tmp_path, capsys) -> None:
    out = tmp_path / "alerting" / "rules.yml"
    assert grafana.main(["render-alerts", "--datasource-uid", "prom-b", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.read_text() == render_alert_rules(load(None, []), "prom-b")
    twins = yaml.safe_load(out.read_text())["groups"]
    assert mirror_mismatches(alerts.alert_groups(load(None, [])), twins, "prom-b") == []
    assert grafana.main(["render-alerts", "--datasource-uid", "prom-b", "--out", str(out), "--check"]) == 0
    assert grafana.main(["render-alerts", "--out", str(out), "--check"]) == 1  # the default datasource differs
    assert capsys.readouterr().err == f"{out} is stale: run python -m cluster.grafana render-alerts\n"
    assert grafana.main(["render-alerts", "--out", "-"]) == 0
    assert capsys.readouterr().out == render_alert_rules(load(None, []))
    assert grafana.main(["render-alerts", "--set", "alerts.sustain_for=45s", "--out", "-"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["groups"][0]["interval"] == "10s"  # 30 s does not divide 45 s
    assert grafana.main(["render-alerts", "--set", "alerts.bogus=1", "--out", str(tmp_path / "x.yml")]) == 2
    assert ": alerts.bogus: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "x.yml").exists()


def rule_requests(handler: type[FakeGrafana]) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in handler.requests if r["path"] != "/api/dashboards/db"]


def test_push_sends_the_alert_rules_with_the_token_and_gets_them_back(fake_grafana, monkeypatch, capsys, caplog) -> None:
    url, handler = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    assert grafana.main(["push", "--url", url]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[1] == "pushed 13 alert rules to folder dmsac (13 created, 0 replaced)"
    uids = [r["uid"] for r in SHIPPED_ALERTS["groups"][0]["rules"]]
    assert rule_requests(handler) == [
        ("GET", "/api/folders/dmsac"), ("POST", "/api/folders"),
        *[call for uid in uids for call in (("PUT", f"{RULES}/{uid}"), ("POST", RULES))],
        ("PUT", "/api/v1/provisioning/folder/dmsac/rule-groups/dmsac"),
    ]  # fmt: skip
    assert {r["auth"] for r in handler.requests} == {f"Bearer {TOKEN}"}
    assert {r["provenance"] for r in handler.requests} == {None}  # provisioned: not editable in the UI
    assert handler.folders["dmsac"]["title"] == "dmsac"
    assert handler.intervals == {("dmsac", "dmsac"): 30}
    back = GrafanaApi.from_url(url, credential=TOKEN).alertingprovisioning.get_alertrules_all()
    assert back == [{**rule, "provenance": "api"} for rule in api_rules(SHIPPED_ALERTS, "dmsac")]
    assert mirror_mismatches(alerts.alert_groups(load(None, [])), [{"rules": back}], "dmsac-prometheus") == []
    assert TOKEN not in out.out + out.err + caplog.text


def test_pushing_again_replaces_the_rules_by_uid(fake_grafana, tmp_path, monkeypatch, capsys) -> None:
    url, handler = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert grafana.main(["push", "--url", url, "--alerts-folder", "ml-alerts"]) == 0
    changed = tmp_path / "rules.yml"
    assert grafana.main(["render-alerts", "--set", "safety.warnings.q_std_max=123", "--out", str(changed)]) == 0
    handler.requests.clear()
    capsys.readouterr()
    assert grafana.main(["push", "--url", url, "--alerts-folder", "ml-alerts", "--alerts", str(changed)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "pushed 13 alert rules to folder ml-alerts (0 created, 13 replaced)"
    calls = rule_requests(handler)
    assert calls[0] == ("GET", "/api/folders/ml-alerts")  # found: not created again
    assert [m for m, _ in calls[1:-1]] == ["PUT"] * 13 and calls[-1][0] == "PUT"
    assert len(handler.rules) == 13 and list(handler.folders) == ["ml-alerts"]
    spread = handler.rules["dmsac-q-value-spread-high"]
    assert spread["data"][0]["model"]["expr"] == 'dmsac_q_std{job="dmsac"} > 123'
    assert {r["folderUID"] for r in handler.rules.values()} == {"ml-alerts"}


def test_a_refused_rule_is_reported_without_the_token(fake_grafana, monkeypatch, capsys, caplog) -> None:
    url, handler = fake_grafana
    handler.rule_status = 400
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert grafana.main(["push", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: Grafana at {url} refused alert rule dmsac-policy-grad-norm-near-clip: Bad Input: ")
    assert "rule is too spicy" in err
    assert handler.rules == {} and handler.intervals == {}  # stopped at the first refusal
    assert TOKEN not in err + caplog.text


def test_no_alerts_pushes_the_dashboard_only(fake_grafana, monkeypatch, capsys) -> None:
    url, handler = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert grafana.main(["push", "--url", url, "--no-alerts"]) == 0
    assert [(r["method"], r["path"]) for r in handler.requests] == [("POST", "/api/dashboards/db")]
    assert capsys.readouterr().out == f"pushed dmsac-learner (version 3): {url}/d/dmsac-learner/dmsac-learner\n"
