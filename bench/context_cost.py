"""Cost of one dynamics-map rebuild + encoding for a worker's environments, on one CPU core.

    python bench/context_cost.py [--envs 64] [--rebuilds 200] [--cnn configs/encoders/cnn_encoder.pt]

Fills every environment's buffer (2048 samples of a smooth random drive), then
times the observe call that triggers a rebuild (reconstruction + encoding +
validation) in the steady state, where samples enter, reach the weight floor
and leave the window at every rebuild. Also times the from-scratch reference
(bincount + dense G_u S G_v^T) side by side. Target: <= 5 ms for 64 envs at 100 x 100.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actors.context import ContextConfig, DynamicsMapContext, PooledEncoder, reconstruct_dense  # noqa: E402
from actors.context.encoders import CnnEncoder  # noqa: E402
from actors.vehicle.config import VehicleConfig  # noqa: E402
from bench.common import command_line, machine, machine_line, write_report  # noqa: E402
from cluster.context_factory import dynamics_map_context  # noqa: E402

TARGET_MS = 5.0


def drive_stream(rng: np.random.Generator, envs: int, steps: int) -> np.ndarray:
    """``[steps, envs, 4]`` samples of a smooth random drive (cost does not depend on the values)."""
    u = np.clip(np.cumsum(rng.normal(0, 0.05, (steps, envs)), axis=0), -1, 1)
    v = np.clip(15 + np.cumsum(rng.normal(0, 0.3, (steps, envs)), axis=0), 0, 35)
    a = 3 * u - 0.002 * v**2 + rng.normal(0, 0.3, (steps, envs))
    theta = 0.03 * np.sin(np.arange(steps) / 50.0)[:, None] * np.ones(envs)
    return np.stack([u, v, a, theta], axis=-1)


def time_rebuilds(provider: DynamicsMapContext, stream: np.ndarray, rebuilds: int) -> dict[str, float]:
    """Milliseconds of the rebuild-triggering observe call, after a full buffer."""
    every = provider.config.update_every
    warm = (provider.config.capacity // every + 5) * every  # a multiple of every: the timed call rebuilds
    for samples in stream[:warm]:
        provider.observe(samples)
    times, step = [], warm
    for _ in range(rebuilds):
        for samples in stream[step : step + every - 1]:
            provider.observe(samples)
        t0 = time.perf_counter()
        provider.observe(stream[step + every - 1])
        times.append(time.perf_counter() - t0)
        step += every
    ms = np.array(times) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "mean_ms": float(ms.mean())}


def time_stages(provider: DynamicsMapContext, stream: np.ndarray, rebuilds: int) -> dict[str, float]:
    """Median milliseconds of each stage of a rebuild (same work as ``provider.rebuild``), for profiling."""
    rec, enc, every = provider.reconstruction, provider.encoder, provider.config.update_every
    stages: dict[str, list[float]] = {}

    def clock(name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        stages.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        return out

    step = provider._step + 1
    for _ in range(rebuilds):
        for samples in stream[step : step + every]:
            provider._step += 1
            provider._add(samples)
        step += every
        now = provider._step
        rec._now = now
        clock("rebase", rec._rebase, now)
        changes = clock("changes", rec._changes, provider.buffer, now)
        clock("accumulate", rec._accumulate, *changes)
        est = clock("expand_divide", rec._combine, now)
        feats = clock("features", enc.features, est.stacked)
        ctx = clock("project", enc.project, feats)
        clock("validate", lambda f, c: (np.isfinite(f).all(axis=1), np.isfinite(c).all(axis=1)), feats, ctx)
    return {name: float(np.median(ms)) for name, ms in stages.items()}


def time_dense(provider: DynamicsMapContext, repeats: int = 5) -> float:
    cfg, rec = provider.config, provider.reconstruction
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reconstruct_dense(provider.buffer, provider._step, rec.prior, cfg, rec.dt)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--rebuilds", type=int, default=200)
    parser.add_argument("--cnn", default="configs/encoders/cnn_encoder.pt", help="CNN checkpoint (skipped if absent)")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--profile", action="store_true", help="also time each stage of a rebuild")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ContextConfig(mode="dynamics_map")
    stream = drive_stream(
        np.random.default_rng(0), args.envs, config.capacity + (args.rebuilds + 60) * config.update_every
    )
    rows = {}
    providers = {"pooled": lambda: DynamicsMapContext(args.envs, config, PooledEncoder(config))}
    if Path(args.cnn).exists():
        cnn_config = ContextConfig(mode="dynamics_map", encoder="cnn", encoder_checkpoint=args.cnn)
        providers["cnn"] = lambda: DynamicsMapContext(args.envs, cnn_config, CnnEncoder(cnn_config))
    basis = ContextConfig(mode="dynamics_map", reconstruction="basis", encoder="basis")
    providers["basis (fit + coordinates)"] = lambda: dynamics_map_context(basis, VehicleConfig(), args.envs, 0.1)
    for name, make in providers.items():
        provider = make()
        rows[name] = time_rebuilds(provider, stream, args.rebuilds)
        if args.profile:
            rows[name]["stages_median_ms"] = time_stages(provider, stream, 50)
        if len(rows) == 1:
            rows[name]["dense_reference_ms"] = time_dense(provider)
    result = {
        "benchmark": "context_cost",
        "envs": args.envs,
        "grid": [config.grid_u, config.grid_v],
        "capacity": config.capacity,
        "update_every": config.update_every,
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "command": command_line(),
        "low_rank": list(provider.reconstruction.rank),
        "target_ms": TARGET_MS,
        "encoders": rows,
    }
    print(markdown(result))
    write_report(Path(args.out), "context_cost", result, markdown(result))


def markdown(result: dict) -> str:
    lines = [
        f"# Context cost: rebuild + encode, {result['envs']} envs, {result['grid'][0]}x{result['grid'][1]}, 1 thread",
        "",
        f"{machine_line(result['machine'])}. Command: `{result['command']}`",
        "",
        "| encoder | median ms | p90 ms | mean ms | target ms | from-scratch reconstruction ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["encoders"].items():
        dense = f"{row['dense_reference_ms']:.2f}" if "dense_reference_ms" in row else "-"
        lines.append(
            f"| {name} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | {row['mean_ms']:.2f} | {result['target_ms']} | {dense} |"
        )
    for name, row in result["encoders"].items():
        if "stages_median_ms" in row:
            lines.append(
                f"\n{name} stages (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in row["stages_median_ms"].items())
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
