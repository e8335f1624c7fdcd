"""SAC learns Pendulum-v1 in-process (cluster.mode: local), CPU, fixed seed."""

import json
from pathlib import Path

import pytest

from cluster.config import load_config
from cluster.local import run_local

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pendulum_learns_within_12k_steps(tmp_path):
    config = load_config(
        ROOT / "configs" / "pendulum.yaml",
        # 64x64 networks, as the Ray learning test: the same return, and minutes less on a busy 2-core machine
        ["cluster.mode=local", "train.total_env_steps=12000", f"train.run_dir={tmp_path}", "learner.device=cpu",
         "learner.hidden_sizes=[64, 64]"],
    )
    summary = run_local(config)
    curve = summary["return_curve"]
    print("return curve (env_steps, mean of last 10 episodes):", curve[::4])
    assert summary["env_steps"] == 12000
    assert summary["updates"] == 11000  # utd 1.0 after 1000 warmup steps
    assert summary["recent_return"] >= -300.0
    assert curve[0][1] < -900.0  # and it started from a random policy's return
    saved = json.loads((tmp_path / "final_stats.json").read_text())
    assert saved["recent_return"] == pytest.approx(summary["recent_return"])
    assert (tmp_path / "config.yaml").exists()
