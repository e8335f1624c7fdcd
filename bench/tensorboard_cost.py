"""What TensorBoard costs the learner: updates/s of the real service loop with ``metrics.tensorboard`` on and off.

    python bench/tensorboard_cost.py [--config configs/vehicle.yaml] [--updates 2000] [--repeats 7] [--out bench/results]

Two learner services from the composition root (``cluster.factory.make_learner_service``; GPU when there is one,
the CUDA-graph path of ``learner.fast_path: auto``), one writing TensorBoard scalars and one not, each fed the same
random transitions; then ``service.train`` runs ``--updates`` updates per round, the two timed round-robin so drift hits
both alike. Target: on within 3 % of off (median of the rounds).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import command_line, fmt, machine, machine_line, wait_for_compiled_maths, write_report  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.factory import make_learner_service  # noqa: E402
from learner.service import LearnerService  # noqa: E402
from learner.types import Fragment  # noqa: E402

log = logging.getLogger("bench")


def random_fragment(service: LearnerService, steps: int, envs: int, seq: int) -> Fragment:
    dims, rng = service.learner.dims, np.random.default_rng(seq)

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal((steps, envs, *shape)).astype(np.float32)

    return Fragment(
        obs=arr(dims.obs_dim), context=arr(dims.context_dim), action=np.tanh(arr(dims.action_dim)), reward=arr(),
        next_obs=arr(dims.obs_dim), next_context=arr(dims.context_dim), terminated=np.zeros((steps, envs), bool),
        truncated=np.zeros((steps, envs), bool), valid=np.ones((steps, envs), bool), actor_id=0, incarnation=1,
        seq=seq, weights_version=0,
    )  # fmt: skip


def rate(service: LearnerService, updates: int) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, before = time.perf_counter(), service.learner.updates_done
    service.train(max_updates=updates)  # reads every block's statistics: synchronous with the device
    return (service.learner.updates_done - before) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/vehicle.yaml")
    parser.add_argument("--updates", type=int, default=2000, help="updates per timed round")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    transitions = args.updates * (args.repeats + 1) + 10_000
    services = {}
    for on in (True, False):
        sets = [f"train.run_dir={tempfile.mkdtemp(prefix='tb_cost_')}", "metrics.enabled=false",
                f"metrics.tensorboard={str(on).lower()}", "train.warmup_steps=0", "train.update_to_data=1.0",
                f"replay.capacity={transitions}", "checkpoint.every_env_steps=100000000"]  # fmt: skip
        service = make_learner_service(load_config(args.config, sets), serve_metrics=False)
        service.ingest(random_fragment(service, transitions // 100, 100, seq=1))
        log.info("tensorboard=%s: warming up (capture and compile) on %s", on, service.learner.device)
        rate(service, args.updates)
        wait_for_compiled_maths(service.learner)
        rate(service, args.updates)  # captures again, with the compiled maths
        services["on" if on else "off"] = service
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for round_ in range(args.repeats):
        for name, service in services.items():
            rates[name].append(rate(service, args.updates))
        log.info("round %d: on %.0f, off %.0f updates/s", round_ + 1, rates["on"][-1], rates["off"][-1])
    for service in services.values():
        service.close()
    median = {name: statistics.median(values) for name, values in rates.items()}
    cost = 100.0 * (median["off"] - median["on"]) / median["off"]
    m = machine()
    report = {"machine": m, "command": command_line(), "rates": rates, "median": median, "cost_percent": cost,
              "updates_per_round": args.updates, "config": args.config}  # fmt: skip
    every = load_config(args.config).metrics.tensorboard_every_updates
    markdown = "\n".join([
        "# TensorBoard's cost to the learner (updates/s of the service loop)", "",
        f"{machine_line(m)}.  ", f"Command: `{command_line()}`; `metrics.tensorboard_every_updates: {every}`.", "",
        "| tensorboard | updates/s (median) | min..max |", "|---|---|---|",
        *(f"| {name} | {fmt(median[name])} | {fmt(min(v))}..{fmt(max(v))} |" for name, v in rates.items()), "",
        f"Cost: **{cost:+.1f} %** (target: within 3 %).",
    ])  # fmt: skip
    path = write_report(Path(args.out), "tensorboard_cost", report, markdown)
    print(markdown)
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
