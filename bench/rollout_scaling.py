"""Rollout scaling: environment steps per second with 1, 2, 4, 8, 16 Ray rollout actors on one machine.

    python bench/rollout_scaling.py [--config configs/vehicle.yaml] [--actors 1 2 4 8 16] [--seconds 15] [--out bench/results]

Each actor is ``cluster.factory.make_worker`` (vector environment, context
provider, CPU policy copy) in a Ray actor of one CPU; it runs the policy
(not random actions) and returns whole fragments through the object store,
which the driver fetches, as the training driver does. Each actor keeps one
rollout in flight. After one warm-up fragment per actor, env steps completed in
a window of ``--seconds`` give the rate; efficiency is rate(n) / (n * rate(1)).
The default is the vehicle environment with the dynamics-map context
(``context.mode=dynamics_map``); if that context cannot be built here, the run
says so and falls back to ``--fallback-set`` overrides.
Ray runs locally on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
THREAD_VARS = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
os.environ.update(THREAD_VARS)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command_line, machine, machine_line, write_report  # noqa: E402
from cluster.config import Config, load_config  # noqa: E402
from cluster.factory import make_worker  # noqa: E402

TARGET_EFFICIENCY, TARGET_UP_TO = 0.80, 8


@ray.remote(num_cpus=1)
class BenchRollout:
    def __init__(self, config: Config, actor_id: int) -> None:
        import torch

        torch.set_num_threads(1)
        self.worker = make_worker(config, actor_id=actor_id)

    def rollout(self, steps: int):
        return self.worker.rollout(steps)


def usable_config(args: argparse.Namespace) -> tuple[Config, str]:
    """The requested config if a worker can be built from it here, else the fallback (and why)."""
    try:
        config = load_config(args.config, args.set)
        make_worker(config).rollout(2)
        return config, "as requested"
    except Exception as error:  # noqa: BLE001 - report and fall back
        reason = f"requested config unusable ({type(error).__name__}: {error})"[:300]
        print(reason, flush=True)
        return load_config(args.config, args.fallback_set), reason


def measure(config: Config, count: int, seconds: float) -> dict:
    steps = config.rollout.steps_per_fragment
    actors = [BenchRollout.remote(config, i) for i in range(count)]
    ray.get([a.rollout.remote(steps) for a in actors])  # built and warm
    pending = {a.rollout.remote(steps): a for a in actors}
    env_steps, fragments = 0, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            actor = pending.pop(ref)
            env_steps += ray.get(ref).env_steps
            fragments += 1
            pending[actor.rollout.remote(steps)] = actor
    elapsed = time.perf_counter() - start
    for actor in actors:
        ray.kill(actor)
    return {
        "actors": count,
        "env_steps": env_steps,
        "fragments": fragments,
        "seconds": elapsed,
        "rate": env_steps / elapsed,
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Rollout scaling (env steps/s, Ray actors on one machine)", "",
        f"{machine_line(m)}; workload: {report['workload']}.  ",
        f"Config: {report['config_note']}.  ", f"Command: `{report['command']}`", "",
        "| actors | env steps/s | per actor | efficiency vs linear |", "|---|---|---|---|",
    ]  # fmt: skip
    for row in report["results"]:
        lines.append(
            f"| {row['actors']} | {row['rate']:,.0f} | {row['rate'] / row['actors']:,.0f} | {row['efficiency']:.0%} |"
        )
    lines += ["", f"Target: >= {TARGET_EFFICIENCY:.0%} of linear up to {TARGET_UP_TO} actors.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/vehicle.yaml")
    parser.add_argument("--set", nargs="*", default=["context.mode=dynamics_map"], help="overrides (key=value)")
    parser.add_argument("--fallback-set", nargs="*", default=["context.mode=none"])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    config, note = usable_config(args)
    ray.init(address="local", num_cpus=args.cpus, _node_ip_address="127.0.0.1", include_dashboard=False,
             runtime_env={"env_vars": THREAD_VARS}, logging_level="WARNING")  # fmt: skip
    env_name = config.env.id if config.env.kind == "gymnasium" else config.env.kind
    workload = (f"env {env_name}, {config.env.num_envs} envs/actor, "
                f"context {config.context.mode}, {config.rollout.steps_per_fragment} steps/fragment")  # fmt: skip
    report = {
        "machine": machine(), "command": command_line(), "workload": workload, "config_note": note, "results": [],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for count in args.actors:
        row = measure(config, count, args.seconds)
        row["efficiency"] = row["rate"] / (count * report["results"][0]["rate"]) if report["results"] else 1.0
        report["results"].append(row)
        print(f"{count:2d} actors: {row['rate']:,.0f} env steps/s, efficiency {row['efficiency']:.0%}", flush=True)
        write_report(args.out, "rollout_scaling", report, markdown(report))
    ray.shutdown()
    print(markdown(report))


if __name__ == "__main__":
    main()
