"""Strict config: errors name the key path and the file; overrides get the same checks."""

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from cluster.config import Config, ConfigError, config_hash, config_to_yaml, load_config
from cluster.configio import field_docs

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
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            found += documented_sections(tp)
    return found


def test_every_config_field_has_a_docstring():
    for section in documented_sections(Config):
        docs = field_docs(section)
        missing = [f.name for f in dataclasses.fields(section) if not docs.get(f.name)]
        assert missing == [], f"{section.__name__} lacks docstrings for {missing}"


@pytest.mark.parametrize("name", ["pendulum.yaml", "smoke.yaml", "vehicle.yaml"])
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
