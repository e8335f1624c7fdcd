"""End to end on Pendulum-v1: dmsac against Stable-Baselines3 and RLlib SAC, by wall clock and env steps.

    python bench/peers_pendulum.py [--seeds 0 1 2] [--steps 15000] [--systems dmsac sb3 rllib] [--parallel]
                                   [--max-train-s 900] [--target -200] [--dmsac-set KEY=VALUE ...] [--out bench/results]

Every system trains SAC on Pendulum-v1 with one update per environment step (equal UTD):

- ``dmsac``: ``python -m cluster.train --config configs/pendulum.yaml`` on the Ray service (2 rollout actors x 2
  envs, learner on the GPU when there is one): 256x256 networks, batch 256, lr 3e-4, gamma 0.99, tau 0.005, learned
  temperature, 1 000 random warm-up steps, replay of 100 000.
- ``sb3``: Stable-Baselines3 SAC (the ``bench`` extra) with the same settings, one environment,
  ``train_freq=1, gradient_steps=1``, networks on the same device.
- ``rllib``: RLlib SAC on its new API stack, configured as RLlib's own tuned example
  ``rllib/tuned_examples/sac/pendulum_sac.py`` (actor/critic/alpha lr 2e-4/8e-4/9e-4, n-step 2-5, prioritized
  episode replay of 100 000, batch 256, 256x256 ReLU, 256 warm-up steps), one learner on the GPU when there is
  one, sampling in the main process (one env, one step per update); its running return averages 10 episodes
  (``metrics_num_episodes_for_smoothing``) like the others.

Each run is its own process; "process s" includes start-up (imports, Ray), "train s" only training. A run stops at
``--steps`` or after ``--max-train-s`` of training (reported where it got). Return = mean of the last 10 training
episodes; "s to target" / "steps to target" = training seconds / env steps at which that mean first reaches
``--target``; env steps/s = env steps over training seconds. ``--parallel`` runs the seeds of one system at once;
``--dmsac-joint`` runs dmsac's seeds as one job instead (``train.parallel_runs``: one learner process trains them
stacked, each with its own rollout actors), where separate processes would time-slice one GPU.
Writes ``peers_pendulum.{json,md,png}`` (return against wall clock and against env steps).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
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


def child_env() -> dict[str, str]:
    """The environment of a run's process: Ray on loopback, no usage stats."""
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def first_at_target(curve: list[list[float]], target: float) -> tuple[int | None, float | None]:
    """Env step and training seconds at which the running return first reaches ``target``
    (``curve``: ``[step, return, seconds]`` points)."""
    return next(((int(p[0]), float(p[2])) for p in curve if p[1] is not None and p[1] >= target), (None, None))


def run_dmsac(seed: int, steps: int, extra: list[str]) -> dict:
    """One dmsac run: ``python -m cluster.train`` on the Ray service, in its own process."""
    job = dmsac_job([f"train.seed={seed}", f"train.total_env_steps={steps}", "metrics.port=0", *extra])
    return job if "error" in job else dmsac_row(job["summary"], job["process_s"])


def run_dmsac_joint(seeds: list[int], steps: int, extra: list[str]) -> list[dict]:
    """dmsac's seeds as one job (``train.parallel_runs``, run ``k`` of seed ``seeds[0] + k``): one learner process
    trains all of them, stacked; each run has its own rollout actors. A row per run."""
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise SystemExit(f"--dmsac-joint needs consecutive seeds (run k trains seed first + k), not {seeds}")
    job = dmsac_job([f"train.seed={seeds[0]}", f"train.total_env_steps={steps}", f"train.parallel_runs={len(seeds)}",
                     "metrics.enabled=false", *extra])  # fmt: skip
    if "error" in job:
        return [dict(job) for _ in seeds]  # a row each: the caller labels each with its seed
    return [dmsac_row(run, job["process_s"]) for run in job["summary"]["runs"]]


def dmsac_job(sets: list[str]) -> dict:
    """``cluster.train --config configs/pendulum.yaml`` with ``sets``: its process seconds and final summary."""
    with tempfile.TemporaryDirectory() as run_dir:
        sets = [f"train.run_dir={run_dir}", "cluster.node_ip_address=127.0.0.1", *sets]
        command = [sys.executable, "-m", "cluster.train", "--config", "configs/pendulum.yaml"]
        command += [arg for s in sets for arg in ("--set", s)]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - start
        summary_path = Path(run_dir) / "final_stats.json"
        if done.returncode != 0 or not summary_path.exists():
            return {"error": f"exit {done.returncode}: {done.stderr[-800:]}"}
        return {"process_s": wall, "summary": json.loads(summary_path.read_text())}


def dmsac_row(summary: dict, process_s: float) -> dict:
    return {"process_s": process_s, "train_s": summary["wall_seconds"], "env_steps": summary["env_steps"],
            "updates": summary["updates"], "return": summary["recent_return"], "curve": summary["return_curve"],
            "learner_seconds": summary.get("learner_seconds", {})}  # fmt: skip


def run_worker(system: str, seed: int, steps: int, max_train_s: float) -> dict:
    """``system``'s worker in its own process; its last stdout line is the run's JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", system, str(seed), "--steps", str(steps),
               "--max-train-s", str(max_train_s)]  # fmt: skip
    env = child_env()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max_train_s + 1800)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr[-800:]}"}
    return {"process_s": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def sb3_worker(seed: int, steps: int, max_train_s: float) -> None:
    """Train SB3 SAC in this process; print one JSON line (train seconds, final return, curve)."""
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Curve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.returns: list[float] = []
            self.points: list[list[float]] = []

        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _on_step(self) -> bool:  # runs before SB3 files the episode into its own buffer
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
                    self.points.append([self.num_timesteps, statistics.fmean(self.returns[-10:]),
                                        time.perf_counter() - self.start])  # fmt: skip
            return time.perf_counter() - self.start < max_train_s

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
    out = {"train_s": train, "env_steps": model.num_timesteps, "updates": max(0, model.num_timesteps - SETTINGS["warmup"]),
           "return": final}  # fmt: skip
    print(json.dumps({**out, "curve": curve.points}))


def rllib_worker(seed: int, steps: int, max_train_s: float) -> None:
    """Train RLlib SAC (its tuned Pendulum example) in this process; print one JSON line."""
    import ray
    import torch
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN, NUM_ENV_STEPS_SAMPLED_LIFETIME
    from torch import nn

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    config = (
        SACConfig()
        .environment("Pendulum-v1")
        .training(
            initial_alpha=1.001, actor_lr=2e-4, critic_lr=8e-4, alpha_lr=9e-4, lr=None, target_entropy="auto",
            n_step=(2, 5), tau=0.005, train_batch_size_per_learner=256, target_network_update_freq=1,
            replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer", "capacity": 100_000, "alpha": 1.0,
                                  "beta": 0.0},
            num_steps_sampled_before_learning_starts=256,
            training_intensity=256,  # 256 samples trained per env step: one update of 256 per step, as the others
        )
        .rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=[256, 256], fcnet_activation="relu", fcnet_kernel_initializer=nn.init.xavier_uniform_,
            head_fcnet_hiddens=[], head_fcnet_activation=None, head_fcnet_kernel_initializer="orthogonal_",
            head_fcnet_kernel_initializer_kwargs={"gain": 0.01}))
        .learners(num_gpus_per_learner=1 if torch.cuda.is_available() else 0)
        .reporting(metrics_num_episodes_for_smoothing=10)
        .debugging(seed=seed)
    )  # fmt: skip
    algo = config.build_algo()
    points: list[list[float]] = []
    start = time.perf_counter()
    sampled = 0
    trained = 0
    while sampled < steps and time.perf_counter() - start < max_train_s:
        result = algo.train()
        runners = result[ENV_RUNNER_RESULTS]
        sampled = int(runners[NUM_ENV_STEPS_SAMPLED_LIFETIME])
        trained = int(result.get("learners", {}).get("__all_modules__", {}).get("num_env_steps_trained_lifetime", 0))
        value = runners.get(EPISODE_RETURN_MEAN)
        if value is not None and math.isfinite(value):
            points.append([sampled, float(value), time.perf_counter() - start])
    train = time.perf_counter() - start
    algo.stop()
    final = points[-1][1] if points else None
    out = {"train_s": train, "env_steps": sampled, "updates": trained // 256, "return": final}  # batches of 256
    print(json.dumps({**out, "curve": points}))


def versions() -> dict:
    """The machine, and the peers' versions beside the others."""
    found = machine()
    for name, module in (("stable_baselines3", "stable_baselines3"), ("rllib", "ray")):
        try:
            found[name] = __import__(module, fromlist=["__version__"]).__version__
        except (ImportError, AttributeError):
            found[name] = "missing"
    found["device"] = found["gpu"] if found["gpu"] != "none" else f"cpu x{found['cpus']}"
    return found


def summarize(rows: list[dict]) -> dict:
    """Per system: means over its seeds (seconds and steps to target over the seeds that reached it)."""
    summary = {}
    for name in dict.fromkeys(r["system"] for r in rows if "error" not in r):
        mine = [r for r in rows if r["system"] == name and "error" not in r]
        reached = [r for r in mine if r["s_to_target"] is not None]
        summary[name] = {
            **{k: statistics.fmean(r[k] for r in mine) for k in ("process_s", "train_s", "env_steps_per_s")},
            "return": statistics.fmean(r["return"] for r in mine if r["return"] is not None),
            "reached": f"{len(reached)}/{len(mine)}",
            "s_to_target": statistics.fmean(r["s_to_target"] for r in reached) if reached else None,
            "steps_to_target": statistics.fmean(r["steps_to_target"] for r in reached) if reached else None,
        }
    return summary


def markdown(report: dict) -> str:
    v = report["versions"]
    lines = [
        "# End to end on Pendulum-v1: dmsac vs Stable-Baselines3 and RLlib SAC", "",
        f"{machine_line(v)}; SB3 {v['stable_baselines3']}, RLlib {v['rllib']}; up to {report['steps']:,} env steps "
        f"or {report['max_train_s']:.0f} s of training per run; target return {report['target']}.  ",
        f"Command: `{report['command']}`", "",
        "| system | seed | process s | train s | env steps | env steps/s | return (last 10 ep.) | s to target | "
        "steps to target |", "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in report["runs"]:
        if "error" in row:
            lines.append(f"| {row['system']} | {row['seed']} | failed: {row['error'][:100]} |" + " |" * 6)
            continue
        to_s, to_steps, ret = row["s_to_target"], row["steps_to_target"], row["return"]
        lines.append(f"| {row['system']} | {row['seed']} | {row['process_s']:.1f} | {row['train_s']:.1f} | "
                     f"{row['env_steps']:,} | {row['env_steps_per_s']:.0f} | {'-' if ret is None else f'{ret:.1f}'} | "
                     f"{'-' if to_s is None else f'{to_s:.1f}'} | {'-' if to_steps is None else f'{to_steps:,}'} |")  # fmt: skip
    for system, agg in report["summary"].items():
        to_s, to_steps = agg["s_to_target"], agg["steps_to_target"]
        lines.append(f"| **{system}** | mean | {agg['process_s']:.1f} | {agg['train_s']:.1f} | | "
                     f"{agg['env_steps_per_s']:.0f} | {agg['return']:.1f} | "
                     f"{'-' if to_s is None else f'{to_s:.1f}'} ({agg['reached']}) | "
                     f"{'-' if to_steps is None else f'{to_steps:,.0f}'} |")  # fmt: skip
    return "\n".join(lines + [""])


def plot(report: dict, png: Path) -> None:
    from bench.plots import save_panels

    runs = [r for r in report["runs"] if r.get("curve")]
    panels = [
        {"title": f"Pendulum-v1: mean of the last 10 episode returns against {label}", "ylabel": "return",
         "xlabel": label, "hlines": [(report["target"], "target")],
         "series": [{"label": f"{r['system']} seed {r['seed']}", "x": [p[axis] for p in r["curve"]],
                     "y": [p[1] for p in r["curve"]]} for r in runs]}
        for axis, label in ((2, "training seconds"), (0, "env steps"))
    ]  # fmt: skip
    save_panels(png, panels, f"dmsac vs SB3 and RLlib SAC, {report['versions']['device']}")


WORKERS = {"sb3": sb3_worker, "rllib": rllib_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--systems", nargs="+", default=["dmsac", "sb3", "rllib"], choices=["dmsac", *WORKERS])
    parser.add_argument("--target", type=float, default=-200.0)
    parser.add_argument("--max-train-s", type=float, default=900.0, help="training seconds per run at most")
    parser.add_argument("--parallel", action="store_true", help="run the seeds of one system concurrently")
    parser.add_argument("--dmsac-set", nargs="*", default=[], help="extra --set overrides for dmsac")
    parser.add_argument("--dmsac-joint", action="store_true",
                        help="dmsac's seeds as one job (train.parallel_runs: one learner process, stacked runs)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        WORKERS[args.worker[0]](int(args.worker[1]), args.steps, args.max_train_s)
        return
    report = {"versions": versions(), "command": command_line(), "steps": args.steps, "max_train_s": args.max_train_s,
              "parallel": args.parallel, "dmsac_set": args.dmsac_set, "dmsac_joint": args.dmsac_joint,
              "target": args.target, "settings": SETTINGS, "runs": [], "summary": {}}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)

    def run(system: str, seed: int) -> dict:
        if system == "dmsac":
            return finish(run_dmsac(seed, args.steps, args.dmsac_set), system, seed)
        return finish(run_worker(system, seed, args.steps, args.max_train_s), system, seed)

    def finish(row: dict, system: str, seed: int) -> dict:
        row.update(system=system, seed=seed)
        if "error" not in row:
            row["steps_to_target"], row["s_to_target"] = first_at_target(row["curve"], args.target)
            row["env_steps_per_s"] = row["env_steps"] / row["train_s"] if row["train_s"] else 0.0
        print(f"{system} seed {seed}: {json.dumps({k: v for k, v in row.items() if k != 'curve'})}", flush=True)
        return row

    for system in args.systems:
        if system == "dmsac" and args.dmsac_joint:
            rows = run_dmsac_joint(args.seeds, args.steps, args.dmsac_set)
            report["runs"] += [finish(row, system, seed) for row, seed in zip(rows, args.seeds, strict=True)]
        else:
            with concurrent.futures.ThreadPoolExecutor(len(args.seeds) if args.parallel else 1) as pool:
                report["runs"] += list(pool.map(lambda seed, system=system: run(system, seed), args.seeds))
        report["summary"] = summarize(report["runs"])
        write_report(args.out, "peers_pendulum", report, markdown(report))
    plot(report, args.out / "peers_pendulum.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
