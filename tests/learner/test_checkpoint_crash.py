"""A real process killed (``os._exit``) at each phase of a checkpoint write leaves ``last_good`` intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.checkpoint import Checkpointer
from learner.checkpoint_io import CRASH_ENV, CRASH_EXIT_CODE, PHASES, POINTER

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys, torch
from pathlib import Path
from learner.checkpoint import Checkpointer
step = int(sys.argv[2])
state = {"w": torch.full((128, 128), float(step)), "step": step}
Checkpointer(Path(sys.argv[1]), keep_last=2).save(step, state, {"obs": torch.arange(4096.0)}, "h", {})
"""


def state_at(step: int) -> dict:
    return {"w": torch.full((128, 128), float(step)), "step": step}


def write_in_subprocess(root: Path, step: int, phase: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if phase is not None:
        env[CRASH_ENV] = phase
    done = subprocess.run([sys.executable, "-c", WRITER, str(root), str(step)], env=env, cwd=REPO, timeout=120)
    return done.returncode


@pytest.mark.slow
@pytest.mark.parametrize("phase", [*PHASES, None])
def test_crash_at_each_phase_leaves_last_good_loadable(tmp_path: Path, phase: str | None) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in (100, 200):
        ckpt.save(step, state_at(step), {"obs": torch.arange(4096.0)}, "h", {})

    rc = write_in_subprocess(tmp_path, 300, phase)

    assert rc == (0 if phase is None else CRASH_EXIT_CODE)
    expected = 300 if phase is None else 200
    assert json.loads((tmp_path / POINTER).read_text()) == {"step": expected, "path": f"step_{expected:09d}"}
    good = ckpt.latest_good()
    assert good == tmp_path / f"step_{expected:09d}" and ckpt.verify(good).ok
    loaded = ckpt.load(good)
    assert torch.equal(loaded.state["w"], state_at(expected)["w"]) and loaded.state["step"] == expected

    temporaries = sorted(n.name for n in tmp_path.iterdir() if n.name.startswith(".tmp_"))
    in_tmp = phase in ("mid_file", "before_manifest", "before_rename")
    assert len(temporaries) == (1 if in_tmp else 0)
    if phase == "mid_file":
        assert sorted(p.name for p in (tmp_path / temporaries[0]).iterdir()) == ["state.pt"]
        partial = (tmp_path / temporaries[0] / "state.pt").stat().st_size
    if phase == "before_pointer_swap":
        assert ckpt.verify(tmp_path / "step_000000300").ok  # complete, but never named by last_good
        assert (tmp_path / "step_000000100").exists()  # nothing pruned before the swap

    # The next start cleans up, and the same step is written again cleanly.
    assert Checkpointer(tmp_path, keep_last=2).clean_temporaries() == temporaries
    path = ckpt.save(300, state_at(300), {"obs": torch.arange(4096.0)}, "h", {})
    if phase == "mid_file":
        assert 0 < partial < (path / "state.pt").stat().st_size
    assert json.loads((tmp_path / POINTER).read_text())["step"] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == [POINTER, "step_000000200", "step_000000300"]
