"""``python -m cluster.grafana``: ``render`` (and ``--check``) of the dashboard file, ``push`` to Grafana's API.

No Grafana server runs in the test suite: ``push`` talks to a local HTTP endpoint that checks
what Grafana's ``POST /api/dashboards/db`` expects (JSON body with the dashboard, ``overwrite``,
Bearer token) and answers the way Grafana does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cluster import grafana
from cluster.alerts import load
from cluster.dashboard import render_dashboard
from tests.deploy.prom_helpers import REPO, free_port

TOKEN = "glsa_test-token-0123456789abcdef"
SHIPPED = json.loads((REPO / "deploy" / "grafana" / "dashboard.json").read_text())


class FakeGrafana(BaseHTTPRequestHandler):
    requests: list[dict] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"),
             "type": self.headers.get("Content-Type"), "body": json.loads(body)}
        )  # fmt: skip
        if self.status == 200:
            uid = json.loads(body)["dashboard"]["uid"]
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
        data = json.dumps(answer).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_grafana() -> Iterator[tuple[str, type[FakeGrafana]]]:
    handler = type("Handler", (FakeGrafana,), {"requests": [], "status": 200})
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
    [request] = handler.requests
    assert request["path"] == "/api/dashboards/db"
    assert request["auth"] == f"Bearer {TOKEN}"
    assert request["type"].startswith("application/json")
    body = request["body"]
    assert (body["overwrite"], body["folderUid"], body["message"]) == (True, "ml-folder", "v2 thresholds")
    assert body["dashboard"]["id"] is None
    assert body["dashboard"]["uid"] == "dmsac-learner"
    assert body["dashboard"]["panels"] == SHIPPED["panels"]
    out = capsys.readouterr()
    assert out.out == f"pushed dmsac-learner (version 3): {url}/d/dmsac-learner/dmsac-learner\n"
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
    assert "refused the dashboard" in err and "412" in err
    assert len(handler.requests) == 1 and "folderUid" not in handler.requests[0]["body"]
    assert TOKEN not in err + caplog.text


def test_credentials_in_the_url_are_not_echoed() -> None:
    assert grafana.display_url("https://admin:pw@grafana.example:3000/sub") == "https://grafana.example:3000/sub"
    assert grafana.upload_payload({"id": 12, "uid": "u"}) == {
        "dashboard": {"id": None, "uid": "u"}, "overwrite": True, "message": "dmsac: push dashboard"
    }  # fmt: skip


def test_the_token_comes_stripped_from_the_environment_and_an_empty_one_is_refused() -> None:
    assert grafana.token_from_env({"GRAFANA_TOKEN": "  glsa_abc\n"}) == "glsa_abc"
    for environ in ({}, {"GRAFANA_TOKEN": " \t"}):
        with pytest.raises(grafana.PushError, match=r"^GRAFANA_TOKEN is not set: create a Grafana service-account"):
            grafana.token_from_env(environ)


def test_display_url_drops_only_the_user_part() -> None:
    assert grafana.display_url("https://admin@grafana.example/d/x") == "https://grafana.example/d/x"
    assert grafana.display_url("http://grafana:3000") == "http://grafana:3000"
    assert grafana.display_url("not a url") == "not a url"  # no host: shown as given


def test_upload_payload_names_the_folder_and_leaves_the_board_alone() -> None:
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


def test_an_unreadable_dashboard_file_exits_2_and_sends_nothing(fake_grafana, tmp_path, monkeypatch, capsys) -> None:
    url, handler = fake_grafana
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    (tmp_path / "board.json").write_text("{not json")
    assert grafana.main(["push", "--url", url, "--dashboard", str(tmp_path / "board.json")]) == 2
    assert grafana.main(["push", "--url", url, "--dashboard", str(tmp_path / "missing.json")]) == 2
    bad_json, missing = capsys.readouterr().err.splitlines()
    assert bad_json.startswith(f"error: cannot read dashboard {tmp_path / 'board.json'}: ")
    assert missing.startswith(f"error: cannot read dashboard {tmp_path / 'missing.json'}: [Errno 2]")
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
