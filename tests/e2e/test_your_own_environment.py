"""The README's "Your own environment" commands, run as written (plus this machine's loopback settings)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import RAY_ENV, ROOT, finished_job, venv_path
from tests.learner.helpers import SEED_TAGS, read_back

pytestmark = pytest.mark.slow

LOOPBACK = "--set cluster.node_ip_address=127.0.0.1"
"""Appended to every command: this test machine keeps Ray on 127.0.0.1 (README: not needed on yours)."""


def readme_commands() -> list[str]:
    """The ``python -m cluster.train`` commands in the bash blocks of the README section "Your own environment"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own environment", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if "cluster.train" in line]


def shell_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **RAY_ENV, "PATH": venv_path(), **extra}  # `python` and `ray` of this venv


def test_the_section_shows_a_local_run_and_a_job_submission():
    local, submit = readme_commands()
    assert local.startswith("PYTHONPATH=examples/ev_fleet python -m cluster.train --config examples/ev_fleet/config.yaml")
    assert "--set cluster.address=local" in local  # a Ray cluster started earlier would not see PYTHONPATH
    assert submit.startswith("ray job submit --working-dir . --runtime-env-json")


def test_the_local_command_trains_the_example_and_writes_the_seeds_tensorboard_tags(tmp_path):
    local, _ = readme_commands()
    run_dir = tmp_path / "first"
    command = f"{local} {LOOPBACK} --set train.run_dir={run_dir}"
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=shell_env(), capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "final_stats.json").read_text())
    assert summary["env_steps"] == 400 and summary["updates"] == 200  # 2 fragments of 8 envs x 25 steps
    assert sum(summary["context_fallbacks"].values()) == 0
    board = read_back(run_dir / "tensorboard")  # one point per 500 updates, from the first block (50) on
    assert set(board) >= SEED_TAGS and [step for step, _ in board["train/q_mean"]] == [50]


def test_the_job_submission_finds_the_users_module_through_working_dir_and_pythonpath(ray_head, tmp_path):
    _, submit = readme_commands()
    run_dir = tmp_path / "job"
    words = shlex.split(submit)
    entry = words.index("--")
    command = [*words[:entry], "--no-wait", *words[entry:], *LOOPBACK.split(), "--set", f"train.run_dir={run_dir}"]
    result = subprocess.run(command, cwd=ROOT, env=shell_env(RAY_ADDRESS=ray_head.dashboard), capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = next(line.split("'")[1] for line in result.stdout.splitlines() if "submitted successfully" in line)
    status, logs = finished_job(ray_head.dashboard, job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    summary = json.loads((run_dir / "final_stats.json").read_text())
    assert summary["env_steps"] == 400 and sum(summary["context_fallbacks"].values()) == 0
    assert set(read_back(run_dir / "tensorboard")) >= SEED_TAGS


def test_an_environment_without_samples_exits_2_naming_env_id_and_the_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cluster.train", "--config", "configs/smoke.yaml", "--set", "context.mode=dynamics_map",
         "--set", "cluster.mode=local", "--set", f"train.run_dir={tmp_path}"],
        cwd=ROOT, env=shell_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "env.id: Pendulum-v1: context.mode dynamics_map needs info['dynamics_samples']" in result.stderr
