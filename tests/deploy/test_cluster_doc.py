"""deploy/CLUSTER.md agrees with the manifests and the rendered alert rules."""

from __future__ import annotations

import re

import pytest

from tests.deploy import manifest_checks as mc


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return mc.kuberay("rayjob.yaml")


def test_cluster_doc_shows_the_rayjobs_command_and_its_checks(rayjob: dict) -> None:
    doc = (mc.REPO / "deploy" / "CLUSTER.md").read_text()
    flat = " ".join(doc.replace("\\\n", " ").split())
    command = " ".join(rayjob["spec"]["entrypoint"].split())
    assert flat.count(command) == 3  # ray up submit, the RayJob's entrypoint, the standing-cluster submit
    assert "## What was verified here and what was not" in doc
    assert "(prometheus/RUNBOOK.md)" in doc


def test_cluster_doc_alert_table_lists_the_rendered_alerts() -> None:
    from cluster.alerts import load
    from cluster.kube import rule_groups

    doc = (mc.REPO / "deploy" / "CLUSTER.md").read_text()
    rows = re.findall(r"^\| \[`(Dmsac\w+)`\]\(prometheus/RUNBOOK\.md#(\w+)\) \| .+ \| (\w+) \|$", doc, re.M)
    rules = [r for g in rule_groups(load(None, [])) for r in g["rules"]]
    assert len(rows) == len(rules) == 13
    assert {(name, severity) for name, _, severity in rows} == {(r["alert"], r["labels"]["severity"]) for r in rules}
    assert [anchor for _, anchor, _ in rows] == [name.lower() for name, _, _ in rows]
    runbook = (mc.REPO / "deploy" / "prometheus" / "RUNBOOK.md").read_text()
    assert [name for name, _, _ in rows if f"\n## {name}\n" not in runbook] == []  # every link has its section
