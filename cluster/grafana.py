"""Render the Grafana dashboard, or push it to a running Grafana.

``python -m cluster.grafana render [--config C] [--out deploy/grafana/dashboard.json] [--check]``
``python -m cluster.grafana push --url URL [--dashboard PATH] [--folder UID] [--message TEXT]``

``push`` uses ``grafana-client`` (the maintained successor of the archived
``grafana-api`` package) and reads the API token from the ``GRAFANA_TOKEN``
environment variable only: never from a file or an argument, and it is never
logged or printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cluster.rendered import write_or_check

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
TOKEN_ENV = "GRAFANA_TOKEN"

log = logging.getLogger(__name__)


class PushError(RuntimeError):
    """The dashboard could not be pushed; the message is safe to show (it holds no token)."""


def token_from_env(environ: dict[str, str] | None = None) -> str:
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if not token:
        raise PushError(
            f"{TOKEN_ENV} is not set: create a Grafana service-account token with dashboard write access "
            f"and export it, e.g. `read -s {TOKEN_ENV} && export {TOKEN_ENV}`"
        )
    return token


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    return (
        urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        if parts.hostname
        else url
    )


def upload_payload(board: dict[str, Any], folder: str = "", message: str = "") -> dict[str, Any]:
    """The body of ``POST /api/dashboards/db``: the dashboard (no ``id``), overwrite on, optional folder."""
    dashboard = {k: v for k, v in board.items() if k != "id"}
    dashboard["id"] = None  # match by uid, create or replace
    payload: dict[str, Any] = {"dashboard": dashboard, "overwrite": True, "message": message or "dmsac: push dashboard"}
    if folder:
        payload["folderUid"] = folder
    return payload


def push(url: str, board: dict[str, Any], token: str, folder: str = "", message: str = "") -> dict[str, Any]:
    """Upload ``board`` to the Grafana at ``url``; returns Grafana's answer (uid, url, version, status)."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=30.0)
    try:
        answer = api.dashboard.update_dashboard(upload_payload(board, folder, message))
    except GrafanaException as err:
        # grafana-client's messages hold the status and Grafana's reply, not the request headers.
        raise PushError(f"Grafana at {display_url(url)} refused the dashboard: {err}") from None
    except Exception as err:  # connection errors from the HTTP layer
        raise PushError(f"cannot reach Grafana at {display_url(url)}: {type(err).__name__}") from None
    log.info("pushed dashboard %s to %s (version %s)", board.get("uid"), display_url(url), answer.get("version"))
    return answer


def _render(args: argparse.Namespace) -> int:
    from cluster.alerts import load
    from cluster.dashboard import render_dashboard

    text = render_dashboard(load(args.config, args.overrides))
    return write_or_check(text, args.out, args.check, "python -m cluster.grafana render")


def _push(args: argparse.Namespace) -> int:
    try:
        board = json.loads(Path(args.dashboard).read_text())
    except (OSError, ValueError) as err:
        sys.stderr.write(f"error: cannot read dashboard {args.dashboard}: {err}\n")
        return 2
    try:
        answer = push(args.url, board, token_from_env(), args.folder, args.message)
    except PushError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    sys.stdout.write(
        f"pushed {board.get('uid')} (version {answer.get('version')}): {display_url(args.url).rstrip('/')}{answer.get('url', '')}\n"
    )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.grafana", description="Render or push the Grafana dashboard."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write deploy/grafana/dashboard.json from config")
    render.add_argument("--config", default=None, help="YAML config (default: configs/vehicle.yaml)")
    render.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    render.add_argument("--out", default=str(DEFAULT_DASHBOARD))
    render.add_argument("--check", action="store_true", help="exit 1 if --out differs from the render")
    push_ = sub.add_parser("push", help=f"upload the dashboard through the HTTP API (token from ${TOKEN_ENV})")
    push_.add_argument("--url", required=True, help="Grafana base URL, e.g. https://grafana.example")
    push_.add_argument("--dashboard", default=str(DEFAULT_DASHBOARD), help="dashboard JSON to upload")
    push_.add_argument("--folder", default="", help="uid of the Grafana folder to put it in (default: General)")
    push_.add_argument("--message", default="", help="version message shown in Grafana's history")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cluster.config import ConfigError

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "push":
        return _push(args)
    try:
        return _render(args)
    except ConfigError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
