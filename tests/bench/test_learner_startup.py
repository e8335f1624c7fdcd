"""``bench/learner_startup.py``'s report, from hand-made rows (the measurement itself needs a GPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.learner_startup import ROOT, markdown

MACHINE = {"gpu": "NVIDIA H200", "cpus": 16, "cpu": "x", "python": "3.12", "torch": "2.11", "cuda": "13.0",
           "numpy": "2", "gymnasium": "1", "ray": "2", "commit": "abc", "date": "d"}  # fmt: skip


def test_each_arm_is_a_row_and_the_background_arm_says_what_it_trained_before_the_compiled_maths():
    rows = [
        {"arm": "graph", "runs": 1, "first_block_s": 4.91, "steady_updates_per_s": 1312.4},
        {"arm": "background", "runs": 1, "first_block_s": 4.9, "compiled_after_s": 21.91, "updates_before": 16200,
         "rate_before": 739.4, "steady_updates_per_s": 3230.0},
        {"arm": "compiled_cold", "runs": 1, "error": "Traceback\nRuntimeError: boom"},
    ]  # fmt: skip
    table = markdown({"machine": MACHINE, "command": "python bench/learner_startup.py", "rows": rows})
    assert "| graph | 1 | 4.9 | - | - | - | 1,312 |" in table
    assert "| background | 1 | 4.9 | 21.9 | 16,200 | 739 | 3,230 |" in table
    assert "| compiled_cold | 1 | error: RuntimeError: boom |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the bench would run")
def test_without_a_gpu_it_says_it_needs_one():
    done = subprocess.run([sys.executable, "bench/learner_startup.py", "--arms", "graph"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "needs a CUDA GPU" in done.stderr
