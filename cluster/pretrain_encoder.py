"""Pretrain the ``cnn`` dynamics-map encoder as an autoencoder and write the checkpoint configs name.

    python -m cluster.pretrain_encoder [--out configs/encoders/cnn_encoder.pt] [--vehicles 512] [--epochs 150]

Randomized vehicles (drawn exactly as the environment draws them) drive one
episode each with a PID controller plus random excursions; the dynamics-map
context is snapshotted along the way. The autoencoder reads the pooled map
and confidence of a snapshot and reconstructs the vehicle's *true* map
(deviation from the population prior, from the environment's oracle), so the
code must carry what tells vehicles apart even where the data is thin. Only
the encoder is saved (``torch.load(weights_only=True)``-loadable, < 1 MB),
with a JSON sidecar of its metrics on held-out vehicles. CPU only.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from actors.context.config import ContextConfig
from actors.context.encoders import ConvMapDecoder, ConvMapEncoder, GridPool, PooledEncoder, encoder_checkpoint
from actors.context.exploration import ExploringPolicy, record_episode
from actors.context.grid import cell_centers
from actors.context.provider import DynamicsMapContext
from actors.vehicle import VehicleConfig, VehicleVectorEnv, population_mean_map
from actors.vehicle.pid import PIDController

SNAPSHOTS = (128, 512, 1024, 2048)


def collect(config: ContextConfig, vehicle: VehicleConfig, prior: np.ndarray, count: int, seed: int, batch: int, grid):
    """``(inputs [m, 2, *grid], targets [m, *grid])`` from ``count`` vehicles, one episode each."""
    pool = GridPool((config.grid_u, config.grid_v), grid)
    inputs, targets = [], []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        env = VehicleVectorEnv(n, vehicle, seed=seed + start)
        provider = DynamicsMapContext(n, config, PooledEncoder(replace(config, encoder="pooled")), prior, vehicle.dt)
        policy = ExploringPolicy(PIDController(n), n, seed=seed + start + 1)
        record = record_episode(env, provider, policy, seed=seed + start, snapshot_steps=SNAPSHOTS)
        target = pool(((record.true_maps - prior) / config.accel_scale).astype(np.float32))
        for snap in record.snapshots:
            inputs.append(pool(np.stack([snap.normalized, snap.confidence], axis=1).astype(np.float32)))
            targets.append(target)
    return torch.cat(inputs), torch.cat(targets)


def train(inputs: torch.Tensor, targets: torch.Tensor, grid, channels, context_dim: int, epochs: int, seed: int):
    torch.manual_seed(seed)
    encoder, decoder = ConvMapEncoder(grid, channels, context_dim), ConvMapDecoder(grid, channels, context_dim)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(inputs.shape[0], generator=gen).split(128):
            loss = nn.functional.mse_loss(decoder(encoder(inputs[idx])), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return encoder.eval(), decoder.eval()


def evaluate(encoder, decoder, inputs: torch.Tensor, targets: torch.Tensor, accel_scale: float) -> dict[str, float]:
    """Held-out reconstruction: error of the autoencoder vs the prior (zero deviation) and vs its own input map."""
    with torch.no_grad():
        recon = decoder(encoder(inputs))
    mse = float(((recon - targets) ** 2).mean())
    prior_mse = float((targets**2).mean())
    input_mse = float(((inputs[:, 0] - targets) ** 2).mean())
    to_ms2 = lambda x: float(np.sqrt(x) * accel_scale)  # noqa: E731
    return {
        "val_rmse_ms2": to_ms2(mse),
        "val_prior_rmse_ms2": to_ms2(prior_mse),
        "val_input_map_rmse_ms2": to_ms2(input_mse),
        "val_r2_vs_prior": 1.0 - mse / prior_mse,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="configs/encoders/cnn_encoder.pt")
    parser.add_argument("--vehicles", type=int, default=512, help="training vehicles (one episode each)")
    parser.add_argument("--val-vehicles", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch-envs", type=int, default=128, help="vehicles stepped together")
    parser.add_argument("--grid", type=int, nargs=2, default=(20, 20), help="encoder input grid (u, v)")
    parser.add_argument("--channels", type=int, nargs=2, default=(16, 32))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    config, vehicle = ContextConfig(mode="dynamics_map"), VehicleConfig()
    grid, channels = tuple(args.grid), tuple(args.channels)
    u_grid, v_grid = cell_centers(config)
    prior = population_mean_map(vehicle, u_grid, v_grid, num_vehicles=config.prior_vehicles, seed=config.prior_seed)
    # Vehicle seeds far from training seeds and from the prior's seed.
    x_tr, y_tr = collect(config, vehicle, prior, args.vehicles, 50_000 + args.seed * 10_000, args.batch_envs, grid)
    x_va, y_va = collect(config, vehicle, prior, args.val_vehicles, 90_000 + args.seed * 10_000, args.batch_envs, grid)
    t_data = time.perf_counter() - t0
    encoder, decoder = train(x_tr, y_tr, grid, channels, config.context_dim, args.epochs, args.seed)
    metrics = evaluate(encoder, decoder, x_va, y_va, config.accel_scale)
    meta = {
        "accel_scale": config.accel_scale,
        "grid": [config.grid_u, config.grid_v],
        "smoothing_sigma": list(config.smoothing_sigma),
        "prior_weight": config.prior_weight,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(encoder_checkpoint(encoder, grid, channels, meta), out)
    sidecar = {
        "checkpoint": out.name,
        "bytes": out.stat().st_size,
        "train_vehicles": args.vehicles,
        "val_vehicles": args.val_vehicles,
        "snapshots_per_episode": list(SNAPSHOTS),
        "train_examples": int(x_tr.shape[0]),
        "epochs": args.epochs,
        "input_grid": list(grid),
        "channels": list(channels),
        "context_dim": config.context_dim,
        "seed": args.seed,
        "data_seconds": round(t_data, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "context_config": asdict(config),
        **{k: round(v, 4) for k, v in metrics.items()},
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(json.dumps({k: sidecar[k] for k in ("bytes", "total_seconds", *metrics)}, indent=2))  # noqa: T201  CLI output


if __name__ == "__main__":
    main()
