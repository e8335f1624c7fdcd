"""``python -m cluster.grafana push`` against a local HTTP endpoint that checks Grafana's dashboard API.

No Grafana server runs in the test suite: the endpoint below checks what Grafana's
``POST /api/dashboards/db`` expects (JSON body with the dashboard, ``overwrite``,
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

from .prom_helpers import REPO

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
