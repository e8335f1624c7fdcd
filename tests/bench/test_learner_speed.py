"""The learner-speed report's arithmetic (the timings themselves need CUDA: run on the GPU machine)."""

import pytest

from bench.learner_speed import parallel_variant, summarize


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
