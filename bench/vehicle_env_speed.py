"""Vehicle environment throughput on one CPU core: environment steps per second.

    python bench/vehicle_env_speed.py [--num-envs 256] [--steps 4096] [--repeats 5] [--out bench/results]

One environment step is one vehicle advanced by one control step, so a
``step()`` of 256 vehicles counts 256. The timed loop includes the automatic
resets at episode ends (every 2048 steps: new vehicles, references and roads)
and the actions' generation is outside the timing. Threads are pinned to 1
(BLAS/OpenMP variables set before numpy loads; the process is bound to one
core where the OS allows). Target: >= 100 000 steps/s with 256 vehicles.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actors.vehicle import VehicleConfig, VehicleVectorEnv  # noqa: E402
from bench.common import command_line, machine, machine_line, write_report  # noqa: E402

TARGET = 100_000


def pin_one_core() -> str:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def time_run(env: VehicleVectorEnv, actions: np.ndarray) -> tuple[float, int]:
    """Seconds for ``len(actions)`` vector steps, and the episode resets they included."""
    env.reset(0)
    resets = 0
    start = time.perf_counter()
    for a in actions:
        resets += int(env.step(a).truncated.sum())
    return time.perf_counter() - start, resets


def time_resets(env: VehicleVectorEnv, repeats: int) -> float:
    """Seconds for one full reset of every vehicle (draws, references, roads)."""
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        env.reset(seed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4096, help="vector steps per repeat (2048 = one episode)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    pinning = pin_one_core()
    env = VehicleVectorEnv(args.num_envs, VehicleConfig(), seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, args.num_envs, 1))
    time_run(env, actions[:200])  # warm-up
    runs = [time_run(env, actions) for _ in range(args.repeats)]
    rates = [args.steps * args.num_envs / seconds for seconds, _ in runs]
    result = {
        "benchmark": "vehicle_env_speed",
        "num_envs": args.num_envs,
        "vector_steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "resets_per_repeat": runs[0][1],
        "env_steps_per_s_median": float(np.median(rates)),
        "env_steps_per_s_best": float(np.max(rates)),
        "env_steps_per_s_worst": float(np.min(rates)),
        "full_reset_seconds": time_resets(env, 3),
        "target_env_steps_per_s": TARGET,
        "meets_target": bool(np.median(rates) >= TARGET),
        "threads": "1 (OMP/OPENBLAS/MKL/NUMEXPR_NUM_THREADS=1), " + pinning,
        "machine": machine(),
        "command": command_line(),
        "load_average": list(os.getloadavg()),
    }
    write_report(args.out, "vehicle_env_speed", result, markdown(result))
    print(markdown(result))
    return 0 if result["meets_target"] else 1


def markdown(r: dict) -> str:
    rows = [
        ("vehicles per object", f"{r['num_envs']}"),
        ("env steps/s (median of repeats)", f"{r['env_steps_per_s_median']:,.0f}"),
        ("env steps/s (best / worst)", f"{r['env_steps_per_s_best']:,.0f} / {r['env_steps_per_s_worst']:,.0f}"),
        ("target", f"{r['target_env_steps_per_s']:,} ({'met' if r['meets_target'] else 'NOT met'})"),
        ("full reset of all vehicles", f"{1000 * r['full_reset_seconds']:.1f} ms"),
        ("episode resets per repeat (in the timing)", f"{r['resets_per_repeat']}"),
        ("threads", r["threads"]),
        ("machine", machine_line(r["machine"])),
        ("command", f"`{r['command']}`"),
        ("load average at the end", ", ".join(f"{x:.2f}" for x in r["load_average"])),
    ]
    lines = ["# Vehicle environment speed (one core)", "", "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
