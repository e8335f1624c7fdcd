"""How long the GPU learner takes to reach its rate: the CUDA graph's first capture and ``torch.compile``.

    python bench/learner_startup.py [--arms graph compiled_cold compiled_warm background] [--runs 1]
        [--seconds 45] [--out bench/results]

Each arm is a fresh process with Pendulum-sized runs (observation 3, action 1, 256x256, batch 256, blocks of 50,
a replay of 2 000 random rows), timing ``GraphedBlocks.update_blocks`` from the first block on:

- ``graph``: ``learner.fast_path: graph`` (the plain maths captured; no compile);
- ``compiled_cold``: ``fast_path: compiled`` (the first block waits for the compile) with empty inductor and
  Triton caches;
- ``compiled_warm``: the same with the caches ``compiled_cold`` left (a second job on the same machine);
- ``background``: ``fast_path: auto`` with empty caches: the plain graph at once, the compile on a worker thread,
  the compiled maths from the block after it finished; blocks run for ``--seconds``, counting the updates done
  before the swap.

Reported per arm: the first block's seconds (capture, and compile where it waits for it), the steady rate after
(2 s of blocks), and for ``background`` when the compiled maths came in and the updates and rate before that.
``--runs K`` stacks K runs (``train.parallel_runs``; rates count every run's updates). CUDA only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import command_line, machine, machine_line, write_report  # noqa: E402

ARMS = ["graph", "compiled_cold", "compiled_warm", "background"]
BLOCK = 50


def measure(arm: str, runs: int, seconds: float) -> dict:
    """One arm in this process (the caches are the environment's)."""
    import torch

    from bench.common import fill_random_replay
    from learner.config import LearnerConfig
    from learner.graph import graphed_for
    from learner.replay import ReplayBuffer
    from learner.sac import SAC
    from learner.stack import RunStack

    device = torch.device("cuda")
    config = LearnerConfig(hidden_sizes=(256, 256), lr=3e-4, batch_size=256, block_updates=BLOCK)
    sacs = [SAC(3, 1, config, device, seed=k) for k in range(runs)]
    replays = []
    for k in range(runs):
        replay = ReplayBuffer(100_000, 3, 0, 1, device, seed=k + 2)
        fill_random_replay(replay, 2000)
        replays.append(replay)
    stack = sacs[0].stack if runs == 1 else RunStack.join([sac.stack for sac in sacs])
    blocks = graphed_for(stack, {"graph": "graph", "background": "auto"}.get(arm, "compiled"))

    def block() -> None:
        results = blocks.update_blocks([replays], BLOCK)
        torch.stack([vector for vector, _ in results]).tolist()  # one host read per block, as the service

    started = time.perf_counter()
    block()
    row = {"arm": arm, "runs": runs, "first_block_s": time.perf_counter() - started}
    if arm == "background":
        started, done, swapped = time.perf_counter(), 0, None
        while time.perf_counter() - started < seconds and (swapped is None or blocks.compiling is not None):
            block()
            done += 1
            if swapped is None and blocks.compile_math:
                swapped = time.perf_counter() - started
                row.update(compiled_after_s=swapped, updates_before=(done - 1) * BLOCK * runs,
                           rate_before=(done - 1) * BLOCK * runs / swapped)  # fmt: skip
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < 2.0:
        block()
        done += 1
    row["steady_updates_per_s"] = done * BLOCK * runs / (time.perf_counter() - started)
    return row


def run_arm(arm: str, runs: int, seconds: float, caches: Path) -> dict:
    """``arm`` in a fresh process; the warm arm reuses the cold arm's cache directories."""
    tag = "compiled_cold" if arm == "compiled_warm" else arm
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(caches / f"inductor_{tag}"),
           "TRITON_CACHE_DIR": str(caches / f"triton_{tag}")}  # fmt: skip
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", arm, "--runs", str(runs),
               "--seconds", str(seconds)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"arm": arm, "runs": runs, "error": done.stderr[-600:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    lines = [
        "# The GPU learner's start-up", "", f"{machine_line(report['machine'])}  ", f"Command: `{report['command']}`", "",
        "| arm | runs | first block s | compiled maths after s | updates before them | rate before | steady updates/s |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['arm']} | {row['runs']} | error: {row['error'].splitlines()[-1][:120]} | | | | |")
            continue
        later = [f"{row['compiled_after_s']:.1f}", f"{row['updates_before']:,}", f"{row['rate_before']:,.0f}"] \
            if "compiled_after_s" in row else ["-", "-", "-"]  # fmt: skip
        lines.append(f"| {row['arm']} | {row['runs']} | {row['first_block_s']:.1f} | {' | '.join(later)} | "
                     f"{row['steady_updates_per_s']:,.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=45.0, help="longest the background arm waits for the compile")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="learner_startup")
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.runs, args.seconds)))
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("learner_startup.py needs a CUDA GPU: it times CUDA-graph captures and torch.compile")
    report = {"machine": machine(), "command": command_line(), "rows": []}
    with tempfile.TemporaryDirectory() as caches:
        for arm in args.arms:
            report["rows"].append(run_arm(arm, args.runs, args.seconds, Path(caches)))
            print(json.dumps(report["rows"][-1]), flush=True)
    print(write_report(args.out, args.name, report, markdown(report)).read_text())


if __name__ == "__main__":
    main()
