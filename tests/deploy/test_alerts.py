"""Alert rules: shipped file == render, promtool check/test, a firing and a quiet case per alert, runbook."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from cluster import alerts
from cluster.alerts import AlertsConfig, alert_groups, num, render_rules, thresholds
from cluster.config import Config, ConfigError, load_config

from .prom_helpers import PROM_DIR, PROMTOOL, REPO, promtool

SPEC_ALERTS = {
    "DmsacPolicyGradNormNearClip", "DmsacQGradNormNearClip", "DmsacQValuesExploding", "DmsacQValueSpreadHigh",
    "DmsacNonFiniteDetected", "DmsacRollbackLoop", "DmsacLearnerDown", "DmsacTrainingStalled",
    "DmsacContextFallbacks", "DmsacWeightsRejected", "DmsacCheckpointStale", "DmsacActorsDown",
}  # fmt: skip
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (make promtool installs it)")


def rules_by_name(groups: list[dict]) -> dict[str, dict]:
    return {r["alert"]: r for g in groups for r in g["rules"]}


def test_shipped_rules_are_the_render_of_the_default_config() -> None:
    shipped = (PROM_DIR / "alerts.yml").read_text()
    assert shipped == render_rules(load_config(REPO / "configs" / "vehicle.yaml"))
    assert shipped == render_rules(Config())  # what cluster.kube renders for the PrometheusRule
    assert yaml.safe_load(shipped)["groups"] == alert_groups(Config())
    assert alerts.main(["render", "--check"]) == 0


ADDED_ALERTS = {"DmsacLearnerRestarted"}
"""Alerts beyond the spec's table (the learner recovers inside the job: README, "The learner recovers inside the job")."""


def test_every_spec_alert_is_rendered_with_severity_and_annotations() -> None:
    rules = rules_by_name(alert_groups(Config()))
    assert set(rules) == SPEC_ALERTS | ADDED_ALERTS
    critical = {"DmsacNonFiniteDetected", "DmsacRollbackLoop", "DmsacLearnerDown"}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] == ("critical" if name in critical else "warning"), name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert "$value" in rule["annotations"]["description"] or name == "DmsacTrainingStalled", name
        assert rule["annotations"]["runbook_url"] == f"deploy/prometheus/RUNBOOK.md#{name.lower()}"


def test_default_thresholds_are_the_seeds_warning_signs() -> None:
    rules = rules_by_name(alert_groups(Config()))
    assert rules["DmsacPolicyGradNormNearClip"]["expr"] == 'dmsac_policy_grad_norm{job="dmsac"} > 4.5'
    assert rules["DmsacQGradNormNearClip"]["expr"] == 'dmsac_q_grad_norm{job="dmsac"} > 4.5'
    assert rules["DmsacQValuesExploding"]["expr"] == 'abs(dmsac_q_mean{job="dmsac"}) > 10000'
    assert rules["DmsacQValueSpreadHigh"]["expr"] == 'dmsac_q_std{job="dmsac"} > 5000'
    assert rules["DmsacCheckpointStale"]["expr"].endswith("> 2700")  # 3 × 900 s
    assert rules["DmsacActorsDown"]["expr"] == 'dmsac_actors_alive{job="dmsac"} < 2'  # cluster.num_actors
    assert rules["DmsacRollbackLoop"]["expr"] == 'increase(dmsac_rollbacks_total{job="dmsac"}[1h]) >= 3'
    nan = rules["DmsacNonFiniteDetected"]["expr"]
    for gauge in ("policy_grad_norm", "q_grad_norm", "q_mean", "q_std"):
        assert f'dmsac_{gauge}{{job="dmsac"}} != dmsac_{gauge}{{job="dmsac"}}' in nan


def test_thresholds_follow_the_config() -> None:
    config = load_config(
        REPO / "configs" / "vehicle.yaml",
        ["learner.max_grad_norm=2.0", "cluster.num_actors=6", "safety.warnings.grad_norm_fraction=0.5",
         "safety.warnings.q_mean_abs_max=250", "alerts.sustain_for=0s", "alerts.job=train-a"],
    )  # fmt: skip
    t = thresholds(config)
    assert (t.grad_warn, t.grad_clip, t.q_mean_abs, t.min_actors, t.stale_seconds) == (1.0, 2.0, 250.0, 6, 2700.0)
    rules = rules_by_name(alert_groups(config))
    assert rules["DmsacPolicyGradNormNearClip"]["expr"] == 'dmsac_policy_grad_norm{job="train-a"} > 1'
    assert rules["DmsacPolicyGradNormNearClip"]["for"] == "0s"
    assert rules["DmsacQValuesExploding"]["expr"] == 'abs(dmsac_q_mean{job="train-a"}) > 250'
    assert rules["DmsacActorsDown"]["expr"] == 'dmsac_actors_alive{job="train-a"} < 6'
    assert render_rules(config) == render_rules(config)  # deterministic
    assert (num(4.5), num(10000.0), num(1e-06), num(2700.0)) == ("4.5", "10000", "1e-06", "2700")


def test_alerts_config_is_checked_with_key_and_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("alerts:\n  sustain_for: 90s\n  min_actors_alive: 1\n")
    assert load_config(path).alerts == AlertsConfig(sustain_for="90s", min_actors_alive=1)
    assert thresholds(load_config(path)).min_actors == 1
    with pytest.raises(ConfigError, match=r"c\.yaml \(with --set .*\): alerts\.sustain_for: must be a duration"):
        load_config(path, ["alerts.sustain_for=5 minutes"])
    with pytest.raises(ConfigError, match=r"alerts\.job: letters"):
        load_config(path, ['alerts.job=a"b'])
    with pytest.raises(ConfigError, match=r"safety\.warnings\.grad_norm_fraction: must be > 0"):
        load_config(path, ["safety.warnings.grad_norm_fraction=0"])
    with pytest.raises(ConfigError, match=r"alerts\.q_std_max: unknown key"):  # the thresholds live in safety.warnings
        load_config(path, ["alerts.q_std_max=1"])


def test_render_command_writes_and_checks(tmp_path, capsys) -> None:
    out = tmp_path / "alerts.yml"
    assert alerts.main(["render", "--config", str(REPO / "configs" / "vehicle.yaml"), "--set", "safety.warnings.q_std_max=7",
                        "--out", str(out)]) == 0  # fmt: skip
    assert rules_by_name(yaml.safe_load(out.read_text())["groups"])["DmsacQValueSpreadHigh"]["expr"].endswith("> 7")
    assert alerts.main(["render", "--out", str(out), "--check"]) == 1  # default thresholds differ
    assert "is stale" in capsys.readouterr().err
    assert alerts.main(["render", "--set", "alerts.bogus=1", "--out", str(out)]) == 2


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
