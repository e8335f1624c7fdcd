"""Render the Grafana dashboard and alert rules, or push them to a running Grafana.

``python -m cluster.grafana render [--config C] [--out deploy/grafana/dashboard.json] [--check]``
``python -m cluster.grafana render-alerts [--config C] [--datasource-uid UID] [--out PATH] [--check]``
``python -m cluster.grafana push --url URL [--dashboard PATH] [--folder UID] [--message TEXT]
[--alerts PATH] [--alerts-folder UID] [--no-alerts]``

``render-alerts`` writes deploy/grafana/provisioning/alerting/dmsac-alerts.yml, the
Grafana-managed twins of the Prometheus rules (``cluster.grafana_alerts`` says how
they map). ``push`` uploads the dashboard, then the alert rules through the
alerting provisioning API: each rule by its uid (``PUT``, or ``POST`` when Grafana
does not have it yet), so pushing again replaces them.

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

from cluster.grafana_alerts import (
    DEFAULT_ALERTS_PATH,
    DEFAULT_DATASOURCE_UID,
    FOLDER,
    api_rules,
    interval_seconds,
    read_provisioning,
    render_alert_rules,
)
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
    """``url`` without any ``user:password@`` part, for messages (an IPv6 host keeps its brackets)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


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


def _status(err: Exception) -> int:
    return getattr(err, "status_code", 0)


def ensure_folder(api: Any, uid: str, title: str) -> bool:
    """Create the folder ``uid`` unless Grafana has it (alert rules must live in a folder); True if created."""
    from grafana_client.client import GrafanaClientError

    try:
        api.folder.get_folder(uid)
        return False
    except GrafanaClientError as err:
        if _status(err) != 404:
            raise
    api.folder.create_folder(title, uid=uid)
    return True


def upsert_rule(api: Any, rule: dict[str, Any]) -> str:
    """Replace the rule of ``rule['uid']`` (``PUT``), or create it (``POST``) when Grafana answers 404."""
    from grafana_client.client import GrafanaClientError

    try:
        api.alertingprovisioning.update_alertrule(rule["uid"], rule)
        return "replaced"
    except GrafanaClientError as err:
        if _status(err) != 404:
            raise
    api.alertingprovisioning.create_alertrule(rule)
    return "created"


def push_alert_rules(url: str, provisioning: dict[str, Any], token: str, folder: str = FOLDER) -> dict[str, list[str]]:
    """Upload a provisioning file's rules into folder uid ``folder`` and set each group's interval.

    Returns the uids by outcome (``created``, ``replaced``). The rules keep the API's
    provenance, so Grafana's UI shows them as provisioned (edit the config and push again).
    """
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    api = GrafanaApi.from_url(url, credential=token, timeout=30.0)
    done: dict[str, list[str]] = {"created": [], "replaced": []}
    step = f"folder {folder}"  # what Grafana refused, for the message
    try:
        if ensure_folder(api, folder, FOLDER):
            log.info("created folder %s in %s", folder, display_url(url))
        for rule in api_rules(provisioning, folder):
            step = f"alert rule {rule['uid']}"
            done[upsert_rule(api, rule)].append(rule["uid"])
        for group, seconds in interval_seconds(provisioning).items():
            step = f"the interval of rule group {group}"
            body = {"title": group, "folderUid": folder, "interval": seconds}  # no "rules": the interval only
            api.alertingprovisioning.update_rule_group(folder, group, body)
    except GrafanaException as err:
        raise PushError(f"Grafana at {display_url(url)} refused {step}: {err}") from None
    except Exception as err:  # connection errors from the HTTP layer
        raise PushError(f"cannot reach Grafana at {display_url(url)}: {type(err).__name__}") from None
    log.info("pushed %d alert rules to %s", len(done["created"]) + len(done["replaced"]), display_url(url))
    return done


def _render(args: argparse.Namespace) -> int:
    from cluster.alerts import load
    from cluster.dashboard import render_dashboard

    text = render_dashboard(load(args.config, args.overrides))
    return write_or_check(text, args.out, args.check, "python -m cluster.grafana render")


def _render_alerts(args: argparse.Namespace) -> int:
    from cluster.alerts import load

    text = render_alert_rules(load(args.config, args.overrides), args.datasource_uid)
    return write_or_check(text, args.out, args.check, "python -m cluster.grafana render-alerts")


def _push(args: argparse.Namespace) -> int:
    try:
        board = json.loads(Path(args.dashboard).read_text())
    except (OSError, ValueError) as err:
        sys.stderr.write(f"error: cannot read dashboard {args.dashboard}: {err}\n")
        return 2
    try:
        rules = None if args.no_alerts else read_provisioning(args.alerts)
    except (OSError, ValueError) as err:  # read both files before sending anything
        sys.stderr.write(f"error: cannot read alert rules {args.alerts}: {err}\n")
        return 2
    try:
        token = token_from_env()
        answer = push(args.url, board, token, args.folder, args.message)
        sys.stdout.write(
            f"pushed {board.get('uid')} (version {answer.get('version')}): {display_url(args.url).rstrip('/')}{answer.get('url', '')}\n"
        )
        if rules is not None:
            done = push_alert_rules(args.url, rules, token, args.alerts_folder)
            sys.stdout.write(
                f"pushed {len(done['created']) + len(done['replaced'])} alert rules to folder {args.alerts_folder} "
                f"({len(done['created'])} created, {len(done['replaced'])} replaced)\n"
            )
    except PushError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.grafana", description="Render or push the Grafana dashboard and alert rules."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write deploy/grafana/dashboard.json from config")
    render.add_argument("--config", default=None, help="YAML config (default: configs/vehicle.yaml)")
    render.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    render.add_argument("--out", default=str(DEFAULT_DASHBOARD))
    render.add_argument("--check", action="store_true", help="exit 1 if --out differs from the render")
    alerts = sub.add_parser("render-alerts", help="write the Grafana-managed alert rules (provisioning file)")
    alerts.add_argument("--config", default=None, help="YAML config (default: configs/vehicle.yaml)")
    alerts.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    alerts.add_argument(
        "--datasource-uid", default=DEFAULT_DATASOURCE_UID, help="uid of the Prometheus datasource the rules query"
    )
    alerts.add_argument("--out", default=str(DEFAULT_ALERTS_PATH), help="output file ('-' for stdout)")
    alerts.add_argument("--check", action="store_true", help="exit 1 if --out differs from the render")
    push_ = sub.add_parser(
        "push", help=f"upload the dashboard and the alert rules through the HTTP API (token from ${TOKEN_ENV})"
    )
    push_.add_argument("--url", required=True, help="Grafana base URL, e.g. https://grafana.example")
    push_.add_argument("--dashboard", default=str(DEFAULT_DASHBOARD), help="dashboard JSON to upload")
    push_.add_argument("--folder", default="", help="uid of the Grafana folder to put it in (default: General)")
    push_.add_argument("--message", default="", help="version message shown in Grafana's history")
    push_.add_argument("--alerts", default=str(DEFAULT_ALERTS_PATH), help="alert-rule provisioning file to upload")
    push_.add_argument(
        "--alerts-folder", default=FOLDER, help=f"uid of the folder for the alert rules (created if missing; {FOLDER})"
    )
    push_.add_argument("--no-alerts", action="store_true", help="upload the dashboard only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cluster.config import ConfigError

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "push":
        return _push(args)
    try:
        return _render_alerts(args) if args.command == "render-alerts" else _render(args)
    except ConfigError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
