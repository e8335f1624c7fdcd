"""The kernel profile's arithmetic (the profile itself needs CUDA: run on the GPU machine)."""

import pytest

from bench.learner_kernels import kernel_table, main


def test_kernel_table_counts_and_times_per_update_by_name():
    events = [("gemm", 10.0), ("relu", 1.0), ("gemm", 14.0), ("relu", 1.5), ("adam", 4.0), ("gemm", 12.0)]
    table = kernel_table(events, steps=2)
    assert table["kernels_per_update"] == 3.0
    assert table["kernel_us_per_update"] == pytest.approx(21.25)
    assert [row["kernel"] for row in table["by_name"]] == ["gemm", "adam", "relu"]
    gemm = table["by_name"][0]
    assert gemm["per_update"] == 1.5 and gemm["us_per_update"] == pytest.approx(18.0)


def test_without_cuda_it_says_so_and_exits_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["--out", str(tmp_path)]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
