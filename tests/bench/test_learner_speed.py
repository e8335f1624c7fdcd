"""The learner-speed report's arithmetic (the timings themselves need CUDA: run on the GPU machine)."""

import pytest
import torch

from bench.common import fill_random_replay
from bench.learner_speed import ACTION, CONTEXT, OBS, parallel_variant, run_replays, summarize
from learner.replay import ReplayBuffer, joint_rows


def test_parallel_variants_name_runs_and_precision():
    assert parallel_variant("parallel_8") == ("parallel", 8, "highest")
    assert parallel_variant("branches_8_high") == ("branches", 8, "high")
    assert parallel_variant("parallel_4_bf16") == ("parallel", 4, "bf16")
    assert parallel_variant("compiled_high") is None and parallel_variant("graphed_compiled") is None


def test_many_runs_are_measured_against_one_run_in_the_same_precision():
    rates = {"eager_loop": [100.0, 120.0, 110.0], "graphed_compiled": [3000.0], "compiled_high": [3600.0],
             "parallel_8": [9000.0], "parallel_8_high": [12600.0], "branches_8_high": [10800.0]}  # fmt: skip
    rows = summarize(256, {"rates": rates, "errors": {}})["variants"]
    assert rows["parallel_8"]["x_one_run"] == pytest.approx(3.0)  # against graphed_compiled (fp32)
    assert rows["parallel_8_high"]["x_one_run"] == pytest.approx(3.5)  # against compiled_high (TF32)
    assert rows["branches_8_high"]["x_one_run"] == pytest.approx(3.0)
    assert rows["compiled_high"]["x_one_run"] is None and rows["compiled_high"]["x_eager_loop"] == pytest.approx(
        3600 / 110
    )


def test_stacked_runs_sample_the_rows_joined_as_a_job_does_each_with_its_own_generator():
    replay = ReplayBuffer(50, OBS, CONTEXT, ACTION, torch.device("cpu"), seed=3)
    fill_random_replay(replay, 50)
    joined, shared = run_replays(replay, 3, joined=True), run_replays(replay, 3, joined=False)
    joint = joint_rows(joined)
    assert joint is not None and joint.shape == (3, 50, replay.rows.shape[1]) and joint_rows(shared) is None
    assert all(torch.equal(r.rows, replay.rows) and len(r) == 50 for r in joined)
    assert all(r.rows.data_ptr() == replay.rows.data_ptr() for r in shared)
    draws = [r.draw(8) for r in joined]
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], shared[0].draw(8))  # seed k per run
