"""The shipped alert rules: file == render, promtool check/test, a firing and a quiet case per alert, runbook.

What ``cluster.alerts`` renders for a config: tests/cluster/test_alerts.py.
"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from cluster import alerts
from cluster.alerts import alert_groups, render_rules
from cluster.config import Config, load_config

from .prom_helpers import ADDED_ALERTS, PROM_DIR, PROMTOOL, REPO, SPEC_ALERTS, promtool

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (make promtool installs it)")


def test_shipped_rules_are_the_render_of_the_default_config() -> None:
    shipped = (PROM_DIR / "alerts.yml").read_text()
    assert shipped == render_rules(load_config(REPO / "configs" / "vehicle.yaml"))
    assert shipped == render_rules(Config())  # what cluster.kube renders for the PrometheusRule
    assert yaml.safe_load(shipped)["groups"] == alert_groups(Config())
    assert alerts.main(["render", "--check"]) == 0


@needs_promtool
def test_promtool_check_rules_is_clean() -> None:
    result = promtool("check", "rules", str(PROM_DIR / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SPEC_ALERTS | ADDED_ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts.test.yml", cwd=PROM_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    suite = yaml.safe_load((PROM_DIR / "alerts.test.yml").read_text())
    firing, quiet = set(), set()
    for test in suite["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == SPEC_ALERTS | ADDED_ALERTS
    assert quiet == SPEC_ALERTS | ADDED_ALERTS
    inputs = " ".join(s["values"] for t in suite["tests"] for s in t["input_series"])
    assert "NaN" in inputs and "-20000" in inputs  # the seed's two traps are exercised


@needs_promtool
@pytest.mark.slow
@pytest.mark.parametrize(
    ("broken", "failing_case"),
    [
        (('abs(dmsac_q_mean{job="dmsac"})', 'dmsac_q_mean{job="dmsac"}'), "Q mean of -20000 fires"),
        (("\n      or label_replace(dmsac_q_mean", "\n      or label_replace(dmsac_nothing"), "a NaN gauge fires"),
    ],
    ids=["without-abs", "without-nan-check"],
)
def test_the_unit_tests_catch_the_seeds_traps(tmp_path, broken: tuple[str, str], failing_case: str) -> None:
    """A rules file without abs() or without x != x fails the promtool suite (so the suite has teeth)."""
    text = (PROM_DIR / "alerts.yml").read_text()
    assert broken[0] in text
    (tmp_path / "alerts.yml").write_text(text.replace(broken[0], broken[1]))
    shutil.copy(PROM_DIR / "alerts.test.yml", tmp_path / "alerts.test.yml")
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode == 1
    failed = re.findall(r"name: (.+),", result.stdout + result.stderr)
    assert [n for n in failed if n.startswith(failing_case)], result.stdout + result.stderr


def test_runbook_has_a_section_for_every_alert() -> None:
    runbook = (PROM_DIR / "RUNBOOK.md").read_text()
    headings = {h.strip() for h in re.findall(r"^## (.+)$", runbook, flags=re.M)}
    assert headings >= SPEC_ALERTS
    seed_steps = runbook.split("## If NaN occurs again", 1)[1].split("\n## ", 1)[0]
    for step in ("learner.reward_scale", "learner.lr", "context", "--resume auto"):
        assert step in seed_steps, step
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", runbook):  # in-page links resolve
        assert anchor in {h.lower().replace(" ", "-") for h in headings}, anchor
