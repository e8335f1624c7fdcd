"""What every benchmark shares: the machine and versions it ran on, the command, and writing its report.

Each script writes ``<out>/<name>.json`` (the numbers, with ``machine`` and ``command``)
and ``<out>/<name>.md`` (the table), through ``write_report``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """Machine, accelerator, versions and commit, for a report."""
    import torch

    found = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_model(),
        "python": platform.python_version(), "cuda": torch.version.cuda or "-",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }  # fmt: skip
    for name in ("torch", "numpy", "gymnasium", "ray"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = "missing"
    found["commit"] = git_commit()
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"  # a copy without .git (the GPU machine gets one)
    return head.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


def machine_line(m: dict) -> str:
    """One line for a report's header."""
    where = f"{m['gpu']}, " if m["gpu"] != "none" else "no GPU, "
    return (
        f"{where}{m['cpus']} CPUs ({m['cpu']}); Python {m['python']}, torch {m['torch']} (CUDA {m['cuda']}), "
        f"numpy {m['numpy']}, gymnasium {m['gymnasium']}, ray {m['ray']}; commit {m['commit']}; {m['date']}"
    )


def command_line() -> str:
    return "python " + " ".join(sys.argv)


def write_report(out: Path, name: str, report: dict, markdown: str) -> Path:
    """``<out>/<name>.json`` and ``<out>/<name>.md``; returns the markdown's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    path = out / f"{name}.md"
    path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return path


def fmt(value, digits: int = 3) -> str:
    """Compact number for tables: NaN as 'nan', large values with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, (bool, int)):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e3:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fill_random_replay(replay, rows: int, seed: int = 1, chunk: int = 250_000) -> None:
    """``rows`` random transitions of the buffer's own shapes (an update's cost does not depend on the values):
    actions uniform in [-1, 1], 1 % terminal; drawn on the buffer's device in chunks of ``chunk`` rows."""
    import torch

    g = torch.Generator(device=replay.device).manual_seed(seed)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        batch = {}
        for name, stored in replay.storage.items():
            draw = torch.rand if name in ("action", "terminated") else torch.randn
            batch[name] = draw((n, *stored.shape[1:]), device=replay.device, generator=g)
        batch["action"] = batch["action"] * 2 - 1
        batch["terminated"] = (batch["terminated"] < 0.01).float()
        replay.add(batch)


def wait_for_compiled_maths(learner) -> None:
    """With ``learner.fast_path: auto`` a GPU learner trains with the plain maths while ``torch.compile`` runs in the
    background: wait for it, so that timed rounds after the next block (which captures again) run the compiled
    maths, as a long job's steady state does. Nothing to wait for on the CPU or with another fast path."""
    take_compiled = getattr(learner.blocks, "take_compiled", None)
    if take_compiled is not None:
        take_compiled(wait=True)
