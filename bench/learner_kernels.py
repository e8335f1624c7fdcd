"""Where one SAC update's GPU time goes: its kernels, counted and timed (the groundwork for "fewer kernels").

    python bench/learner_kernels.py [--batch 256] [--precision highest|high|bf16] [--runs 1] [--steps 20] [--top 25]
        [--eager] [--out bench/results]

Runs a block of ``--steps`` ``RunStack.sampled_step``s of one run, or of ``--runs`` stacked (the step the CUDA graph
captures, its maths through ``torch.compile`` unless ``--eager``; the block's draws made before it, as a block's are)
under ``torch.profiler`` and reports, per update: the kernels launched, their summed GPU time, and the
kernels that take most of it, grouped by name. Then the same step replayed as a CUDA graph, timed: the graph's
time per update against the kernels' summed time says how much goes to the gaps between kernels (launch-bound)
rather than to the kernels themselves. CUDA only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import command_line, machine, machine_line, write_report  # noqa: E402
from bench.learner_speed import ACTION, BLOCK, CONTEXT, OBS, filled_replay, learner_config, run_replays  # noqa: E402
from learner.graph import GraphedBlocks, compiled_math  # noqa: E402
from learner.sac import SAC  # noqa: E402
from learner.stack import RunStack  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="profiled updates")
    parser.add_argument("--top", type=int, default=25, help="kernel names listed")
    parser.add_argument("--eager", action="store_true", help="the plain maths, not torch.compile'd")
    parser.add_argument("--precision", default="highest", choices=["highest", "high", "bf16"],
                        help="learner.matmul_precision of the step")  # fmt: skip
    parser.add_argument("--runs", type=int, default=1, help="runs stacked in one step (train.parallel_runs)")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="learner_kernels")
    return parser.parse_args(argv)


def kernel_table(events: list[tuple[str, float]], steps: int) -> dict:
    """``(name, microseconds)`` of every kernel over ``steps`` updates → per-update count and time, by name."""
    by_name: dict[str, list[float]] = defaultdict(list)
    for name, micros in events:
        by_name[name].append(micros)
    rows = [
        {"kernel": name, "per_update": len(times) / steps, "us_per_update": sum(times) / steps}
        for name, times in by_name.items()
    ]
    rows.sort(key=lambda row: -row["us_per_update"])
    return {
        "kernels_per_update": len(events) / steps,
        "kernel_us_per_update": sum(micros for _, micros in events) / steps,
        "by_name": rows,
    }


def profile_steps(stack: RunStack, replays: list, steps: int) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    stack.begin_block(replays, 3)
    for _ in range(3):  # compile and warm up outside the profile
        stack.sampled_step(replays)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        stack.begin_block(replays, steps)  # the block's draws, counted with its updates
        for _ in range(steps):
            stack.sampled_step(replays)
        torch.cuda.synchronize()
    return [
        (event.name, event.device_time)
        for event in prof.events()
        if event.device_type == torch.autograd.DeviceType.CUDA and event.device_time > 0
    ]


def stacked_runs(runs: int, batch: int, precision: str, device: torch.device) -> RunStack:
    """``runs`` SACs (seeds 0..runs-1) in one stack."""
    sacs = [SAC(OBS + CONTEXT, ACTION, learner_config(batch, precision), device, seed=k) for k in range(runs)]
    return sacs[0].stack if runs == 1 else RunStack.join([sac.stack for sac in sacs])


def graph_us_per_update(stack: RunStack, replays: list, compile_math: bool, blocks: int = 40) -> float:
    """Microseconds per update of all the stack's runs, as a CUDA graph."""
    graphed = GraphedBlocks(stack, compile_math=compile_math)
    graphed.update_blocks([replays], BLOCK)[0][0].tolist()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(blocks):
        graphed.update_blocks([replays], BLOCK)[0][0].tolist()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / (blocks * BLOCK) * 1e6


def markdown(report: dict) -> str:
    k = report["kernels"]
    lines = [
        "# One SAC update's kernels (GPU)", "", f"{machine_line(report['machine'])}.  ", f"Command: `{report['command']}`",
        "", f"{report.get('runs', 1)} run(s) stacked, batch {report['batch']}, precision `{report.get('precision', 'highest')}`, maths {'eager' if report['eager'] else 'torch.compile'}d, {report['steps']} "
        f"updates profiled: **{k['kernels_per_update']:.0f} kernels per update**, {k['kernel_us_per_update']:.0f} µs "
        f"of kernel time per update; as a CUDA graph {report['graph_us_per_update']:.0f} µs per update "
        f"({1e6 / report['graph_us_per_update']:,.0f} updates/s).", "",
        "| kernel | per update | µs per update | share |", "|---|---|---|---|",
    ]  # fmt: skip
    total = k["kernel_us_per_update"] or 1.0
    for row in k["by_name"][: report["top"]]:
        name = row["kernel"] if len(row["kernel"]) <= 90 else row["kernel"][:87] + "..."
        lines.append(f"| `{name}` | {row['per_update']:.0f} | {row['us_per_update']:.1f} | "
                     f"{100 * row['us_per_update'] / total:.1f} % |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("learner_kernels needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    replay = filled_replay(device, args.capacity)
    replays = run_replays(replay, args.runs, joined=True)  # each run its generator, the rows joined as a job's
    stack = stacked_runs(args.runs, args.batch, args.precision, device)
    if not args.eager:
        stack.math = compiled_math()
    stack.begin_block(replays, BLOCK)
    stack.allocate_block(max(BLOCK, args.steps))
    events = profile_steps(stack, replays, args.steps)
    graph_us = graph_us_per_update(stacked_runs(args.runs, args.batch, args.precision, device), replays,
                                   compile_math=not args.eager)  # fmt: skip
    report = {
        "machine": machine(), "command": command_line(), "batch": args.batch, "precision": args.precision,
        "runs": args.runs, "steps": args.steps, "eager": args.eager,
        "top": args.top, "kernels": kernel_table(events, args.steps), "graph_us_per_update": graph_us,
    }  # fmt: skip
    text = markdown(report)
    write_report(args.out, args.name, report, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
