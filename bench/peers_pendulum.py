"""End to end on Pendulum-v1: dmsac against Stable-Baselines3 SAC, wall-clock and return at equal env steps.

    python bench/peers_pendulum.py [--seeds 0 1 2] [--steps 15000] [--systems dmsac sb3] [--parallel]
                                   [--dmsac-set cluster.mode=local ...] [--out bench/results]

Both systems train SAC with the same settings (configs/pendulum.yaml): 256x256
networks, batch 256, lr 3e-4, gamma 0.99, tau 0.005, learned temperature from
alpha 1 toward -action_dim, 1 000 random warm-up steps, replay of 100 000,
one update per environment step. dmsac runs ``python -m cluster.train`` as
configured (Ray, 2 rollout actors x 2 envs, learner on the GPU when there is
one); SB3 (``stable-baselines3``, the ``bench`` extra) runs one environment,
``train_freq=1, gradient_steps=1``, on the same device. Each run is its own
process; "process s" includes start-up (imports, Ray), "train s" only the
training loop. ``--parallel`` runs the seeds of one system at once (one
process each; systems still one after the other). Return = mean of the last 10 training episodes at the end;
"steps to target" = env steps at which that running mean first reaches
``--target``. RLlib SAC is not run (see bench/README.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench.plots when run as a script
from bench.common import command_line, machine, machine_line, write_report  # noqa: E402

SETTINGS = {"lr": 3e-4, "gamma": 0.99, "tau": 0.005, "batch": 256, "buffer": 100_000, "warmup": 1000, "net": [256, 256]}


def steps_to_target(curve: list[list[float]], target: float) -> int | None:
    """First env step at which the running return reaches ``target`` (``curve``: [step, return] pairs)."""
    return next((int(step) for step, value in curve if value >= target), None)


def run_dmsac(seed: int, steps: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        sets = [f"train.seed={seed}", f"train.total_env_steps={steps}", f"train.run_dir={run_dir}",
                "metrics.port=0", "cluster.node_ip_address=127.0.0.1", *extra]  # fmt: skip
        command = [sys.executable, "-m", "cluster.train", "--config", "configs/pendulum.yaml"]
        command += [arg for s in sets for arg in ("--set", s)]
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - start
        summary_path = Path(run_dir) / "final_stats.json"
        if done.returncode != 0 or not summary_path.exists():
            return {"error": f"exit {done.returncode}: {done.stderr[-800:]}"}
        summary = json.loads(summary_path.read_text())
    return {"process_s": wall, "train_s": summary["wall_seconds"], "env_steps": summary["env_steps"],
            "updates": summary["updates"], "return": summary["recent_return"], "curve": summary["return_curve"]}  # fmt: skip


def run_sb3(seed: int, steps: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--sb3-worker", str(seed), "--steps", str(steps)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr[-800:]}"}
    return {"process_s": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def sb3_worker(seed: int, steps: int) -> None:
    """Train SB3 SAC in this process; print one JSON line (train seconds, final return, curve)."""
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Curve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.returns: list[float] = []
            self.points: list[list[float]] = []

        def _on_step(self) -> bool:  # runs before SB3 files the episode into its own buffer
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
                    self.points.append([self.num_timesteps, statistics.fmean(self.returns[-10:])])
            return True

    model = SAC(
        "MlpPolicy", "Pendulum-v1", learning_rate=SETTINGS["lr"], buffer_size=SETTINGS["buffer"],
        learning_starts=SETTINGS["warmup"], batch_size=SETTINGS["batch"], tau=SETTINGS["tau"], gamma=SETTINGS["gamma"],
        train_freq=1, gradient_steps=1, ent_coef="auto", policy_kwargs={"net_arch": SETTINGS["net"]}, seed=seed,
        device="cuda" if torch.cuda.is_available() else "cpu", verbose=0,
    )  # fmt: skip
    curve = Curve()
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=curve)
    train = time.perf_counter() - start
    final = statistics.fmean(curve.returns[-10:])
    out = {"train_s": train, "env_steps": model.num_timesteps, "updates": steps - SETTINGS["warmup"], "return": final}
    print(json.dumps({**out, "curve": curve.points}))


def versions() -> dict:
    """The machine, and the SB3 version beside the others."""
    found = machine()
    try:
        found["stable_baselines3"] = __import__("stable_baselines3").__version__
    except ImportError:
        found["stable_baselines3"] = "missing"
    found["device"] = found["gpu"] if found["gpu"] != "none" else f"cpu x{found['cpus']}"
    return found


def markdown(report: dict) -> str:
    v = report["versions"]
    lines = [
        "# End to end on Pendulum-v1: dmsac vs Stable-Baselines3 SAC", "",
        f"{machine_line(v)}; SB3 {v['stable_baselines3']}; {report['steps']} env steps per run, "
        f"target return {report['target']}.  ",
        f"Command: `{report['command']}`", "",
        "| system | seed | process s | train s | return (last 10 ep.) | steps to target |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in report["runs"]:
        if "error" in row:
            lines.append(f"| {row['system']} | {row['seed']} | failed: {row['error'][:100]} | | | |")
            continue
        reach = row.get("steps_to_target")
        lines.append(f"| {row['system']} | {row['seed']} | {row['process_s']:.1f} | {row['train_s']:.1f} | "
                     f"{row['return']:.1f} | {'-' if reach is None else f'{reach:,}'} |")  # fmt: skip
    for system, agg in report["summary"].items():
        lines.append(f"| **{system}** | mean | {agg['process_s']:.1f} | {agg['train_s']:.1f} | {agg['return']:.1f} | |")
    return "\n".join(lines + [""])


def plot(report: dict, png: Path) -> None:
    from bench.plots import save_panels

    series = [
        {"label": f"{r['system']} seed {r['seed']}", "x": [p[0] for p in r["curve"]], "y": [p[1] for p in r["curve"]]}
        for r in report["runs"]
        if "curve" in r
    ]
    panel = {"title": "Pendulum-v1: mean of the last 10 episode returns", "ylabel": "return", "series": series,
             "hlines": [(report["target"], "target")]}  # fmt: skip
    save_panels(png, [panel], f"dmsac vs SB3 SAC, {report['versions']['device']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--systems", nargs="+", default=["dmsac", "sb3"], choices=["dmsac", "sb3"])
    parser.add_argument("--target", type=float, default=-250.0)
    parser.add_argument("--parallel", action="store_true", help="run the seeds of one system concurrently")
    parser.add_argument("--dmsac-set", nargs="*", default=[], help="extra --set overrides for dmsac")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--sb3-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sb3_worker is not None:
        sb3_worker(args.sb3_worker, args.steps)
        return
    report = {"versions": versions(), "command": command_line(), "steps": args.steps,
              "parallel": args.parallel, "dmsac_set": args.dmsac_set,
              "target": args.target, "settings": SETTINGS, "runs": [], "summary": {}}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)

    def run(system: str, seed: int) -> dict:
        row = run_dmsac(seed, args.steps, args.dmsac_set) if system == "dmsac" else run_sb3(seed, args.steps)
        row.update(system=system, seed=seed)
        if "curve" in row:
            row["steps_to_target"] = steps_to_target(row["curve"], args.target)
        print(f"{system} seed {seed}: {json.dumps({k: v for k, v in row.items() if k != 'curve'})}", flush=True)
        return row

    for system in args.systems:
        with concurrent.futures.ThreadPoolExecutor(len(args.seeds) if args.parallel else 1) as pool:
            report["runs"] += list(pool.map(lambda seed, system=system: run(system, seed), args.seeds))
        ok = [r for r in report["runs"] if "error" not in r]
        for name in {r["system"] for r in ok}:
            mine = [r for r in ok if r["system"] == name]
            report["summary"][name] = {
                k: statistics.fmean(r[k] for r in mine) for k in ("process_s", "train_s", "return")
            }
        write_report(args.out, "peers_pendulum", report, markdown(report))
    plot(report, args.out / "peers_pendulum.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
