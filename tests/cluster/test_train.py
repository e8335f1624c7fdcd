"""The CLI: a bad environment is a config error naming the key (exit 2), found before anything starts."""

from __future__ import annotations

import pytest

from cluster.train import main
from tests.conftest import ROOT

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def run(tmp_path, *sets: str) -> int:
    sets = (f"train.run_dir={tmp_path}", "cluster.mode=local", "metrics.enabled=false", *sets)
    return main(["--config", SMOKE, *[arg for s in sets for arg in ("--set", s)]])


@pytest.mark.parametrize(
    ("setting", "key", "reason"),
    [
        ("env.id=Pendulm-v1", "env.id", "Pendulm-v1: Environment `Pendulm` doesn't exist. Did you mean: `Pendulum`?"),
        ("env.id=no_such_package.envs:Car", "env.id", "cannot import module 'no_such_package.envs'"),
        ("env.id=CartPole-v1", "env.id", "SAC needs a continuous (Box) action space; CartPole-v1 has Discrete(2)"),
        ("env.kwargs={gravityy: 3}", "env.kwargs", "unexpected keyword argument 'gravityy'"),
    ],
)
def test_an_environment_that_cannot_be_built_is_exit_2_naming_the_key(tmp_path, capsys, setting, key, reason):
    assert run(tmp_path, setting) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"config error: {SMOKE} (with --set ") and f": {key}: " in err and reason in err
    assert "Traceback" not in err
    assert not (tmp_path / "config.yaml").exists()  # nothing started


def test_an_unknown_key_is_exit_2_before_any_environment(tmp_path, capsys):
    assert run(tmp_path, "learner.lrr=1e-5") == 2
    assert "learner.lrr: unknown key" in capsys.readouterr().err


def test_a_run_of_a_parallel_job_whose_environment_cannot_be_built_is_named(tmp_path, capsys):
    assert run(tmp_path, "train.parallel_runs=2", "train.run_overrides=[[], [env.id=Pendulm-v1]]") == 2
    err = capsys.readouterr().err
    assert "train.run_overrides[1]: env.id: Pendulm-v1: Environment `Pendulm` doesn't exist" in err
    assert not (tmp_path / "config.yaml").exists()  # nothing started


def test_a_parallel_job_trains_every_run_from_the_command_line(tmp_path):
    assert run(tmp_path, "train.parallel_runs=2", "train.total_env_steps=300", "train.warmup_steps=100") == 0
    for k in range(2):
        assert (tmp_path / "runs" / str(k) / "checkpoints" / "last_good.json").exists()
    assert main(["--config", SMOKE, "--set", f"train.run_dir={tmp_path}", "--set", "cluster.mode=local",
                 "--set", "train.parallel_runs=2", "--resume", str(tmp_path / "runs")]) == 2  # fmt: skip
