"""The context study on the real service: every (arm, seed) trains through ``python -m cluster.train`` on a running
Ray cluster and is scored by ``python -m cluster.evaluate --checkpoint`` on held-out vehicles, beside the PID.

    python bench/context_study.py --address HOST:PORT --work DIR [--config configs/vehicle_agile.yaml]
        [--arms none oracle pooled] [--seeds 0 1 2]
        [--steps 1000000] [--hparams tuned] [--set KEY=VALUE ...] [--gpu-fraction 0.1] [--max-wall 1200]
        [--eval-episodes 32] [--name context_study] [--out bench/results]
    python bench/context_study.py --render bench/results/context_study.json   # markdown and PNG again from the JSON

All runs go at once; each learner asks Ray for ``--gpu-fraction`` of a GPU (``cluster.learner_gpu_fraction``), so
they share one. Each run is its own job with its own run directory ``DIR/runs/<arm>-seed<seed>`` and starts with
``--resume auto``: a second call with the same ``--work`` continues every run that has not reached ``--steps`` from its
last good checkpoint. At ``--max-wall`` the study stops the runs as Ctrl-C does (a final checkpoint, exit 0). Once
every run has its budget (or with ``--score-now``) each is scored, in parallel, and the report is written:
``<name>.json`` (``arms``, ``pid``, ``aggregate[arm][metric] = {mean, std, n}``, ``floors``, ``runs`` with their
curves and learner rates), ``<name>.md`` and ``<name>.png``.

Arms are those of ``bench/context_benefit.py`` (``none``, ``oracle``, ``pooled``, ``basis``: the map fitted on the
population's principal components, its coordinates as the context, ``cnn``, ``history``: the last
samples as the context, ``privileged``: the pooled map for the policy and the true parameters for the critics too,
``direct``: the pooled map with the policy's action as the command whatever ``--set`` says, ``oracle_ff`` and
``basis_ff``: those contexts with a residual of ±0.1 on the controller that inverts the map they know
(``env.vehicle.action: residual_map``), ``oracle_ff_history`` and ``basis_ff_history``: the same with the last
samples appended to the context, ``context.append_history``);
``--set env.vehicle.action=residual_pid`` makes every other arm a residual policy on the PID (the PID column stays the
PID alone). An arm's overrides come after ``--set``.
Gain is the reduction of the held-out mean abs speed error against the ``none`` arm, paired by seed.

``--one-job``: every run in one ``cluster.train`` job instead (``train.parallel_runs``, each run's arm and seed in
``train.run_overrides``): one learner process for all of them, on the ``--address`` cluster or, without one, local.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import ROOT, command_line, fmt, machine, machine_line, write_report  # noqa: E402
from bench.context_benefit import (  # noqa: E402
    ARMS,
    CNN_CHECKPOINT,
    DIRECT_ARMS,
    EVAL_METRICS,
    EVAL_SEED,
    HPARAMS,
    arm_overrides,
    mean_std,
    pm,
)
from bench.plots import save_panels  # noqa: E402

RUN_PROGRESS = re.compile(r"(?:run (\d+): )?(?:done: )?env_steps=(\d+) updates=(\d+) updates/s=([\d.]+)")
SHARE_ARMS = {"oracle": ("pooled", "basis", "cnn", "history", "privileged"), "oracle_ff": ("basis_ff",),
              "oracle_ff_history": ("basis_ff_history",)}  # fmt: skip
"""Oracle arm → the arms whose share of its gain the floors report (the issue's floor: the map's). ``oracle_ff`` is
the oracle of the map feed-forward arms (``env.vehicle.action: residual_map``): the true map under the residual."""
STOP_GRACE_S = 180.0
"""Seconds a run has to checkpoint and exit after the study's Ctrl-C before it is interrupted a second time."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render", type=Path, help="write the markdown and PNG again from a study's JSON; no runs")
    parser.add_argument("--address", help="the running Ray cluster every run joins (cluster.address)")
    parser.add_argument("--work", type=Path, help="where the run directories live (keep it to resume)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "vehicle.yaml"))
    parser.add_argument("--arms", nargs="+", default=["none", "oracle", "pooled"], choices=ARMS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1_000_000, help="environment steps per run")
    parser.add_argument("--hparams", default="tuned", choices=sorted(HPARAMS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable); reported")  # fmt: skip
    parser.add_argument("--gpu-fraction", type=float, default=0.1, help="each learner's share of a GPU")
    parser.add_argument("--max-wall", type=float, default=1200.0, help="seconds of training in this call")
    parser.add_argument("--one-job", action="store_true",
                        help="every run in one cluster.train job (train.parallel_runs): one learner process, one CUDA "
                             "graph replay updating every run; on the --address cluster, else in one local process")  # fmt: skip
    parser.add_argument("--score-now", action="store_true", help="score the runs where they are, done or not")
    parser.add_argument("--no-score", action="store_true", help="train only")
    parser.add_argument("--score-only", action="store_true",
                        help="score the runs where their last good checkpoints are, without training (say, after "
                             "the cluster under a job died)")  # fmt: skip
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    parser.add_argument("--name", default="context_study")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--log-every", type=float, default=60.0, help="seconds between the study's progress lines")
    args = parser.parse_args(argv)
    if not args.render and not ((args.address or args.one_job) and args.work):
        parser.error("--address and --work are needed (--work alone with --one-job; or --render JSON)")
    return args


# -- one run: a cluster.train job ---------------------------------------------------------------------


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def run_overrides(args: argparse.Namespace, arm: str, seed: int, run_dir: Path) -> list[str]:
    """Hyperparameters, the user's overrides, the arm, then where and how long the run goes."""
    placed = [f"train.run_dir={run_dir}", f"train.total_env_steps={args.steps}", f"train.seed={seed}",
              f"cluster.address={args.address}", f"cluster.learner_gpu_fraction={args.gpu_fraction}",
              "metrics.port=0", "metrics.tensorboard=false"]  # fmt: skip
    return HPARAMS[args.hparams] + args.overrides + arm_overrides(arm, CNN_CHECKPOINT) + placed


def one_job_overrides(args: argparse.Namespace, runs: list[tuple[str, int]], job_dir: Path) -> list[str]:
    """The ``--one-job`` job: what every run shares, and per run its arm and seed (``train.run_overrides``). On the
    Ray cluster of ``--address`` each run has the config's rollout actors; without one, the job runs in one local
    process and a run's one worker steps as many environments as those actors do together (the same data stream)."""
    from cluster.config import load_config

    shared = HPARAMS[args.hparams] + args.overrides
    per_run = [arm_overrides(arm, CNN_CHECKPOINT) + [f"train.seed={seed}"] for arm, seed in runs]
    if args.address:
        where = ["cluster.mode=ray", f"cluster.address={args.address}"]
    else:
        config = load_config(args.config, shared)
        where = ["cluster.mode=local", f"env.num_envs={config.cluster.num_actors * config.env.num_envs}"]
    placed = [f"train.run_dir={job_dir}", f"train.total_env_steps={args.steps}", f"train.parallel_runs={len(runs)}",
              f"train.run_overrides={json.dumps(per_run)}", "metrics.port=0", "metrics.tensorboard=false"]  # fmt: skip
    return shared + where + placed


def read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished(run_dir: Path, steps: int) -> bool:
    """The run has its whole budget: its last process ended with exit 0 at ``steps`` or beyond."""
    final = read_json(run_dir / "final_stats.json")
    return bool(final) and final["exit_code"] == 0 and final["env_steps"] >= steps


def record_segment(run_dir: Path, exit_code: int) -> None:
    """Append this process's figures (learner rate, return curve) to ``segments.json``: a resume overwrites
    ``final_stats.json``, the study keeps every segment."""
    final = read_json(run_dir / "final_stats.json") or {}
    segments = read_json(run_dir / "segments.json") or []
    keep = ("env_steps", "updates", "wall_seconds", "updates_this_run", "env_steps_this_run",
            "mean_updates_per_second_this_run", "counters", "return_curve", "exit_reason")  # fmt: skip
    segments.append({"exit_code": exit_code, **{k: final.get(k) for k in keep}})
    (run_dir / "segments.json").write_text(json.dumps(segments) + "\n")


def launch(args: argparse.Namespace, name: str, run_dir: Path, overrides: list[str]) -> tuple[subprocess.Popen, Path]:
    """``python -m cluster.train --resume auto`` in the background, its output appended to ``run_dir/train.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cluster.train", "--config", args.config, "--resume", "auto"]
    command += [x for o in overrides for x in ("--set", o)]
    log = (run_dir / "train.log").open("a")
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), run_dir


def train_all(args: argparse.Namespace, runs: list[tuple[str, int]]) -> None:
    """Start (or resume) every unfinished run at once; stop them at ``--max-wall``; record each segment.

    ``--one-job``: one job trains every run (``<work>/job/runs/<k>``, linked as ``<work>/runs/<arm>-seed<seed>``)."""
    deadline = time.monotonic() + args.max_wall
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    dirs = {run_name(*run): (args.work / "runs" / run_name(*run)).absolute() for run in runs}
    todo = [run for run in runs if not finished(dirs[run_name(*run)], args.steps)]
    if args.one_job and todo:
        job_dir = (args.work / "job").absolute()
        for k, run in enumerate(runs):  # the job resumes every run; the finished ones only checkpoint again
            dirs[run_name(*run)].parent.mkdir(parents=True, exist_ok=True)
            if not dirs[run_name(*run)].is_symlink():  # a job of one run is a single run: in the job's directory
                target = job_dir / "runs" / str(k) if len(runs) > 1 else job_dir
                dirs[run_name(*run)].symlink_to(target, target_is_directory=True)
        procs["job"] = launch(args, "job", job_dir, one_job_overrides(args, runs, job_dir))
    elif todo:
        for arm, seed in todo:
            name = run_name(arm, seed)
            procs[name] = launch(args, name, dirs[name], run_overrides(args, arm, seed, dirs[name]))
    print(f"{len(todo)} runs training (of {len(runs)}{', one job' if args.one_job else ''}), until "
          f"{args.max_wall:.0f} s at most", flush=True)  # fmt: skip
    stop_sent: float | None = None
    next_line = time.monotonic() + args.log_every
    while any(p.poll() is None for p, _ in procs.values()):
        time.sleep(2.0)
        now = time.monotonic()
        if stop_sent is None and now >= deadline:
            print("wall budget reached: stopping the runs (checkpoint, exit 0)", flush=True)
            for proc, _ in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            stop_sent = now
        elif stop_sent is not None and now >= stop_sent + STOP_GRACE_S:
            for proc, _ in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # the second Ctrl-C: exit 130 at once
            stop_sent = math.inf
        if now >= next_line:
            next_line = now + args.log_every
            for name, (proc, run_dir) in procs.items():
                state = "running" if proc.poll() is None else f"exit {proc.returncode}"
                for label, seen in last_progress_by_run(run_dir / "train.log", name).items():
                    figures = f"env_steps={seen[0]:,} updates={seen[1]:,} updates/s={seen[2]:.0f}" if seen else "starting"
                    print(f"  {label}: {state} {figures}", flush=True)
    codes = {name: proc.returncode for name, (proc, _) in procs.items()}
    for arm, seed in todo:
        name = run_name(arm, seed)
        code = codes["job" if args.one_job else name]
        record_segment(dirs[name], code)
        print(f"  {name}: exit {code}", flush=True)


def last_progress_by_run(log: Path, name: str) -> dict[str, tuple[int, int, float] | None]:
    """A job's latest progress line per run (``run k:`` prefixes of a ``parallel_runs`` job), else its own."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 65536))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return {name: None}
    runs = {}
    for run, steps, updates, rate in RUN_PROGRESS.findall(tail):
        runs[f"{name} run {run}" if run else name] = (int(steps), int(updates), float(rate))
    return runs or {name: None}


# -- scoring ------------------------------------------------------------------------------------------


def score_run(args: argparse.Namespace, run_dir: Path) -> dict:
    """``cluster.evaluate --checkpoint`` on the run's last good checkpoint, its report in ``run_dir/eval``; beside the
    PID, a residual run's own base controller alone (``--baseline base``)."""
    report = run_dir / "eval"
    residual = residual_action(run_dir)
    command = [sys.executable, "-m", "cluster.evaluate", "--checkpoint", str(run_dir), "--episodes",
               str(args.eval_episodes), "--seed", str(args.eval_seed), "--baseline", "pid", *(["base"] if residual else []),
               "--report", str(report)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        return {"error": f"cluster.evaluate exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    return read_json(report / "summary.json")["policies"]


def residual_action(run_dir: Path) -> bool:
    """The run's vehicle action corrects a base controller (``residual_pid``, ``residual_map``)."""
    from cluster.config import load_config

    config = load_config(run_dir / "config.yaml")
    return config.env.kind == "vehicle" and config.env.vehicle.action != "direct"


def run_row(args: argparse.Namespace, arm: str, seed: int, scored: dict) -> dict:
    run_dir = args.work / "runs" / run_name(arm, seed)
    segments = read_json(run_dir / "segments.json") or []
    last = segments[-1] if segments else {}
    updates = sum(s.get("updates_this_run") or 0 for s in segments)
    wall = sum(s.get("wall_seconds") or 0.0 for s in segments)
    curve = [point for s in segments for point in (s.get("return_curve") or [])]
    scored_step = (read_json(run_dir / "checkpoints" / "last_good.json") or {}).get("step")
    row = {"arm": arm, "seed": seed, "env_steps": last.get("env_steps") or scored_step, "updates": last.get("updates"),
           "train_wall_s": wall, "mean_updates_per_second": updates / wall if wall else None,
           "segments": len(segments), "counters": last.get("counters") or {}, "curve": curve}  # fmt: skip
    if "error" in scored:
        row["error"] = scored["error"]
    else:
        row["eval"], row["pid"], row["base"] = scored["sac"], scored["pid"], scored.get("base")
    return row


def score_all(args: argparse.Namespace, runs: list[tuple[str, int]]) -> list[dict]:
    dirs = {run: args.work / "runs" / run_name(*run) for run in runs}
    with cf.ThreadPoolExecutor(max_workers=max(1, min(len(runs), os.cpu_count() or 1))) as pool:
        scored = dict(zip(dirs, pool.map(lambda d: score_run(args, d), dirs.values()), strict=True))
    return [run_row(args, arm, seed, scored[(arm, seed)]) for arm, seed in runs]


# -- aggregation and the floors -----------------------------------------------------------------------


def paired_gain(rows: list[dict], arm: str) -> dict | None:
    """Relative reduction of mean abs speed error against ``none``, paired by seed."""
    none = {r["seed"]: r["eval"]["mean_abs_speed_error"] for r in rows if r["arm"] == "none"}
    gains = [(none[r["seed"]] - r["eval"]["mean_abs_speed_error"]) / none[r["seed"]]
             for r in rows if r["arm"] == arm and r["seed"] in none]  # fmt: skip
    return mean_std(gains) if arm != "none" and gains else None


def aggregate(rows: list[dict], arms: list[str]) -> dict:
    ok = [r for r in rows if "error" not in r]
    table = {}
    for arm in arms:
        mine = [r for r in ok if r["arm"] == arm]
        entry = {m: mean_std([r["eval"][m] for r in mine]) for m in EVAL_METRICS}
        entry["env_steps"] = mean_std([r["env_steps"] for r in mine])
        entry["updates_per_second"] = mean_std([r["mean_updates_per_second"] for r in mine])
        entry["speed_error_gain_vs_none"] = paired_gain(ok, arm)
        bases = [r["base"] for r in mine if r.get("base")]  # the same vehicles and maps for every seed: one value
        entry["base_alone"] = {m: bases[0][m] for m in ("mean_abs_speed_error", "mean_return")} if bases else None
        entry["failed"] = sum(1 for r in rows if r["arm"] == arm and "error" in r)
        table[arm] = entry
    return table


def against_pid(prefix: str, scored: dict, pid: dict) -> dict:
    """The best of ``scored`` by mean return: its name, return gain and speed-error difference against the PID."""
    best = max(scored, key=lambda arm: scored[arm]["mean_return"]["mean"])
    return {f"{prefix}_arm": best,
            f"{prefix}_return_gain_vs_pid": (scored[best]["mean_return"]["mean"] - pid["mean_return"])
            / abs(pid["mean_return"]),
            f"{prefix}_error_vs_pid": scored[best]["mean_abs_speed_error"]["mean"] - pid["mean_abs_speed_error"]}  # fmt: skip


def floors(table: dict, pid: dict) -> dict:
    """The issue's floors, measured: best arm against PID, the oracle's gain, the map's share of it."""
    scored = {arm: e for arm, e in table.items() if e["mean_return"]["n"]}
    if not scored:
        return {}
    out = against_pid("best", scored, pid)
    direct = {arm: e for arm, e in scored.items() if arm in DIRECT_ARMS}
    if direct and len(direct) < len(scored):  # the non-residual arm beside the best (when the others are residual)
        out |= against_pid("best_direct", direct, pid)
    for oracle_arm, sharing in SHARE_ARMS.items():
        oracle = (scored.get(oracle_arm) or {}).get("speed_error_gain_vs_none")
        if not oracle:
            continue
        out[f"{oracle_arm}_gain"] = oracle["mean"]
        for arm in sharing:
            gain = (scored.get(arm) or {}).get("speed_error_gain_vs_none")
            if gain and oracle["mean"] > 0:
                out[f"{arm}_share_of_{oracle_arm}_gain"] = gain["mean"] / oracle["mean"]
    return out


# -- report -------------------------------------------------------------------------------------------


def base_text(base: dict | None) -> str:
    return f"{fmt(base['mean_abs_speed_error'])} / {fmt(base['mean_return'])}" if base else "-"


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def oracle_lines(f: dict) -> list[str]:
    """Each oracle arm's gain and the shares of it, as the floors sentence says them."""
    lines = []
    for oracle_arm, sharing in SHARE_ARMS.items():
        if f"{oracle_arm}_gain" in f:
            lines.append(f"; {oracle_arm} gain {100 * f[f'{oracle_arm}_gain']:.1f} % (floor 10 %)")
            lines += [f"; {arm} recovers {100 * f[f'{arm}_share_of_{oracle_arm}_gain']:.0f} % of it (floor 50 %)"
                      for arm in sharing if f"{arm}_share_of_{oracle_arm}_gain" in f]  # fmt: skip
    return lines


def markdown(report: dict) -> str:
    pid, table, f = report["pid"], report["aggregate"], report["floors"]
    lines = [f"# Context study on the service: {', '.join(report['arms'])} x seeds {report['seeds']}", "",
             f"{machine_line(report['machine'])}.  ", f"Command: `{report['command']}`", "",
             *([f"Note: {report['note']}.", ""] if report.get("note") else []),
             ("All runs in one job (one learner process): " if report.get("one_job") else "Each run: ")
             + f"`python -m cluster.train --config {Path(report['config']).name} --resume auto` with "
             + ", ".join(f"`{o}`" for o in report["run_overrides"])
             + (" and per run its arm and seed in `train.run_overrides`" if report.get("one_job") else "")
             + "; then `python -m cluster.evaluate --checkpoint "
             f"RUN_DIR --episodes {report['eval_episodes']} --seed {report['eval_seed']} --baseline pid` (`pid base` for a "
             "residual run: its base controller alone, with a zero correction).", "",
             "| arm | runs | env steps | learner updates/s | abs speed error (m/s) | return / episode | gain vs none "
             "(paired) | abs jerk (m/s^3) | abs action change | base controller alone: error / return |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, e in table.items():
        failed = f" ({e['failed']} failed)" if e["failed"] else ""
        gain = e["speed_error_gain_vs_none"]
        gain_text = f"{100 * gain['mean']:.1f} ± {100 * gain['std']:.1f} %" if gain else "-"
        lines.append(f"| {arm} | {e['mean_return']['n']}{failed} | {pm(e['env_steps'], 4)} | "
                     f"{pm(e['updates_per_second'])} | {pm(e['mean_abs_speed_error'])} | {pm(e['mean_return'])} | "
                     f"{gain_text} | {pm(e['mean_abs_jerk'])} | {pm(e['mean_abs_action_change'])} | "
                     f"{base_text(e.get('base_alone'))} |")  # fmt: skip
    lines.append(f"| PID | - | - | - | {fmt(pid['mean_abs_speed_error'])} | {fmt(pid['mean_return'])} | - | "
                 f"{fmt(pid['mean_abs_jerk'])} | {fmt(pid['mean_abs_action_change'])} | - |")  # fmt: skip
    lines += ["", "Mean ± sample std over seeds; gain = relative reduction of the held-out abs speed error against the "
              "`none` arm of the same seed.", ""]  # fmt: skip
    if f:
        lines.append(f"Floors: best arm `{f['best_arm']}` return {100 * f['best_return_gain_vs_pid']:+.1f} % against "
                     f"PID (floor +10 %), abs speed error {f['best_error_vs_pid']:+.3f} m/s against PID (floor <= 0)"
                     + "".join(oracle_lines(f)) + "."
                     + (f" Best non-residual arm `{f['best_direct_arm']}`: return "
                        f"{100 * f['best_direct_return_gain_vs_pid']:+.1f} % against PID, abs speed error "
                        f"{f['best_direct_error_vs_pid']:+.3f} m/s." if "best_direct_arm" in f else ""))  # fmt: skip
    lines += ["", "Runs:", "", "| arm | seed | env steps | updates | segments | train s | learner updates/s | NaN blocks "
              "| rollbacks | abs speed error | return |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["runs"]:
        if "error" in r:
            lines.append(f"| {r['arm']} | {r['seed']} | failed: {r['error'][:160]} |" + " |" * 8)
            continue
        c = r["counters"]
        lines.append(f"| {r['arm']} | {r['seed']} | {count(r['env_steps'])} | {count(r['updates'])} | {r['segments']} | "
                     f"{r['train_wall_s']:.0f} | {fmt(r['mean_updates_per_second'])} | {c.get('nan_blocks', 0)} | "
                     f"{c.get('rollbacks', 0)} | {fmt(r['eval']['mean_abs_speed_error'])} | "
                     f"{fmt(r['eval']['mean_return'])} |")  # fmt: skip
    if report.get("plot"):
        lines += ["", f"Learning curves (recent training return per episode) and held-out errors: `{report['plot']}`."]
    return "\n".join(lines + [""])


def curve_band(rows: list[dict], points: int = 40) -> dict:
    """Mean ± std over runs of the training return, each run's curve read at common env-step marks."""
    curves = [r["curve"] for r in rows if r.get("curve")]
    if not curves:
        return {"x": [], "y": [], "lo": [], "hi": []}
    end = min(c[-1][0] for c in curves)
    start = max(c[0][0] for c in curves)
    marks = [start + (end - start) * i / (points - 1) for i in range(points)] if end > start else [end]
    values = [[next(point[1] for point in reversed(c) if point[0] <= mark) for c in curves] for mark in marks]
    means = [statistics.fmean(v) for v in values]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
    return {"x": marks, "y": means, "lo": [m - s for m, s in zip(means, stds, strict=True)],
            "hi": [m + s for m, s in zip(means, stds, strict=True)]}  # fmt: skip


def settled(curve: dict, skip: float = 0.2) -> list[float]:
    """A curve's means past its first ``skip`` of env steps (a diverging start would flatten every curve)."""
    x = curve["x"]
    return [y for xi, y in zip(x, curve["y"], strict=True) if xi >= x[0] + skip * (x[-1] - x[0])]


def return_range(curves: list[dict], pid_return: float, reach: float = 4.0) -> tuple[tuple[float, float], list[str]]:
    """The y range of the return panel: the PID line and the settled mean of every arm that stays above ``reach`` x
    the PID's return, with a margin (bands may leave it); the arms below that are named (off the panel)."""
    shown = [c for c in curves if c["x"] and min(settled(c)) >= reach * min(pid_return, -1.0)]
    values = [pid_return] + [v for c in shown for v in settled(c)]
    low, high = min(values), max(values)
    margin = 0.05 * (high - low) or 1.0
    return (low - margin, high + margin), [c["label"] for c in curves if c not in shown]


def plot(report: dict, path: Path) -> Path | None:
    ok = [r for r in report["runs"] if "error" not in r]
    arms = [arm for arm in report["arms"] if any(r["arm"] == arm for r in ok)]
    curves = [{"label": arm, **curve_band([r for r in ok if r["arm"] == arm])} for arm in arms]
    points = [{"label": arm, "marker": True, "x": [i] * sum(r["arm"] == arm for r in ok),
               "y": [r["eval"]["mean_abs_speed_error"] for r in ok if r["arm"] == arm]} for i, arm in enumerate(arms)]  # fmt: skip
    ylim, off_scale = return_range(curves, report["pid"]["mean_return"])
    title = "training: recent return per episode (mean ± std over seeds)"
    panels = [
        {"title": title + (f"\n{', '.join(off_scale)}: below the panel, see the table" if off_scale else ""),
         "ylabel": "return", "xlabel": "env steps", "yscale": "linear", "series": curves, "ylim": ylim,
         "hlines": [(report["pid"]["mean_return"], "PID (held-out)")]},
        {"title": "held-out: mean abs speed error per seed", "ylabel": "m/s", "series": points, "xlabel": "arm",
         "xticks": list(enumerate(arms)), "hlines": [(report["pid"]["mean_abs_speed_error"], "PID")]},
    ]  # fmt: skip
    return save_panels(path, panels, f"Context study ({report['steps']:,} env steps per run)")


def render(report: dict, out: Path, name: str) -> None:
    written = plot(report, out / f"{name}.png")
    report["plot"] = written.name if written else None
    path = write_report(out, name, report, markdown(report))
    print(markdown(report))
    print(f"wrote {name}.json, {path.name}{', ' + written.name if written else ''} in {out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
        render(report, args.render.parent, args.render.stem)
        return 0
    runs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    started = time.time()
    if not args.score_only:
        train_all(args, runs)
    unfinished = [run_name(*run) for run in runs if not finished(args.work / "runs" / run_name(*run), args.steps)]
    if args.no_score or (unfinished and not (args.score_now or args.score_only)):
        print(f"not scored: {len(unfinished)} run(s) short of {args.steps:,} env steps ({', '.join(unfinished)}); "
              "call again with the same --work to continue them, or --score-now", flush=True)  # fmt: skip
        return 0
    rows = score_all(args, runs)
    ok = [r for r in rows if "error" not in r]
    if not ok:
        print("\n".join(f"{r['arm']} seed {r['seed']}: {r['error']}" for r in rows), file=sys.stderr)
        return 1
    table = aggregate(rows, args.arms)
    report = {
        "benchmark": args.name, "command": command_line(), "machine": machine(), "config": args.config,
        "hparams": args.hparams, "overrides": args.overrides, "arms": args.arms, "seeds": args.seeds,
        "steps": args.steps, "gpu_fraction": args.gpu_fraction, "eval_episodes": args.eval_episodes,
        "eval_seed": args.eval_seed, "one_job": args.one_job, "run_overrides": [
            o for o in (one_job_overrides(args, runs, Path("JOB_DIR")) if args.one_job else
                        run_overrides(args, "none", 0, Path("RUN_DIR")))
            if not o.startswith(("context.", "train.seed", "train.run_overrides"))],
        "pid": ok[0]["pid"], "aggregate": table, "floors": floors(table, ok[0]["pid"]), "runs": rows,
        "wall_s": time.time() - started,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    render(report, args.out, args.name)
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
