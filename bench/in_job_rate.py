"""The learner's update rate inside the real Ray job against the same learner alone, side by side in one call.

    python bench/in_job_rate.py [--config configs/vehicle.yaml] [--actors 8] [--steps 400000] [--seconds 2]
        [--repeats 5] [--set KEY=VALUE ...] [--out bench/results]

1. **Alone**: the job's own learner (``cluster.factory.make_learner``: its networks, batch, block size, device and
   ``learner.fast_path``) on a replay of random transitions of the job's shapes, one ``Learner.update_block`` after
   another (each with its one host read), ``--repeats`` rounds of about ``--seconds``: the median rate.
2. **The service alone**: the same learner inside its ``LearnerService`` (built as the job builds it: metrics
   exporter, NaN guard and snapshot per block, weight gate), trained one fragment's updates at a time with the
   broadcast after each, as the learner actor does per fragment: what the loop's bookkeeping costs, without Ray.
3. **In the job**: ``python -m cluster.train --config CONFIG`` with ``cluster.num_actors=--actors`` and
   ``train.total_env_steps=--steps`` on Ray (a local instance, or ``--set cluster.address=...``); its progress lines
   give (time, updates) pairs, and the steady rate is the slope from the line where 20 % of the final updates are done
   to the last line before the end (leaving out start-up, warm-up and graph capture).
   With ``--profile-calls N``, N more calls run under ``torch.profiler``: the GPU's busy share of their wall time,
   the host's waits (CUDA synchronizations and copies by name), and the GPU's idle gaps attributed to the host op
   running when each gap began (the innermost one): where the loop loses time.
4. (In the job, from its ``final_stats.json``) where the job's learner spent its time: ingest, train, broadcast,
   checkpoint and idle (``learner.timing``), and its rate while training.

The ratio is the speed issue's in-job floor (>= 95 %). The job must be learner-bound for the ratio to mean
anything: with ``update_to_data`` 1 and 8 actors the vehicle job collects far more steps than the learner trains.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (  # noqa: E402
    ROOT,
    command_line,
    fill_random_replay,
    machine,
    machine_line,
    wait_for_compiled_maths,
    write_report,
)
from cluster.config import load_config  # noqa: E402
from cluster.factory import make_learner, make_learner_service, probe_dimensions  # noqa: E402

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ dmsac: env_steps=(\d+) updates=(\d+) ")
STEADY_FROM = 0.2
"""The steady window starts at the progress line where this share of the final updates is done."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "vehicle.yaml"))
    parser.add_argument("--actors", type=int, default=8, help="cluster.num_actors of the job")
    parser.add_argument("--steps", type=int, default=400_000, help="train.total_env_steps of the job")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per timed round of the learner alone")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--capacity", type=int, default=200_000, help="replay rows of the learner alone")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both (repeatable), e.g. learner.device=cpu")  # fmt: skip
    parser.add_argument("--profile-calls", type=int, default=0, help="service calls profiled (0: none)")
    parser.add_argument("--skip-job", action="store_true", help="the learner alone and in its service only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="in_job_rate")
    return parser.parse_args(argv)


def job_overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    return [*args.overrides, "cluster.mode=ray", f"cluster.num_actors={args.actors}",
            f"train.total_env_steps={args.steps}", f"train.run_dir={run_dir}", "train.log_every_seconds=2",
            "metrics.port=0", "metrics.tensorboard=false", "checkpoint.save_replay=false"]  # fmt: skip


# -- the learner alone ---------------------------------------------------------------------------


def rounds(args: argparse.Namespace, work, updates_per_call: int, sync) -> tuple[list[float], int]:
    """Updates/s of ``work()`` (which runs ``updates_per_call`` updates), ``--repeats`` rounds of ~``--seconds``;
    and the calls per round (after 4 warm-up calls)."""
    for _ in range(3):  # warm-up: capture, compile, cuBLAS handles
        work()
    sync()
    started = time.perf_counter()
    work()
    sync()
    calls = max(1, round(args.seconds / (time.perf_counter() - started)))
    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        sync()
        rates.append(calls * updates_per_call / (time.perf_counter() - started))
    return rates, calls


def alone(args: argparse.Namespace, overrides: list[str]) -> dict:
    config = load_config(args.config, overrides)
    learner = make_learner(config, probe_dimensions(config))
    fill_random_replay(learner.replay, min(args.capacity, learner.replay.capacity))
    block = config.learner.block_updates
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)
    # each update_block reads the block's statistics: synchronous, as in the job
    learner.update_block(block)
    wait_for_compiled_maths(learner)
    rates, _ = rounds(args, lambda: learner.update_block(block), block, sync)
    return {"device": str(learner.device), "block_updates": block, "batch": config.learner.batch_size,
            "fast_path": learner.config.fast_path, "rates": rates, "median": statistics.median(rates)}  # fmt: skip


def service_alone(args: argparse.Namespace, overrides: list[str], work: Path) -> dict:
    """The learner in its service, one fragment's updates per call and the broadcast after it: the job's learner
    loop without Ray, fragments or checkpoints."""
    config = load_config(args.config, [*overrides, f"train.run_dir={work}", "metrics.port=0", "metrics.tensorboard=false"])
    service = make_learner_service(config)
    try:
        learner = service.learner
        fill_random_replay(learner.replay, min(args.capacity, learner.replay.capacity))
        learner.env_steps = 1 << 40  # every call owes its updates
        per_fragment = max(1, round(config.rollout.steps_per_fragment * config.env.num_envs * config.train.update_to_data))
        sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)
        service.train(max_updates=per_fragment)
        wait_for_compiled_maths(learner)
        rates, calls = rounds(args, lambda: service.train(max_updates=per_fragment), per_fragment, sync)
        profiled = None
        if args.profile_calls and learner.device.type == "cuda":
            profiled = profile_calls(lambda: service.train(max_updates=per_fragment), args.profile_calls, sync)
    finally:
        service.close()
    return {"updates_per_call": per_fragment, "calls_per_round": calls, "updates": learner.updates_done,
            "broadcasts": learner.weights_version, "rates": rates, "median": statistics.median(rates),
            "profile": profiled}  # fmt: skip


HOST_WAITS = ("cudaEventSynchronize", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy",
              "cudaMemcpyAsync", "cudaHostAlloc", "cudaFreeHost", "cudaStreamWaitEvent")  # fmt: skip
GAP_MIN_US = 20.0
"""GPU idle stretches shorter than this are the graph's own kernel-to-kernel gaps, not the loop's."""


def busy_intervals(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping (start, end) spans merged, in order."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def idle_by_host_code(busy: list[tuple[float, float]], host: list[tuple[float, float, str]]) -> tuple[list, dict]:
    """The GPU's idle gaps of at least ``GAP_MIN_US`` between ``busy`` intervals, and their time by the host code
    (``(start, end, label)`` ops, in start order) running when each began: the innermost op then, else the last one
    that ended before it."""
    gaps = [(a[1], b[0]) for a, b in zip(busy, busy[1:], strict=False) if b[0] - a[1] >= GAP_MIN_US]
    by_code: dict[str, float] = {}
    for start, end in gaps:
        running = [op for op in host if op[0] <= start < op[1]]
        before = [op for op in host if op[1] <= start]
        culprit = min(running, key=lambda op: op[1] - op[0]) if running else (before[-1] if before else None)
        key = culprit[2] if culprit else "?"
        by_code[key] = by_code.get(key, 0.0) + (end - start)
    return gaps, by_code


def profile_calls(work, calls: int, sync) -> dict:
    """``calls`` of ``work()`` under ``torch.profiler``: GPU busy share, host waits, idle gaps by host code."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for _ in range(calls):
            work()
        sync()
        wall = time.perf_counter() - started
    events = list(prof.events())
    busy = busy_intervals([(e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA])
    host_events = sorted((e for e in events if e.device_type == DeviceType.CPU), key=lambda e: e.time_range.start)
    gaps, by_code = idle_by_host_code(busy, [(e.time_range.start, e.time_range.end, e.name) for e in host_events])
    waits: dict[str, float] = {}
    for e in host_events:
        if e.name in HOST_WAITS:
            waits[e.name] = waits.get(e.name, 0.0) + (e.time_range.end - e.time_range.start)
    span = busy[-1][1] - busy[0][0] if busy else 0.0
    top = sorted(by_code.items(), key=lambda kv: -kv[1])[:12]
    return {"calls": calls, "wall_s": wall, "gpu_busy_share": sum(b - a for a, b in busy) / span if span else None,
            "gaps": len(gaps), "gap_us_total": sum(b - a for a, b in gaps), "gap_us_by_code": dict(top),
            "host_wait_us": dict(sorted(waits.items(), key=lambda kv: -kv[1]))}  # fmt: skip


# -- the learner in the job ----------------------------------------------------------------------


def progress_points(log: str) -> list[tuple[float, int, int]]:
    """``(seconds, env_steps, updates)`` of every progress line of the driver's log (not the done line)."""
    points = []
    for line in log.splitlines():
        found = LINE.match(line)
        if found:
            when = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            points.append((when, int(found.group(2)), int(found.group(3))))
    return points


def steady_rate(points: list[tuple[float, int, int]]) -> dict | None:
    """Updates per second from the line with ``STEADY_FROM`` of the final updates done to the last line."""
    if len(points) < 2:
        return None
    final = points[-1][2]
    first = next(p for p in points if p[2] >= STEADY_FROM * final)
    last = points[-1]
    if last[0] <= first[0]:
        return None
    return {"from_updates": first[2], "to_updates": last[2], "seconds": last[0] - first[0],
            "rate": (last[2] - first[2]) / (last[0] - first[0])}  # fmt: skip


def in_job(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="in_job_rate_") as work:
        run_dir = Path(work) / "run"
        command = [sys.executable, "-m", "cluster.train", "--config", args.config]
        command += [x for o in job_overrides(args, run_dir) for x in ("--set", o)]
        print(f"job: {' '.join(command)}", flush=True)
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - started
        final = json.loads((run_dir / "final_stats.json").read_text()) if (run_dir / "final_stats.json").exists() else {}
    if done.returncode != 0:
        raise SystemExit(f"the job ended with exit {done.returncode}:\n{done.stderr[-3000:]}")
    points = progress_points(done.stderr)
    return {"exit_code": done.returncode, "wall_s": wall, "env_steps": final.get("env_steps"),
            "updates": final.get("updates"), "mean_updates_per_second": final.get("mean_updates_per_second_this_run"),
            "steady": steady_rate(points), "progress_lines": len(points),
            "learner_seconds": final.get("learner_seconds") or {}}  # fmt: skip


def time_shares(seconds: dict, updates: int | None) -> dict | None:
    """Each phase's share of the learner's wall time, and its update rate while training."""
    wall = seconds.get("wall") or 0.0
    if wall <= 0:
        return None
    shares = {name: value / wall for name, value in seconds.items() if name != "wall"}
    train = seconds.get("train") or 0.0
    return {"shares": shares, "training_rate": (updates or 0) / train if train > 0 else None}


# -- report --------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    a, j = report["alone"], report["job"]
    steady = j["steady"] or {}
    ratio = report.get("ratio")
    return "\n".join([
        "# The learner inside the real job against the learner alone", "",
        f"{machine_line(report['machine'])}.  ", f"Command: `{report['command']}`", "",
        "| | updates/s | detail |", "|---|---|---|",
        f"| alone ({a['device']}, batch {a['batch']}, blocks of {a['block_updates']}, fast_path {a['fast_path']}) | "
        f"{a['median']:,.0f} | median of {len(a['rates'])} rounds, {min(a['rates']):,.0f}..{max(a['rates']):,.0f} |",
        f"| in the job, steady ({report['actors']} actors) | {steady.get('rate', float('nan')):,.0f} | updates "
        f"{steady.get('from_updates', 0):,}..{steady.get('to_updates', 0):,} over {steady.get('seconds', 0):.0f} s |",
        f"| in the job, whole run | {j['mean_updates_per_second'] or 0:,.0f} | {j['updates'] or 0:,} updates, "
        f"{j['env_steps'] or 0:,} env steps, {j['wall_s']:.0f} s with start-up |",
        "", f"In the job / alone: **{100 * ratio:.1f} %** (floor 95 %)." if ratio else "", "",
    ] + time_lines(report))  # fmt: skip


def time_lines(report: dict) -> list[str]:
    """The service alone's row and where the job's learner spent its time (reports from before these: none)."""
    lines = []
    if report.get("service"):
        s, a = report["service"], report["alone"]
        lines += [f"The same learner in its service ({s['updates_per_call']:,} updates and a broadcast per call, as per "
                  f"fragment in the job): {s['median']:,.0f} updates/s, {100 * s['median'] / a['median']:.1f} % of "
                  "alone.", ""]  # fmt: skip
        profiled = s.get("profile")
        if profiled:
            busy = profiled["gpu_busy_share"] or 0.0
            lines += [f"Profiled ({profiled['calls']} calls, {profiled['wall_s']:.2f} s): the GPU busy "
                      f"{100 * busy:.1f} % of the span; {profiled['gaps']} idle gaps of "
                      f">= {GAP_MIN_US:.0f} µs, {profiled['gap_us_total'] / 1e3:.1f} ms in all. Host waits: "
                      + ", ".join(f"{k} {v / 1e3:.1f} ms" for k, v in profiled["host_wait_us"].items()) + ".", "",
                      "| host code when the GPU went idle | idle ms |", "|---|---|"]  # fmt: skip
            lines += [f"| `{code}` | {us / 1e3:.2f} |" for code, us in profiled["gap_us_by_code"].items()] + [""]
    timing = time_shares(report["job"].get("learner_seconds") or {}, report["job"].get("updates"))
    if timing:
        shares = ", ".join(f"{name} {100 * share:.1f} %" for name, share in timing["shares"].items())
        rate = timing["training_rate"]
        lines += [f"The job's learner, share of its wall time since its first step: {shares}; its rate while "
                  f"training {rate:,.0f} updates/s." if rate else f"The job's learner: {shares}.", ""]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = {"benchmark": args.name, "machine": machine(), "command": command_line(), "config": args.config,
              "actors": args.actors, "steps": args.steps, "overrides": args.overrides}  # fmt: skip
    print("the learner alone ...", flush=True)
    # the job's budget too: with fast_path auto it decides whether the job compiles (cluster.factory.job_learner_config)
    as_in_job = [*args.overrides, f"cluster.num_actors={args.actors}", f"train.total_env_steps={args.steps}"]
    report["alone"] = alone(args, as_in_job)
    print(f"  {report['alone']['median']:,.0f} updates/s; the learner in its service ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="in_job_service_") as work:
        report["service"] = service_alone(args, as_in_job, Path(work))
    print(f"  {report['service']['median']:,.0f} updates/s; the job ...", flush=True)
    if args.skip_job:
        text = "\n".join(time_lines({**report, "job": {}}))
        write_report(args.out, args.name, report, text)
        print(text, flush=True)
        return 0
    report["job"] = in_job(args)
    steady = report["job"]["steady"]
    report["ratio"] = steady["rate"] / report["alone"]["median"] if steady else None
    text = markdown(report)
    write_report(args.out, args.name, report, text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
