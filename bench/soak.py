"""Soak on the vehicle environment with the seed's settings: no rollback, Q statistics bounded.

    python bench/soak.py [--steps 60000] [--device auto] [--max-wall 450] [--set KEY=VALUE ...] [--out bench/results]

Trains SAC in-process (``cluster.mode=local``: one rollout worker of 16
vehicles and the learner; the loop of ``cluster.local.run_local``) on
``configs/vehicle.yaml`` as it is: lr 3e-5, tau 0.005, global-norm clip 5,
reward scale 0.001, gamma 0.95, learned temperature, 10 000 random warm-up
steps, dynamics-map context with the pooled encoder. Unscaled returns are in
the millions (negative) early. Over at least 50 000 environment steps it
records, per fragment of 2 048 steps: updates, Q mean/std (scaled units),
pre-clip policy and Q gradient norms, alpha, the fragment's mean unscaled
reward per step, finished episodes' returns, nan_blocks and rollbacks; and
run-wide the largest |Q mean| and Q std against the alert thresholds
(``safety.warnings.q_mean_abs_max`` 10 000, ``safety.warnings.q_std_max`` 5 000).
Verdict: PASS when >= 50 000 env steps ran with no non-finite block, no
rollback and both Q extremes under their thresholds.

Overrides the script adds are placement only (in-process, a temporary run
directory, metrics endpoint not started and set to port 0 on 127.0.0.1, no
regular checkpoint); ``--set`` overrides are listed in the report, and any
setting that differs from the seed's is named there.
Writes ``soak.json``, ``soak.md`` and ``soak.png``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import ROOT, command_line, fmt, machine, machine_line, write_report  # noqa: E402
from bench.inprocess import hyperparameters, plumbing_overrides, train  # noqa: E402
from bench.plots import save_panels  # noqa: E402

MIN_STEPS = 50_000
SEED_SETTINGS = {"lr": 3e-5, "tau": 0.005, "max_grad_norm": 5.0, "reward_scale": 0.001, "warmup_steps": 10_000,
                 "context_mode": "dynamics_map"}  # fmt: skip
"""The seed's fixes for the NaN-at-step-10000 incident, and the settings the soak is about."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "vehicle.yaml"))
    parser.add_argument("--steps", type=int, default=60_000, help="environment steps (default 60000; >= 50000 to pass)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"], help="learner device")
    parser.add_argument("--seed", type=int, default=0, help="train.seed")
    parser.add_argument("--max-wall", type=float, default=450.0, help="wall-clock seconds of training before it stops")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (rollout policy, CPU learner)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override (repeatable); reported")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--log-every", type=float, default=30.0, help="seconds between progress lines")
    return parser.parse_args(argv)


def deviations(params: dict) -> list[str]:
    return [f"{k}={params[k]} (seed: {v})" for k, v in SEED_SETTINGS.items() if params[k] != v]


def verdict(summary: dict, thresholds: dict) -> tuple[str, list[str]]:
    reasons = []
    if summary["env_steps"] < MIN_STEPS:
        reasons.append(f"only {summary['env_steps']:,} env steps (< {MIN_STEPS:,}; stopped: {summary['stopped']})")
    counters = summary["counters"]
    if counters.get("nan_blocks", 0) or summary["nonfinite"]:
        reasons.append(f"{counters.get('nan_blocks', 0)} non-finite blocks")
    if counters.get("rollbacks", 0):
        reasons.append(f"{counters['rollbacks']} rollbacks")
    for key, limit in (("max_abs_q_mean", thresholds["q_mean_abs_max"]), ("max_q_std", thresholds["q_std_max"])):
        if not summary[key] < limit:  # NaN fails too
            reasons.append(f"{key} {summary[key]:.4g} >= {limit:g}")
    return ("PASS" if not reasons else "FAIL"), reasons


def episode_waves(episodes: list[dict]) -> list[dict]:
    """Episodes grouped by the fragment they finished in (16 vehicles finish together every 32 768 steps)."""
    waves: dict[int, list[dict]] = {}
    for e in episodes:
        waves.setdefault(e["env_steps"], []).append(e)
    out = []
    for step, group in sorted(waves.items()):
        returns = [e["return"] for e in group]
        out.append({"env_steps": step, "episodes": len(group), "mean_return": sum(returns) / len(returns),
                    "min_return": min(returns), "max_return": max(returns),
                    "mean_abs_speed_error": sum(e["mean_abs_speed_error"] for e in group) / len(group)})  # fmt: skip
    return out


def pick_rows(rows: list[dict], count: int = 16) -> list[dict]:
    if len(rows) <= count:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (count - 1)) for i in range(count)})
    return [rows[i] for i in idx]


def header_lines(report: dict) -> list[str]:
    s, p = report["summary"], report["hyperparameters"]
    passed = f": {s['env_steps']:,} env steps, no non-finite block, no rollback, Q extremes under the alert thresholds."
    return [
        "# Soak: SAC on the vehicle environment with the seed's settings", "",
        f"{machine_line(report['machine'])}.  ",
        f"Command: `{report['command']}`", "",
        f"**{report['verdict']}**" + (f": {'; '.join(report['reasons'])}" if report["reasons"] else passed), "",
        f"Settings in force: lr {p['lr']:g}, tau {p['tau']:g}, gamma {p['gamma']:g}, clip {p['max_grad_norm']:g}, "
        f"reward scale {p['reward_scale']:g}, batch {p['batch_size']}, hidden {p['hidden_sizes']}, "
        f"{p['temperature']} temperature from {p['initial_alpha']:g}, warm-up {p['warmup_steps']:,}, "
        f"UTD {p['update_to_data']:g}, replay {p['replay_capacity']:,}, {p['num_envs']} envs x "
        f"{p['steps_per_fragment']} steps per fragment, context {p['context_mode']} ({p['encoder']}), "
        f"on NaN: {p['on_nan']}, fast path {p['fast_path']}.  ",
        "Differs from the seed: " + (", ".join(report["deviations"]) or "nothing") + ".  ",
        "Extra overrides: " + (", ".join(f"`{o}`" for o in report["overrides"]["extra"]) or "none") + "; placement "
        "overrides: " + ", ".join(f"`{o}`" for o in report["overrides"]["plumbing"]) + ".", "",
    ]  # fmt: skip


def figure_lines(report: dict) -> list[str]:
    s, p, t = report["summary"], report["hyperparameters"], report["thresholds"]
    c = s["counters"]
    return [
        "| figure | value |", "|---|---|",
        f"| env steps / updates | {s['env_steps']:,} / {s['updates']:,} (stopped: {s['stopped']}) |",
        f"| wall s (rollout s + learner s) | {s['wall_s']:.1f} ({s['rollout_s']:.1f} + {s['learn_s']:.1f}) |",
        f"| env steps/s; updates/s inside the learner | {s['env_steps_per_s']:.0f}; {s['updates_per_s_in_learner']:.0f} |",
        f"| nan_blocks / rollbacks / weights rejected | {c.get('nan_blocks', 0)} / {c.get('rollbacks', 0)} / "
        f"{c.get('weights_rejected', 0)} |",
        f"| remedies applied; reward scale, lr at the end | {s['remedies']}; {s['reward_scale_final']:g}, {s['lr_final']:g} |",
        f"| max abs Q mean (threshold {t['q_mean_abs_max']:g}) | {fmt(s['max_abs_q_mean'], 4)} |",
        f"| max Q std (threshold {t['q_std_max']:g}) | {fmt(s['max_q_std'], 4)} |",
        f"| reward-only bound on abs Q: clip x scale / (1 - gamma) | {t['q_reward_bound']:g} |",
        f"| max pre-clip grad norm, policy / Q (clip {p['max_grad_norm']:g}) | {fmt(s['max_policy_grad_norm'])} / "
        f"{fmt(s['max_q_grad_norm'])} |",
        f"| updates clipped, policy / Q | {s['policy_clip_fraction']:.1%} / {s['q_clip_fraction']:.1%} |",
        f"| alpha at the end | {fmt(s['last_stats'].get('alpha'))} |",
        f"| context fallbacks / rejected transitions | {s['context_fallbacks']} / {s['rejected']} |", "",
    ]  # fmt: skip


def episode_lines(report: dict) -> list[str]:
    n = report["hyperparameters"]["num_envs"]
    lines = [f"Episodes (unscaled returns; the {n} vehicles finish together every {n} x "
             f"{report['episode_steps']:,} env steps):", "",
             "| finished at env step | episodes | mean return | min | max | mean abs speed error (m/s) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for w in report["episode_waves"]:
        lines.append(f"| {w['env_steps']:,} | {w['episodes']} | {fmt(w['mean_return'])} | {fmt(w['min_return'])} | "
                     f"{fmt(w['max_return'])} | {w['mean_abs_speed_error']:.2f} |")  # fmt: skip
    return lines + (["| none finished | | | | | |"] if not report["episode_waves"] else []) + [""]


def trace_lines(report: dict) -> list[str]:
    lines = ["Trace (per fragment; Q in scaled units; gradient norms before clipping):", "",
             "| env steps | updates | reward/step | Q mean | Q std | max Q std | policy grad | Q grad | alpha | nan | rollbacks |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in pick_rows(report["trace"]):
        head = f"| {r['env_steps']:,} | {r['updates']:,} | {fmt(r['reward_per_step'])} |"
        tail = f" {r['nan_blocks']} | {r['rollbacks']} |"
        if not r.get("blocks"):
            lines.append(head + " (warm-up) | | | | | |" + tail)
            continue
        lines.append(head + f" {fmt(r['q_mean'])} | {fmt(r['q_std'])} | {fmt(r['q_std_max'])} | "
                     f"{fmt(r['policy_grad_norm'])} | {fmt(r['q_grad_norm'])} | {fmt(r['alpha'])} |" + tail)  # fmt: skip
    return lines


def markdown(report: dict) -> str:
    lines = header_lines(report) + figure_lines(report) + episode_lines(report) + trace_lines(report)
    if report.get("plot"):
        lines += ["", f"Plot: `{report['plot']}`."]
    return "\n".join(lines + [""])


def plot(report: dict, path: Path) -> Path | None:
    rows = [r for r in report["trace"] if r.get("blocks")]
    x = [r["env_steps"] for r in rows]
    clip = report["hyperparameters"]["max_grad_norm"]
    ep = report["episodes"]
    panels = [
        {"title": "Q statistics (scaled units)", "ylabel": "Q", "series": [
            {"label": "Q mean (last block)", "x": x, "y": [r["q_mean"] for r in rows]},
            {"label": "Q std (last block)", "x": x, "y": [r["q_std"] for r in rows]},
            {"label": "max Q std (fragment)", "x": x, "y": [r["q_std_max"] for r in rows]}]},
        {"title": "pre-clip gradient norms", "ylabel": "norm", "yscale": "log", "hlines": [(clip, f"clip {clip:g}")],
         "series": [{"label": "policy", "x": x, "y": [r["policy_grad_norm"] for r in rows]},
                    {"label": "Q", "x": x, "y": [r["q_grad_norm"] for r in rows]}]},
        {"title": "temperature", "ylabel": "alpha", "yscale": "log",
         "series": [{"label": "alpha", "x": x, "y": [r["alpha"] for r in rows]}]},
        {"title": "unscaled reward per step", "ylabel": "reward", "yscale": "symlog", "series": [
            {"label": "fragment mean", "x": [r["env_steps"] for r in report["trace"]],
             "y": [r["reward_per_step"] for r in report["trace"]]},
            {"label": "finished episodes: return / length", "marker": True, "x": [e["env_steps"] for e in ep],
             "y": [e["return"] / max(e["length"], 1) for e in ep]}]},
    ]  # fmt: skip
    return save_panels(path, panels, f"Soak: vehicle env, seed settings ({report['verdict']})")


def build_report(args: argparse.Namespace, config, plumbing: list[str], result) -> dict:
    params = hyperparameters(config)
    shown = [o if not o.startswith("train.run_dir=") else "train.run_dir=<temporary>" for o in plumbing]
    signs = config.safety.warnings
    thresholds = {"q_mean_abs_max": signs.q_mean_abs_max, "q_std_max": signs.q_std_max,
                  "q_reward_bound": config.env.vehicle.reward.clip * params["reward_scale"] / (1 - params["gamma"])}  # fmt: skip
    status, reasons = verdict(result.summary, thresholds)
    return {
        "benchmark": "soak", "command": command_line(), "machine": machine(), "config": str(args.config),
        "overrides": {"plumbing": shown, "extra": args.overrides}, "hyperparameters": params,
        "episode_steps": config.env.vehicle.episode_steps,
        "deviations": deviations(params), "thresholds": thresholds, "min_steps": MIN_STEPS,
        "verdict": status, "reasons": reasons, "summary": result.summary,
        "episode_waves": episode_waves(result.episodes), "episodes": result.episodes, "trace": result.rows,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("dmsac").setLevel(logging.WARNING)
    import torch

    from cluster.config import load_config

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dmsac-soak-") as run_dir:
        plumbing = plumbing_overrides(run_dir, args.steps, args.device) + [f"train.seed={args.seed}"]
        config = load_config(args.config, plumbing + args.overrides)
        result = train(config, time.time() + args.max_wall, label="soak", log_every=args.log_every)
    report = build_report(args, config, plumbing, result)
    written = plot(report, args.out / "soak.png")
    report["plot"] = written.name if written else None
    write_report(args.out, "soak", report, markdown(report))
    s = result.summary
    print(f"soak {report['verdict']}{': ' + '; '.join(report['reasons']) if report['reasons'] else ''}")
    print(f"  env_steps={s['env_steps']:,} updates={s['updates']:,} wall={s['wall_s']:.1f}s "
          f"(rollout {s['rollout_s']:.1f}s, learner {s['learn_s']:.1f}s) nan_blocks={s['counters'].get('nan_blocks')} "
          f"rollbacks={s['counters'].get('rollbacks')} max|Q mean|={s['max_abs_q_mean']:.4g} max Q std={s['max_q_std']:.4g}")  # fmt: skip
    print(f"  wrote soak.json, soak.md{', ' + written.name if written else ''} in {args.out}")
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
