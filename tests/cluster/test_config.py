"""Strict config: errors name the key path and the file; overrides get the same checks."""

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.config import (
    Config,
    ConfigError,
    config_hash,
    config_help,
    config_to_yaml,
    fields_of,
    is_section,
    load_config,
)

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, overrides=()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


def test_unknown_key_names_path_and_file(tmp_path):
    path = write(tmp_path, "learner:\n  lr: 1.0e-4\n  learning_rate: 3\n")
    err = error_of(path)
    assert err.key == "learner.learning_rate" and err.source == str(path)
    assert "unknown key" in str(err) and str(path) in str(err)


def test_wrong_type_names_key(tmp_path):
    err = error_of(write(tmp_path, "learner:\n  batch_size: big\n"))
    assert err.key == "learner.batch_size" and "integer" in err.message
    err = error_of(write(tmp_path, "learner:\n  batch_size: 256.5\n"))
    assert err.key == "learner.batch_size"
    err = error_of(write(tmp_path, "cluster:\n  mode: yarn\n"))
    assert err.key == "cluster.mode" and "'local'" in err.message


def test_out_of_range_names_key(tmp_path):
    err = error_of(write(tmp_path, "learner:\n  gamma: 1.5\n"))
    assert (err.key, err.source) == ("learner.gamma", str(tmp_path / "job.yaml"))
    assert "1.5" in err.message


def test_bad_combination_names_key(tmp_path):
    err = error_of(write(tmp_path, "learner:\n  batch_size: 512\nreplay:\n  capacity: 100\n"))
    assert err.key == "replay.capacity" and "batch_size=512" in err.message


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    config = load_config(write(tmp_path, "learner:\n  lr: 3e-5\n"))
    assert config.learner.lr == pytest.approx(3e-5)


def test_overrides_are_checked_the_same_way(tmp_path):
    path = write(tmp_path, "learner:\n  lr: 1.0e-4\n")
    config = load_config(path, ["learner.lr=1e-5", "learner.hidden_sizes=[32, 32]", "train.seed=4"])
    assert config.learner.lr == pytest.approx(1e-5)
    assert config.learner.hidden_sizes == (32, 32) and config.train.seed == 4
    err = error_of(path, ["learner.tau=2"])
    assert err.key == "learner.tau" and "--set learner.tau=2" in err.source and str(path) in err.source
    assert error_of(path, ["learner.nope=1"]).key == "learner.nope"
    assert error_of(path, ["learner.lr"]).source == "--set"


def test_cli_config_error_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, "learner:\n  max_grad_norm: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "cluster.train", "--config", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "learner.max_grad_norm" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


def documented_sections(cls: type) -> list[type]:
    found = [cls]
    for info in fields_of(cls).values():
        if is_section(info.annotation):
            found += documented_sections(info.annotation)
    return found


def test_every_config_field_has_a_docstring():
    sections = documented_sections(Config)
    assert len(sections) == 21  # root, 11 sections, env.vehicle with its 7, safety.warnings
    for section in sections:
        missing = [name for name, info in fields_of(section).items() if not info.description]
        assert missing == [], f"{section.__name__} lacks docstrings for {missing}"


def test_help_config_prints_every_key_with_type_default_and_description():
    result = subprocess.run(
        [sys.executable, "-m", "cluster.train", "--help-config"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.splitlines() == config_help()
    lines = {line.split(" ", 1)[0]: line for line in config_help()}
    keys = sum(1 for s in documented_sections(Config) for i in fields_of(s).values() if not is_section(i.annotation))
    assert len(lines) == keys == 174
    assert lines["learner.lr"] == (
        "learner.lr (float, default 3e-05): Adam learning rate of policy, critics and temperature (seed: 3e-5)."
    )
    assert lines["cluster.mode"].startswith("cluster.mode (one of local, ray, default 'ray'): ")
    assert lines["env.vehicle.randomization.mass"].startswith("env.vehicle.randomization.mass (tuple, default [1500.0, 6000.0])")


@pytest.mark.parametrize("name", ["pendulum.yaml", "smoke.yaml", "vehicle.yaml", "vehicle_agile.yaml"])
def test_shipped_configs_load_and_round_trip(name, tmp_path):
    config = load_config(ROOT / "configs" / name)
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(config_to_yaml(config))
    assert load_config(resolved) == config
    assert config_hash(load_config(resolved)) == config_hash(config)


def test_vehicle_config_carries_the_seed_values():
    learner = load_config(ROOT / "configs" / "vehicle.yaml").learner
    assert (learner.lr, learner.tau, learner.reward_scale, learner.max_grad_norm) == (3e-5, 0.005, 0.001, 5.0)
    assert (learner.gamma, learner.batch_size) == (0.95, 256)
    config = load_config(ROOT / "configs" / "vehicle.yaml")
    assert (config.train.warmup_steps, config.replay.capacity) == (10_000, 1_000_000)
