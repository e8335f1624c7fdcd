"""Learner recovery inside the job: time from killing the learner to the new learner's first update, and steps lost.

    python bench/learner_recovery.py [--config configs/smoke.yaml] [--kills 5] [--every 1000] [--first 750] [--device auto]

One real Ray job (a local Ray instance, or ``--address``) with
``cluster.max_learner_restarts`` = kills: the driver's own hook SIGKILLs the learner's
process ``--kills`` times, ``--every`` env steps apart (each once the previous new learner has
trained), the first at env step ``--first``: between two checkpoints (every 500), so every new
learner needs fragments the driver kept. For each kill: seconds from the kill to the first step report
of the new learner with an update beyond the ones it resumed with (detection, placement,
process start, checkpoint load, replay of the fragments it lacked, its first block), the
driver's own downtime figure, the step it resumed from, and env steps lost. Writes
``bench/results/learner_recovery.{json,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from bench.common import command_line, machine, machine_line, write_report  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.ray_driver import run_ray  # noqa: E402


class Killer:
    """The driver's ``on_tick``: kill the learner at the chosen points (each after the previous recovery trained)."""

    def __init__(self, kills: int, every: int, first: int) -> None:
        self.kills, self.every, self.first = kills, every, first
        self.killed_at: list[float] = []
        self.at_step: list[int] = []

    def __call__(self, driver) -> None:
        progress, restarts = driver.progress, driver.learner.restarts
        if len(self.killed_at) >= self.kills or len(restarts) < len(self.killed_at):
            return
        if restarts and "back_to_training_seconds" not in restarts[-1]:
            return
        since = self.at_step[-1] + self.every if self.at_step else self.first
        if progress.last_checkpoint_step > 0 and progress.env_steps >= since:
            pid = ray.get(driver.learner.actor.pid.remote())
            self.killed_at.append(time.monotonic())
            self.at_step.append(progress.env_steps)
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--every", type=int, default=1000, help="env steps between one kill and the next")
    parser.add_argument("--first", type=int, default=750, help="env step of the first kill (checkpoints every 500)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--address", default="", help="a running Ray cluster (default: a local instance)")
    parser.add_argument("--loopback", action="store_true", help="keep Ray on 127.0.0.1 (test machines)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    killer = Killer(args.kills, args.every, args.first)
    with tempfile.TemporaryDirectory() as run_dir:
        sets = [f"train.run_dir={run_dir}", f"cluster.max_learner_restarts={args.kills}", "metrics.port=0",
                "metrics.bind_address=127.0.0.1", f"learner.device={args.device}", "checkpoint.every_env_steps=500",
                f"train.total_env_steps={(args.kills + 2) * args.every + 1000}", "train.log_every_seconds=30"]  # fmt: skip
        sets += [f"cluster.address={args.address}"] if args.address else []
        sets += ["cluster.node_ip_address=127.0.0.1"] if args.loopback else []
        started = time.monotonic()
        handle_detected: list[float] = []

        def tick(driver) -> None:
            handle_detected[:] = driver.learner.detected_at
            killer(driver)

        summary = run_ray(load_config(ROOT / args.config, sets), on_tick=tick)
        wall = time.monotonic() - started
    rows = []
    for i, event in enumerate(summary["learner"]["events"]):
        detection = handle_detected[i] - killer.killed_at[i]  # kill to the driver noticing it
        back = event.get("back_to_training_seconds")
        rows.append({
            "at_env_step": killer.at_step[i], "detection_s": round(detection, 2),
            "first_update_s": round(detection + back, 2) if back is not None else None,
            "downtime_s": event["downtime_seconds"], "resumed_from_step": event["resumed_from_step"],
            "env_steps_lost": event["env_steps_lost"],
        })  # fmt: skip
    times = [r["first_update_s"] for r in rows if r["first_update_s"] is not None]
    report = {
        "benchmark": "learner_recovery", "command": command_line(), "machine": machine(),
        "device": args.device, "kills": rows, "median_s": statistics.median(times) if times else None,
        "max_s": max(times) if times else None, "env_steps_lost": sum(r["env_steps_lost"] for r in rows),
        "exit_code": summary["exit_code"], "env_steps": summary["env_steps"], "wall_s": round(wall, 1),
        "duplicates": summary["counters"]["fragments_duplicate"], "replay_size": summary["replay_size"],
    }  # fmt: skip
    lines = [
        "# Learner recovery", "", f"`{report['command']}` on {machine_line(report['machine'])}.", "",
        f"{len(rows)} kills: kill to the new learner's first update median **{report['median_s']} s**, max "
        f"**{report['max_s']} s**; env steps lost {report['env_steps_lost']}; the run ended with exit "
        f"{report['exit_code']} at {report['env_steps']} env steps, replay {report['replay_size']}, "
        f"{report['duplicates']} duplicate fragments.", "",
        "| kill at env step | kill to detection (s) | kill to first update (s) | driver's downtime (s) "
        "| resumed from step | env steps lost |",
        "|---|---|---|---|---|---|",
        *[f"| {r['at_env_step']} | {r['detection_s']} | {r['first_update_s']} | {r['downtime_s']} "
          f"| {r['resumed_from_step']} | {r['env_steps_lost']} |" for r in rows],
    ]  # fmt: skip
    write_report(Path(args.out), "learner_recovery", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
