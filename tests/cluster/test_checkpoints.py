"""``python -m cluster.checkpoints inspect|list``: what it prints and its exit status."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cluster.checkpoints import _size, _summary, main
from learner.checkpoint import Checkpointer

REPO = Path(__file__).resolve().parents[2]


def state(step: int) -> dict:
    return {"w": torch.full((4, 4), float(step)), "counters": {"env_steps": step}}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=3)
    meta = {"metrics": {"q_mean": 12.5, "policy_grad_norm": 0.75}, "remedies": {"reward_scale_x0.1": 1}}
    for step in (10_000, 20_000):
        ckpt.save(step, state(step), None, "feedbeef", meta)
    ckpt.save_emergency(23_456, state(1), {"batch": torch.tensor([float("nan")])})
    ckpt.save(30_000, state(30_000), None, "feedbeef", meta)
    return tmp_path


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def row(out: list[str], name: str) -> str:
    return next(line for line in out if name in line and not line.startswith("last good"))


def test_list_marks_last_good_and_emergency(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(run_dir)]) == 0
    out = lines(capsys)
    assert row(out, "step_000030000").split() == ["*", "30000", "step_000030000", "regular", "ok"]
    assert row(out, "step_000020000").split() == ["20000", "step_000020000", "regular", "ok"]
    assert row(out, "emergency_step_000023456").split()[:3] == ["23456", "emergency_step_000023456", "emergency"]
    # its state is finite; only the evidence (the offending batch) holds NaN
    assert row(out, "emergency_step_000023456").split(None, 3)[3] == "intact, state finite (evidence, never resumed)"
    assert out[-1] == "last good (*): step_000030000"


def test_an_emergency_checkpoint_with_a_non_finite_state_says_so(tmp_path: Path, capsys) -> None:
    ckpt = Checkpointer(tmp_path / "checkpoints", keep_last=3)
    ckpt.save_emergency(5, {"w": torch.tensor([float("inf")])}, {"batch": torch.zeros(1)})
    assert main(["list", str(tmp_path)]) == 0
    assert "intact, state NON-FINITE (evidence, never resumed)" in row(lines(capsys), "emergency_step_000000005")
    assert main(["inspect", str(tmp_path / "checkpoints" / "emergency_step_000000005")]) == 0
    assert "valid       intact emergency checkpoint, state NON-FINITE; evidence, never resumed" in lines(capsys)


def test_list_after_corruption_moves_the_marker(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = run_dir / "checkpoints" / "step_000030000" / "state.pt"
    data = bytearray(file.read_bytes())
    data[-30] ^= 0xFF
    file.write_bytes(bytes(data))
    assert main(["list", str(run_dir / "checkpoints")]) == 0
    out = lines(capsys)
    assert row(out, "step_000030000").startswith("  ") and "INVALID: sha256 mismatch" in row(out, "step_000030000")
    assert row(out, "step_000020000").startswith("*")
    assert "last_good.json names step_000030000, which does not verify" in out[-1]


def test_inspect_prints_step_validity_hash_and_meta(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run_dir / "checkpoints" / "step_000020000"
    assert main(["inspect", str(path)]) == 0
    out = dict(line.split(None, 1) if " " in line else (line, "") for line in lines(capsys))
    assert out["step"] == "20000" and out["valid"] == "yes" and out["kind"] == "regular"
    assert out["last"] == "good   no" and out["config"] == "hash feedbeef"
    assert out["metrics"] == "q_mean=12.5  policy_grad_norm=0.75"
    assert out["remedies"] == "reward_scale_x0.1=1"


def test_inspect_invalid_checkpoint_exits_1(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run_dir / "checkpoints" / "step_000010000"
    (path / "state.pt").write_bytes(b"truncated")
    assert main(["inspect", str(path)]) == 1
    assert any(line.startswith("valid       NO: size mismatch in state.pt") for line in lines(capsys))


@pytest.mark.parametrize("command", ["inspect", "list"])
def test_bad_path_exits_2(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, str(tmp_path / "missing")]) == 2
    assert "missing: no such" in capsys.readouterr().err
    assert main([command, str(tmp_path)]) == 2  # exists, but holds no checkpoint
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point(run_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cluster.checkpoints", "list", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0
    assert "* " + " " * 7 + "30000  step_000030000" in done.stdout


def test_list_of_a_run_without_checkpoints_says_none_yet(tmp_path: Path, capsys) -> None:
    (tmp_path / "checkpoints").mkdir()
    assert main(["list", str(tmp_path)]) == 0
    assert lines(capsys) == [f"checkpoints in {tmp_path / 'checkpoints'}", "  (none yet)"]


def test_list_without_the_pointer_names_the_checkpoint_resume_would_use(run_dir: Path, capsys) -> None:
    (run_dir / "checkpoints" / "last_good.json").unlink()
    assert main(["list", str(run_dir)]) == 0
    out = lines(capsys)
    assert row(out, "step_000030000").startswith("*")
    assert out[-1] == "last good (*): step_000030000 (no last_good.json; resume would use it)"


def test_inspect_lists_each_file_with_its_size_and_sha256(run_dir: Path, capsys) -> None:
    path = run_dir / "checkpoints" / "step_000010000"
    assert main(["inspect", str(path)]) == 0
    files = [line for line in lines(capsys) if line.startswith("file ")]
    state = path / "state.pt"
    digest = hashlib.sha256(state.read_bytes()).hexdigest()
    assert files == [f"file        state.pt      {_size(state.stat().st_size):>12}  sha256 {digest}"]


def test_sizes_are_shown_in_binary_units_with_one_decimal() -> None:
    sizes = [0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**4]
    assert [_size(n) for n in sizes] == ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3072.0 GiB"]


def test_meta_values_are_summarized_on_one_line() -> None:
    meta = {"q_mean": 1.23456789, "lrs": [3e-05, 1], "empty": {}}
    assert _summary(meta) == "q_mean=1.23457  lrs=3e-05, 1  empty=(none)"
    assert _summary([]) == "(none)"
