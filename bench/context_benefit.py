"""Does the dynamics-map context help SAC on the vehicle task? No context vs pooled vs CNN encoder, same budget.

    python bench/context_benefit.py [--arms none oracle pooled cnn] [--hparams seed|tuned] [--seeds 0 1 2] [--steps 60000]
                                    [--workers 9] [--max-wall 420] [--eval-episodes 32] [--set KEY=VALUE ...]

Arms (everything else equal: same seeds, env-step budget, networks, batch, UTD,
warm-up, learner settings):

- ``none``: ``context.mode=none`` (observation only, 34 inputs);
- ``oracle``: ``context.mode=oracle``, the vehicle's true parameters normalized (34 + 17 inputs): what any
  context could give at best;
- ``pooled``: ``context.mode=dynamics_map``, ``context.encoder=pooled`` (34 + 32 inputs);
- ``cnn``: ``context.mode=dynamics_map``, ``context.encoder=cnn``,
  ``context.encoder_checkpoint=configs/encoders/cnn_encoder.pt`` (frozen, pretrained).

``--set env.vehicle.action=residual_pid`` runs every arm as a residual policy on top of the PID
(``actors/vehicle/residual.py``); the PID column stays the PID alone.

``--hparams seed`` keeps ``configs/vehicle.yaml`` (lr 3e-5, tau 0.005, clip 5,
reward scale 0.001, gamma 0.95, warm-up 10 000); ``--hparams tuned`` changes only
the learning rate to 3e-4 (the usual SAC rate; the seed's 3e-5 was its cure for
a NaN, not a tuned value). Each run trains in its own process (one torch thread,
``cluster.mode=local`` loop: one worker of 16 vehicles and the learner, on the
GPU when there is one); ``--workers`` runs go at once. ``--max-wall`` bounds
the whole benchmark: training stops where it has reached by then (reported per
run) and leaves time for the evaluation.

Each final policy is evaluated deterministically (mean action) with the same
context provider type it was trained with (``cluster.factory.make_env_and_context``
for the evaluation env), by ``actors.vehicle.evaluation.evaluate_policy``, on
``--eval-episodes`` held-out vehicles: one episode each, env seed ``--eval-seed``
(not a training actor's seed, not the prior's, not the encoder's pretraining
vehicles). The PID baseline (``cluster.evaluate`` ``pid``) drives the same vehicles.
Reported per arm, mean +- sample std over seeds: mean |speed error|, return per
episode, comfort (mean |jerk|, mean |u_t - u_t-1|), the last training fragments'
reward per step; NaN blocks and rollbacks per run; learning curves (unscaled
reward per step per fragment, mean +- std over seeds) in the PNG.
Writes ``context_benefit.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import concurrent.futures as cf  # noqa: E402
import logging  # noqa: E402
import multiprocessing as mp  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import ROOT, command_line, fmt, machine, machine_line, write_report  # noqa: E402
from bench.inprocess import hyperparameters, plumbing_overrides  # noqa: E402
from bench.plots import save_panels  # noqa: E402

CNN_CHECKPOINT = ROOT / "configs" / "encoders" / "cnn_encoder.pt"
ARMS = ("none", "oracle", "pooled", "basis", "cnn", "history", "privileged", "direct", "oracle_ff", "basis_ff",
        "oracle_ff_history", "basis_ff_history")  # fmt: skip
FEED_FORWARD_RESIDUAL_SCALE = 0.1
"""The ``*_ff`` arms' ``env.vehicle.residual_scale``: at 0.5 SAC's corrections made the map controller worse (study
``context_study_ff_scale05``)."""
DIRECT_ARMS = ("direct",)
"""Arms whose policy drives the vehicle itself (``env.vehicle.action=direct``) whatever the shared overrides say."""
HPARAMS = {"seed": [], "tuned": ["learner.lr=3e-4"]}
"""``--hparams`` name → overrides on top of ``configs/vehicle.yaml``."""
EVAL_SEED = 7_770_001  # cluster.evaluate.HELD_OUT_SEED
EVAL_METRICS = ("mean_abs_speed_error", "mean_return", "mean_abs_jerk", "mean_abs_action_change")
EVAL_RESERVE_S = 40.0
"""Seconds left at the end of ``--max-wall`` for the evaluation and the report."""
CURVE_KEYS = ("env_steps", "updates", "wall_s", "reward_per_step", "q_mean", "q_std", "alpha", "policy_grad_norm",
              "q_grad_norm", "nan_blocks", "rollbacks", "random_actions")  # fmt: skip


def arm_overrides(arm: str, cnn_checkpoint: Path) -> list[str]:
    if arm in ("none", "oracle", "history"):
        return [f"context.mode={arm}"]
    if arm == "privileged":  # the pooled map for the policy, the true parameters for the critics too
        return ["context.mode=dynamics_map", "context.encoder=pooled", "context.privileged_critic=true"]
    if arm == "direct":  # the pooled map, the policy's action is the command (the non-residual peer)
        return ["context.mode=dynamics_map", "context.encoder=pooled", "env.vehicle.action=direct"]
    if arm == "basis":  # the map fitted on the population's components, its coordinates as the context
        return ["context.mode=dynamics_map", "context.reconstruction=basis", "context.encoder=basis"]
    if arm.endswith("_history"):  # the arm, with the last samples appended to its context
        return arm_overrides(arm.removesuffix("_history"), cnn_checkpoint) + ["context.append_history=true"]
    if arm.endswith("_ff"):  # the arm's context, and a small residual on the map controller inverting the map it knows
        return arm_overrides(arm.removesuffix("_ff"), cnn_checkpoint) + [
            "env.vehicle.action=residual_map", f"env.vehicle.residual_scale={FEED_FORWARD_RESIDUAL_SCALE}"]
    sets = ["context.mode=dynamics_map", f"context.encoder={arm}"]
    return sets + ([f"context.encoder_checkpoint={cnn_checkpoint}"] if arm == "cnn" else [])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "vehicle.yaml"))
    parser.add_argument("--arms", nargs="+", default=["none", "oracle", "pooled", "cnn"], choices=ARMS)
    parser.add_argument("--hparams", default="seed", choices=sorted(HPARAMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60_000, help="environment steps per run")
    parser.add_argument("--workers", type=int, default=0, help="runs at once (default: all runs, at most the CPUs)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"], help="learner device of every run")
    parser.add_argument("--max-wall", type=float, default=420.0, help="wall-clock seconds for the whole benchmark")
    parser.add_argument("--eval-episodes", type=int, default=32, help="held-out vehicles (one episode each)")
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED, help="env seed of the held-out vehicles")
    parser.add_argument("--cnn-checkpoint", type=Path, default=CNN_CHECKPOINT)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run (repeatable); reported")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--log-every", type=float, default=60.0, help="seconds between a run's progress lines")
    return parser.parse_args(argv)


def check_eval_seed(config, seeds: list[int], eval_seed: int) -> None:
    """The held-out vehicles' seed must be no training actor's seed of any run, nor the prior's, nor the encoder's."""
    import dataclasses

    from cluster.evaluate import check_held_out

    for seed in seeds:
        try:
            check_held_out(dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed)), eval_seed)
        except ValueError as err:
            raise SystemExit(str(err)) from None


# -- one run, in its own process ----------------------------------------------------------------------


def run_job(job: dict) -> dict:
    """Train one (arm, seed), evaluate its final policy; never raises (an error is returned)."""
    import torch

    from bench.inprocess import evaluate_sac, train
    from cluster.config import load_config

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("dmsac").setLevel(logging.WARNING)
    label = f"[{job['arm']} seed {job['seed']}]"
    out = {"arm": job["arm"], "seed": job["seed"]}
    if time.time() >= job["deadline"]:
        out["error"] = "not started: the wall budget was spent before this run's turn (use --workers >= runs)"
        return out
    try:
        with tempfile.TemporaryDirectory(prefix="dmsac-ctx-") as run_dir:
            plumbing = plumbing_overrides(run_dir, job["steps"], job["device"]) + [f"train.seed={job['seed']}"]
            config = load_config(job["config"], plumbing + job["overrides"])
            result = train(config, job["deadline"], label=label, log_every=job["log_every"])
        if not result.rows:
            out["error"] = f"no fragment trained before the wall budget ran out (stopped: {result.summary['stopped']})"
            return out
        started = time.monotonic()
        out["eval"] = evaluate_sac(config, result.weights, job["eval_episodes"], job["eval_seed"])
        out["eval"]["seconds"] = time.monotonic() - started
        out.update(hyperparameters=hyperparameters(config), summary=result.summary, episodes=result.episodes,
                   curve=[{k: r.get(k) for k in CURVE_KEYS} for r in result.rows])  # fmt: skip
        logging.getLogger("bench").info("%s eval: %s", label, out["eval"])
    except Exception:  # noqa: BLE001 - one broken run must not lose the others
        out["error"] = traceback.format_exc(limit=6)
    return out


def run_all(jobs: list[dict], workers: int, meanwhile) -> tuple[list[dict], object]:
    """Run the jobs ``workers`` at a time; ``meanwhile()`` runs here while they train. Returns (runs, its result)."""
    results = []
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        extra = meanwhile()
        for future in cf.as_completed(futures):
            row = future.result()
            results.append(row)
            brief = row.get("error", "").strip().splitlines()[-1:] or [
                f"env_steps={row['summary']['env_steps']:,} |err|={row['eval']['mean_abs_speed_error']:.3f} m/s "
                f"return={row['eval']['mean_return']:.4g} nan_blocks={row['summary']['counters'].get('nan_blocks')} "
                f"rollbacks={row['summary']['counters'].get('rollbacks')}"
            ]  # fmt: skip
            print(f"done {row['arm']} seed {row['seed']}: {brief[0]}", flush=True)
    return sorted(results, key=lambda r: (ARMS.index(r["arm"]), r["seed"])), extra


# -- aggregation and report ---------------------------------------------------------------------------


def mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def final_reward(curve: list[dict], last: int = 5) -> float | None:
    tail = [r["reward_per_step"] for r in curve if not r["random_actions"]][-last:]
    return statistics.fmean(tail) if tail else None


def aggregate(runs: list[dict], arms: list[str]) -> dict:
    ok = [r for r in runs if "error" not in r]
    none_err = {r["seed"]: r["eval"]["mean_abs_speed_error"] for r in ok if r["arm"] == "none"}
    table = {}
    for arm in arms:
        mine = [r for r in ok if r["arm"] == arm]
        row = {m: mean_std([r["eval"][m] for r in mine]) for m in EVAL_METRICS}
        row["train_reward_per_step"] = mean_std([final_reward(r["curve"]) for r in mine])
        row["env_steps_min"] = min((r["summary"]["env_steps"] for r in mine), default=0)
        row["nan_blocks"] = sum(r["summary"]["counters"].get("nan_blocks", 0) for r in mine)
        row["rollbacks"] = sum(r["summary"]["counters"].get("rollbacks", 0) for r in mine)
        row["runs"], row["failed"] = len(mine), sum(1 for r in runs if r["arm"] == arm and "error" in r)
        paired = [r["eval"]["mean_abs_speed_error"] - none_err[r["seed"]] for r in mine if r["seed"] in none_err]
        row["speed_error_minus_none"] = mean_std(paired) if arm != "none" and paired else None
        table[arm] = row
    return table


def pm(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    return f"{fmt(stat['mean'], digits)} ± {fmt(stat['std'], 2)}"


def header_lines(report: dict) -> list[str]:
    hp, sets = report["hyperparameters"], ", ".join(HPARAMS[report["hparams"]]) or "configs/vehicle.yaml as is"
    return [
        "# Context benefit: SAC on the vehicle task without context, with the pooled and with the CNN encoder", "",
        f"{machine_line(report['machine'])}.  ",
        f"Command: `{report['command']}`", "",
        f"Hyperparameters `{report['hparams']}` ({sets}): lr {hp['lr']:g}, tau {hp['tau']:g}, gamma {hp['gamma']:g}, "
        f"clip {hp['max_grad_norm']:g}, reward scale {hp['reward_scale']:g}, batch {hp['batch_size']}, hidden "
        f"{hp['hidden_sizes']}, warm-up {hp['warmup_steps']:,}, UTD {hp['update_to_data']:g}, {hp['num_envs']} envs, "
        f"fast path {hp['fast_path']}; {report['steps']:,} env steps per run, seeds {report['seeds']}, "
        f"{report['workers']} runs at once.  ",
        "Extra overrides: " + (", ".join(f"`{o}`" for o in report["overrides"]) or "none") + ".  ",
        f"Evaluation: deterministic policy, {report['eval_episodes']} held-out vehicles (one "
        f"{report['episode_steps']:,}-step episode each, env seed {report['eval_seed']}), the same vehicles for every "
        "run and for PID.", "",
    ]  # fmt: skip


def arm_lines(report: dict) -> list[str]:
    a, pid = report["aggregate"], report["pid"]
    lines = ["| arm | runs | env steps (min) | abs speed error (m/s) | return / episode | abs jerk (m/s^3) | "
             "abs action change | train reward/step (last 5 fragments) | NaN blocks | rollbacks |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, row in a.items():
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(f"| {arm} | {row['runs']}{failed} | {row['env_steps_min']:,} | {pm(row['mean_abs_speed_error'])} | "
                     f"{pm(row['mean_return'])} | {pm(row['mean_abs_jerk'])} | {pm(row['mean_abs_action_change'])} | "
                     f"{pm(row['train_reward_per_step'])} | {row['nan_blocks']} | {row['rollbacks']} |")  # fmt: skip
    lines.append(f"| PID baseline | - | - | {fmt(pid['mean_abs_speed_error'])} | {fmt(pid['mean_return'])} | "
                 f"{fmt(pid['mean_abs_jerk'])} | {fmt(pid['mean_abs_action_change'])} | - | - | - |")  # fmt: skip
    paired = ", ".join(f"{arm} {pm(row['speed_error_minus_none'])} m/s" for arm, row in a.items()
                       if row["speed_error_minus_none"])  # fmt: skip
    lines += ["", "Mean ± sample std over seeds."]
    if paired:
        lines[-1] += f" Paired by seed, abs speed error minus the `none` arm's: {paired} (negative: the context helps)."
    return lines + [""]


def run_lines(report: dict) -> list[str]:
    lines = ["Runs:", "", "| arm | seed | env steps | updates | train s | stopped | NaN blocks | rollbacks | "
             "max abs Q mean | alpha | abs speed error | return | abs jerk | abs action change |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["runs"]:
        if "error" in r:
            lines.append(
                f"| {r['arm']} | {r['seed']} | failed: {r['error'].strip().splitlines()[-1][:120]} |" + " |" * 11
            )
            continue
        s, e, c = r["summary"], r["eval"], r["summary"]["counters"]
        lines.append(f"| {r['arm']} | {r['seed']} | {s['env_steps']:,} | {s['updates']:,} | {s['wall_s']:.0f} | "
                     f"{s['stopped'][:40]} | {c.get('nan_blocks', 0)} | {c.get('rollbacks', 0)} | "
                     f"{fmt(s['max_abs_q_mean'])} | {fmt(s['last_stats'].get('alpha'))} | {fmt(e['mean_abs_speed_error'])} | "
                     f"{fmt(e['mean_return'])} | {fmt(e['mean_abs_jerk'])} | {fmt(e['mean_abs_action_change'])} |")  # fmt: skip
    short = [r for r in report["runs"] if "error" not in r and r["summary"]["env_steps"] < report["steps"]]
    if short:
        lines += ["", f"**Note**: {len(short)} run(s) stopped before {report['steps']:,} env steps (wall budget); "
                  "arms are comparable only up to the smallest env-step count above."]  # fmt: skip
    return lines


def markdown(report: dict) -> str:
    lines = header_lines(report) + arm_lines(report) + run_lines(report)
    if report.get("plot"):
        lines += ["", f"Learning curves and held-out errors: `{report['plot']}`."]
    return "\n".join(lines + [""])


def curve_band(runs: list[dict], key: str, smooth: int = 3) -> tuple[list, list, list, list]:
    """Mean and mean +- std over runs on the common env-step prefix, moving-averaged over ``smooth`` fragments."""
    curves = [[r for r in run["curve"] if r.get(key) is not None] for run in runs]
    length = min((len(c) for c in curves), default=0)
    if not length:
        return [], [], [], []
    xs, means, stds = [], [], []
    for i in range(length):
        window = [c[j][key] for c in curves for j in range(max(0, i - smooth + 1), i + 1)]
        per_run = [statistics.fmean(c[j][key] for j in range(max(0, i - smooth + 1), i + 1)) for c in curves]
        xs.append(curves[0][i]["env_steps"])
        means.append(statistics.fmean(window))
        stds.append(statistics.stdev(per_run) if len(per_run) > 1 else 0.0)
    return (
        xs,
        means,
        [m - s for m, s in zip(means, stds, strict=True)],
        [m + s for m, s in zip(means, stds, strict=True)],
    )


def plot(report: dict, path: Path) -> Path | None:
    ok = [r for r in report["runs"] if "error" not in r]
    arms = [arm for arm in report["arms"] if any(r["arm"] == arm for r in ok)]
    panels = []
    for key, title, scale in (("reward_per_step", "training: unscaled reward per step (3-fragment mean)", "symlog"),
                              ("q_mean", "training: Q mean (scaled units)", "linear"),
                              ("alpha", "training: alpha", "log")):  # fmt: skip
        series = []
        for arm in arms:
            x, m, lo, hi = curve_band([r for r in ok if r["arm"] == arm], key)
            series.append({"label": arm, "x": x, "y": m, "lo": lo, "hi": hi})
        panels.append({"title": title, "ylabel": key, "yscale": scale, "series": series})
    points = [{"label": arm, "marker": True, "x": [i] * sum(r["arm"] == arm for r in ok),
               "y": [r["eval"]["mean_abs_speed_error"] for r in ok if r["arm"] == arm]} for i, arm in enumerate(arms)]  # fmt: skip
    panels.append({"title": "held-out: mean abs speed error per seed", "ylabel": "m/s", "series": points,
                   "xlabel": "arm", "xticks": list(enumerate(arms)),
                   "hlines": [(report["pid"]["mean_abs_speed_error"], "PID")]})  # fmt: skip
    return save_panels(
        path, panels, f"Context benefit ({report['hparams']} hyperparameters, {report['steps']:,} env steps)"
    )


def make_jobs(args: argparse.Namespace, deadline: float) -> list[dict]:
    """One job per (seed, arm), seeds outermost so that every arm progresses alike when runs queue."""
    common = {"config": args.config, "steps": args.steps, "device": args.device, "deadline": deadline,
              "eval_episodes": args.eval_episodes, "eval_seed": args.eval_seed, "log_every": args.log_every}  # fmt: skip
    return [
        {**common, "arm": arm, "seed": seed,
         "overrides": HPARAMS[args.hparams] + args.overrides + arm_overrides(arm, args.cnn_checkpoint.resolve())}
        for seed in args.seeds for arm in args.arms
    ]  # fmt: skip


def print_summary(report: dict, written: Path | None, out: Path) -> None:
    for arm, row in report["aggregate"].items():
        print(f"{arm:>6}: |speed error| {pm(row['mean_abs_speed_error'])} m/s, return {pm(row['mean_return'])}, "
              f"jerk {pm(row['mean_abs_jerk'])}, du {pm(row['mean_abs_action_change'])}, "
              f"nan_blocks {row['nan_blocks']}, rollbacks {row['rollbacks']}, env steps >= {row['env_steps_min']:,}")  # fmt: skip
    pid = report["pid"]
    print(f"   PID: |speed error| {fmt(pid['mean_abs_speed_error'])} m/s, return {fmt(pid['mean_return'])}")
    print(
        f"wrote context_benefit.json, .md{', ' + written.name if written else ''} in {out} ({report['wall_s']:.0f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from bench.inprocess import evaluate_pid
    from cluster.config import load_config

    started = time.time()
    base = load_config(args.config, HPARAMS[args.hparams] + args.overrides)
    check_eval_seed(base, args.seeds, args.eval_seed)
    if "cnn" in args.arms and not args.cnn_checkpoint.exists():
        raise SystemExit(f"cnn arm: no encoder checkpoint at {args.cnn_checkpoint}")
    jobs = make_jobs(args, started + args.max_wall - EVAL_RESERVE_S)
    workers = args.workers or min(len(jobs), os.cpu_count() or 1)
    print(f"{len(jobs)} runs ({args.arms} x seeds {args.seeds}), {workers} at once, {args.steps:,} env steps each, "
          f"training until {args.max_wall - EVAL_RESERVE_S:.0f} s at most", flush=True)  # fmt: skip
    runs, pid = run_all(jobs, workers, lambda: evaluate_pid(base, args.eval_episodes, args.eval_seed))
    ok = [r for r in runs if "error" not in r]
    report = {
        "benchmark": "context_benefit", "command": command_line(), "machine": machine(), "config": str(args.config),
        "hparams": args.hparams, "overrides": args.overrides, "arms": args.arms, "seeds": args.seeds,
        "steps": args.steps, "workers": workers, "episode_steps": base.env.vehicle.episode_steps,
        "eval_episodes": args.eval_episodes, "eval_seed": args.eval_seed,
        "hyperparameters": ok[0]["hyperparameters"] if ok else hyperparameters(base), "pid": pid,
        "aggregate": aggregate(runs, args.arms), "runs": runs, "wall_s": time.time() - started,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    written = plot(report, args.out / "context_benefit.png")
    report["plot"] = written.name if written else None
    write_report(args.out, "context_benefit", report, markdown(report))
    print_summary(report, written, args.out)
    return 0 if len(ok) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
