"""``cluster.alerts``: the alert rules rendered for a config (thresholds, expressions, annotations, the command).

The shipped deploy/prometheus/alerts.yml and its promtool suite: tests/deploy/test_alerts.py.
"""

from __future__ import annotations

import pytest
import yaml

from cluster import alerts
from cluster.alerts import AlertsConfig, alert_groups, num, render_rules, thresholds
from cluster.config import Config, ConfigError, load_config
from tests.deploy.prom_helpers import ADDED_ALERTS, REPO, SPEC_ALERTS


def rules_by_name(groups: list[dict]) -> dict[str, dict]:
    return {r["alert"]: r for g in groups for r in g["rules"]}


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
    assert capsys.readouterr().err == f"{out} is stale: run python -m cluster.alerts render\n"
    assert alerts.main(["render", "--set", "alerts.bogus=1", "--out", str(out)]) == 2
    assert ": alerts.bogus: unknown key" in capsys.readouterr().err


def test_descriptions_name_the_thresholds_and_where_they_come_from() -> None:
    rules = rules_by_name(alert_groups(Config()))
    described = {name: rule["annotations"]["description"] for name, rule in rules.items()}
    assert described["DmsacPolicyGradNormNearClip"].endswith("(warning 4.5 = 0.9 × clip 5).")
    assert described["DmsacCheckpointStale"].endswith("(limit 2700 s = 3 × 900 s).")
    assert "(limit 3); the remedies are not curing it." in described["DmsacRollbackLoop"]
    assert described["DmsacActorsDown"] == "{{ $labels.instance }}: {{ $value }} rollout actors alive, 2 expected."


def test_the_nan_rule_ors_the_event_counter_and_a_self_comparison_per_nan_gauge() -> None:
    expr = rules_by_name(alert_groups(Config()))["DmsacNonFiniteDetected"]["expr"]
    first, *gauges = expr.split("\nor ")
    assert first == 'increase(dmsac_nan_events_total{job="dmsac"}[5m]) > 0'
    assert len(gauges) == len(alerts.NAN_GAUGES) == 7
    q_mean = 'dmsac_q_mean{job="dmsac"}'
    assert gauges[2] == f'label_replace({q_mean} != {q_mean}, "gauge", "q_mean", "", "")'


def test_the_rules_file_writes_multiline_promql_as_literal_blocks() -> None:
    text = render_rules(Config())
    assert text.startswith(alerts.HEADER + "groups:\n- name: dmsac\n  rules:\n  - alert: DmsacPolicyGradNormNearClip\n")
    assert (
        '    expr: |-\n      up{job="dmsac"} == 0\n      or absent(up{job="dmsac"})\n'
        '      or (up{job="dmsac"} unless on(job, instance) dmsac_build_info{job="dmsac"})\n    for: 2m\n'
    ) in text
    assert [r["alert"] for r in yaml.safe_load(text)["groups"][0]["rules"]][:5] == [
        "DmsacPolicyGradNormNearClip", "DmsacQGradNormNearClip", "DmsacQValuesExploding", "DmsacQValueSpreadHigh",
        "DmsacNonFiniteDetected",
    ]  # fmt: skip


def test_load_reads_configs_vehicle_yaml_by_default_and_config_otherwise(tmp_path, monkeypatch) -> None:
    five = ["cluster.num_actors=5"]
    assert alerts.load(None, five) == load_config(REPO / "configs" / "vehicle.yaml", five)
    path = tmp_path / "c.yaml"
    path.write_text("cluster:\n  num_actors: 7\n")
    assert thresholds(alerts.load(str(path), [])).min_actors == 7
    monkeypatch.setattr(alerts, "DEFAULT_CONFIG", tmp_path / "missing.yaml")
    assert alerts.load(None, []) == Config()
    assert alerts.load(None, five).cluster.num_actors == 5  # overrides apply to the defaults too
