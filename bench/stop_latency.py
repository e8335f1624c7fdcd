"""Time from Ctrl-C to exit of a real training run (the issue's target: <= 5 s on a 2-core machine).

    python bench/stop_latency.py [--config configs/vehicle.yaml] [--mode ray|local] [--after-updates 2000] [--runs 3]

Runs ``python -m cluster.train`` as ``make run`` does (a temporary run dir, metrics on a
free loopback port), waits until a progress line shows at least ``--after-updates``
updates (training is under way and the learner's queue holds steps), sends SIGINT,
and measures until the process exits. Checks exit 0, a verified final checkpoint, and
that every ingested step is in replay. Writes ``bench/results/stop_latency.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import command_line, machine, machine_line, write_report  # noqa: E402
from learner.checkpoint import Checkpointer  # noqa: E402

PROGRESS = re.compile(r"env_steps=(\d+) updates=(\d+)")


def one_run(config: str, mode: str, after_updates: int, loopback: bool) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        sets = [f"train.run_dir={run_dir}", f"cluster.mode={mode}", "metrics.port=0", "metrics.bind_address=127.0.0.1",
                "train.log_every_seconds=1"]  # fmt: skip
        if loopback:
            sets.append("cluster.node_ip_address=127.0.0.1")
        command = [sys.executable, "-m", "cluster.train", "--config", config, *[a for s in sets for a in ("--set", s)]]
        process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        tail: list[str] = []
        for line in process.stderr:
            tail = (tail + [line])[-40:]
            match = PROGRESS.search(line)
            if match and int(match.group(2)) >= after_updates:
                break
        else:
            raise RuntimeError("the run ended before the stop: " + "".join(tail))
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        code = process.wait()
        seconds = time.monotonic() - sent
        summary = json.loads((Path(run_dir) / "final_stats.json").read_text())
        checkpointer = Checkpointer(Path(run_dir) / "checkpoints", 3)
        final = checkpointer.latest_good()
        return {
            "seconds_to_exit": round(seconds, 2), "exit_code": code, "updates_at_signal": int(match.group(2)),
            "stop_requested_at_update": summary["stop_requested_at_update"], "updates": summary["updates"],
            "env_steps": summary["env_steps"], "replay_size": summary["replay_size"],
            "final_checkpoint_verifies": bool(final and checkpointer.verify(final).ok),
            "final_checkpoint_step": summary["last_checkpoint_step"], "traceback": "Traceback" in rest,
        }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/vehicle.yaml")
    parser.add_argument("--mode", choices=("ray", "local"), default="ray")
    parser.add_argument("--after-updates", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loopback", action="store_true", help="keep Ray on 127.0.0.1 (test machines)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.config, args.mode, args.after_updates, args.loopback))
        print(f"run {i + 1}: {runs[-1]}", flush=True)
    report = {"benchmark": "stop_latency", "command": command_line(), "machine": machine(), "runs": runs}
    rows = "\n".join(
        f"| {r['seconds_to_exit']} | {r['exit_code']} | {r['updates_at_signal']} | {r['stop_requested_at_update']} "
        f"| {r['updates']} | {r['env_steps']} | {r['replay_size']} | {r['final_checkpoint_verifies']} |"
        for r in runs
    )
    out = write_report(
        Path(args.out), "stop_latency", report,
        f"# Ctrl-C to exit\n\n`{report['command']}` on {machine_line(report['machine'])}.\n\n"
        "| seconds to exit | exit | updates at the signal (last progress line) | stop requested at update "
        "| updates at exit | env steps | replay | final checkpoint verifies |\n|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n",
    )  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
