"""Does the context tell vehicles apart? A ridge probe from end-of-episode contexts to max drive acceleration.

    python bench/context_probe.py [--train 256] [--test 128] [--cnn configs/encoders/cnn_encoder.pt]

Vehicles drive one episode (2048 steps) with a PID controller plus random
excursions; every encoder's provider sees the same samples. A ridge
regression (standardized contexts, alpha by 5-fold cross-validation on the
training vehicles) predicts each vehicle's maximum drive acceleration
(max over v of the oracle's a(u = 1, v)); R^2 is measured on held-out vehicles
(other seeds, never in the prior). Target: R^2 >= 0.7 for both encoders.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actors.context import CnnEncoder, ContextConfig, DynamicsMapContext, PooledEncoder, cell_centers  # noqa: E402
from actors.context.exploration import ExploringPolicy  # noqa: E402
from actors.vehicle import VehicleConfig, VehicleVectorEnv, population_mean_map  # noqa: E402
from actors.vehicle.dynamics_map import dynamics_map  # noqa: E402
from actors.vehicle.pid import PIDController  # noqa: E402
from bench.common import command_line, machine, machine_line, write_report  # noqa: E402

TARGET_R2 = 0.7


def end_of_episode_contexts(providers: dict, vehicle: VehicleConfig, count: int, seed: int, batch: int):
    """``({encoder: [count, dim]}, max drive accel [count])`` after one episode per vehicle."""
    contexts: dict[str, list[np.ndarray]] = {name: [] for name in providers}
    targets = []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        env = VehicleVectorEnv(n, vehicle, seed=seed + start)
        made = {name: make(n) for name, make in providers.items()}
        policy = ExploringPolicy(PIDController(n), n, seed=seed + start + 1)
        obs = env.reset(seed + start)
        _, v_grid = cell_centers(next(iter(made.values())).config)
        speeds = np.concatenate([[0.0], v_grid])
        targets.append(dynamics_map(env.true_params, np.array([1.0]), speeds, vehicle.plant)[:, 0].max(axis=1))
        for _ in range(vehicle.episode_steps):
            step = env.step(policy(obs))
            for provider in made.values():
                provider.observe(step.dynamics_samples)
            obs = step.obs
        for name, provider in made.items():
            provider.rebuild()
            contexts[name].append(provider.context())
    return {k: np.concatenate(v) for k, v in contexts.items()}, np.concatenate(targets)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float):
    """Ridge on standardized features; returns a predictor."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-8
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda xn: ((xn - mu) / sd) @ w + y.mean()


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def choose_alpha(
    x: np.ndarray, y: np.ndarray, alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0), folds: int = 5
) -> float:
    parts = np.array_split(np.arange(len(y)), folds)
    scores = []
    for alpha in alphas:
        errs = [r2(y[p], fit_ridge(np.delete(x, p, 0), np.delete(y, p), alpha)(x[p])) for p in parts]
        scores.append(np.mean(errs))
    return float(alphas[int(np.argmax(scores))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=256, help="training vehicles")
    parser.add_argument("--test", type=int, default=128, help="held-out vehicles")
    parser.add_argument("--batch", type=int, default=128, help="vehicles stepped together")
    parser.add_argument("--cnn", default="configs/encoders/cnn_encoder.pt", help="CNN checkpoint (skipped if absent)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    vehicle = VehicleConfig()
    config = ContextConfig(mode="dynamics_map")
    u_grid, v_grid = cell_centers(config)
    prior = population_mean_map(vehicle, u_grid, v_grid, num_vehicles=config.prior_vehicles, seed=config.prior_seed)
    providers = {"pooled": lambda n: DynamicsMapContext(n, config, PooledEncoder(config), prior, vehicle.dt)}
    if Path(args.cnn).exists():
        cnn_cfg = ContextConfig(mode="dynamics_map", encoder="cnn", encoder_checkpoint=args.cnn)
        encoder = CnnEncoder(cnn_cfg)
        providers["cnn"] = lambda n: DynamicsMapContext(n, cnn_cfg, encoder, prior, vehicle.dt)
    x_tr, y_tr = end_of_episode_contexts(providers, vehicle, args.train, 7_000, args.batch)
    x_te, y_te = end_of_episode_contexts(providers, vehicle, args.test, 8_000_000, args.batch)
    rows = {}
    for name in providers:
        alpha = choose_alpha(x_tr[name], y_tr)
        model = fit_ridge(x_tr[name], y_tr, alpha)
        rows[name] = {"alpha": alpha, "train_r2": r2(y_tr, model(x_tr[name])), "test_r2": r2(y_te, model(x_te[name]))}
    result = {
        "benchmark": "context_probe",
        "target": "max drive acceleration (m/s^2)",
        "train_vehicles": args.train,
        "test_vehicles": args.test,
        "target_mean": float(y_te.mean()),
        "target_std": float(y_te.std()),
        "target_r2": TARGET_R2,
        "seconds": round(time.perf_counter() - t0, 1),
        "encoders": rows,
        "machine": machine(),
        "command": command_line(),
    }
    print(markdown(result))
    write_report(Path(args.out), "context_probe", result, markdown(result))


def markdown(result: dict) -> str:
    lines = [
        f"# Context probe: ridge from end-of-episode context to {result['target']}",
        "",
        f"{machine_line(result['machine'])}. Command: `{result['command']}`",
        "",
        f"{result['train_vehicles']} training vehicles, {result['test_vehicles']} held-out vehicles "
        f"(target mean {result['target_mean']:.2f}, std {result['target_std']:.2f}).",
        "",
        "| encoder | held-out R^2 | train R^2 | alpha | target R^2 |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["encoders"].items():
        lines.append(
            f"| {name} | {row['test_r2']:.3f} | {row['train_r2']:.3f} | {row['alpha']:g} | {result['target_r2']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
