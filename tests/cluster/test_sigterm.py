"""SIGTERM (preemption, ``ray job stop``) ends a run with a final verified checkpoint and exit code 0."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigterm_leaves_a_final_verified_checkpoint(tmp_path):
    command = [
        sys.executable, "-m", "cluster.train", "--config", "configs/smoke.yaml", "--set", "cluster.mode=local",
        "--set", "train.total_env_steps=10000000", "--set", f"train.run_dir={tmp_path}",
        "--set", "checkpoint.every_env_steps=400",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pointer = tmp_path / "checkpoints" / "last_good.json"
    deadline = time.monotonic() + 240
    while not pointer.exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the deadline"
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-2000:]
    assert "SIGTERM received" in output
    summary = json.loads((tmp_path / "final_stats.json").read_text())
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep_last=3)
    final = checkpointer.latest_good()
    assert final is not None and checkpointer.verify(final).ok
    assert json.loads(pointer.read_text())["step"] == summary["env_steps"] == summary["last_checkpoint_step"]
    assert summary["env_steps"] < 10_000_000
