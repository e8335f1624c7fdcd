"""Does the vehicle task reward knowing the vehicle? A classical controller with and without that knowledge.

    python bench/task_headroom.py [--variants default tracking aggressive ...] [--episodes 32] [--tune-vehicles 16]

For each task variant (a set of ``env.vehicle`` overrides, table ``VARIANTS``) two controllers are tuned by grid
search on ``--tune-vehicles`` training vehicles (env seed ``--tune-seed``, one full episode each) for the best return, then both
drive the same ``--episodes`` held-out vehicles (env seed 7770001, full episodes):

- ``pid``: the shipped PID (``actors/vehicle/pid.py``): fixed gains for every vehicle; the grid is the one its
  defaults came from (kp, ki, k_accel, lookahead).
- ``oracle``: the map controller (``actors/vehicle/map_control.py``, the base of ``env.vehicle.action:
  residual_map``) on the vehicle's true acceleration map ``a(u, v)`` (``env.true_dynamics_map``): feedback in
  acceleration units, the command the map's inverse at the previewed reference acceleration plus gravity and the
  feedback. It knows what a perfect dynamics-map context knows and nothing else (the speed it reads is the noisy
  measurement). Its gains tuned here for ``agile_delay`` are ``env.vehicle.map_control``'s defaults.
- ``map``: the oracle's controller and gains with each vehicle's map as the service estimates it online — the
  dynamics-map context's reconstruction (``DynamicsMapContext`` with the default ``context`` settings, from the
  population-mean prior) fed by the episode's own dynamics samples — instead of the true one. Its share of the
  oracle's gain is what the estimated map is worth to a controller that inverts it.

The oracle's gain over the PID bounds what a context can give a controller of this kind: where it is small, the
task does not reward knowing the vehicle, whatever the learner. Also reported: the tuned PID's return split by
reward term (tracking, energy ``|u|``, jerk, smoothness ``|Δu|``, brake, stop). Writes ``task_headroom.json``/``.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actors.context.config import ContextConfig  # noqa: E402
from actors.vehicle.config import MapControlGains, PIDGains, VehicleConfig  # noqa: E402
from actors.vehicle.env import VehicleVectorEnv  # noqa: E402
from actors.vehicle.pid import PIDController  # noqa: E402
from actors.vehicle.residual import EstimatedMaps, MapFeedForward, MapSource, TrueMaps  # noqa: E402
from bench.common import ROOT, command_line, fmt, machine, machine_line, write_report  # noqa: E402
from cluster.config import config_from  # noqa: E402
from cluster.context_factory import dynamics_map_context  # noqa: E402
from cluster.evaluate import HELD_OUT_SEED  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "tracking": ["reward.w_track=10"],
    "aggressive": ["reference.accel_max=4", "reference.decel_max=5", "reference.jerk_max=6",
                   "reference.natural_freq=2", "reference.safety_fraction=0.9"],  # fmt: skip
    "hills": ["grade.std=0.06", "grade.clip=0.15", "grade.correlation_length=100"],
    "aggressive_tracking": ["reference.accel_max=4", "reference.decel_max=5", "reference.jerk_max=6",
                            "reference.natural_freq=2", "reference.safety_fraction=0.9", "reward.w_track=10"],  # fmt: skip
    "agile_delay": ["reference.accel_max=4", "reference.decel_max=5", "reference.jerk_max=6", "reference.natural_freq=2",
                    "reference.safety_fraction=0.9", "reward.w_track=10", "randomization.actuation_delay=[0.0,0.3]"],  # fmt: skip
}
"""Task variants: overrides relative to ``env.vehicle`` (``reward.w_track=10`` is ``env.vehicle.reward.w_track``)."""
PID_GRID = {"kp": (0.1, 0.25, 0.5, 1.0), "ki": (0.02, 0.1, 0.3), "k_accel": (0.06, 0.12, 0.25, 0.4), "lookahead": (1, 2, 4)}
ORACLE_GRID = {"kp_accel": (0.1, 0.25, 0.5, 1.0, 2.0), "ki_accel": (0.0, 0.2, 0.5), "lookahead": (1, 2),
               "noise_filter": (0.25, 0.5)}  # fmt: skip
TERMS = ("track", "energy", "jerk", "smooth")
MAP_CONTROLLERS = {"map": "smoothed", "map_basis": "basis"}
"""The oracle controller on an estimated map: label → ``context.reconstruction``."""


def variant_config(overrides: list[str]) -> VehicleConfig:
    return config_from({"env": {"kind": "vehicle"}}, "task_headroom", [f"env.vehicle.{o}" for o in overrides]).env.vehicle


class PIDDriver:
    """The shipped PID with the given gains."""

    def __init__(self, gains: dict) -> None:
        self.gains = gains

    def start(self, env: VehicleVectorEnv) -> None:
        self.pid = PIDController(env.num_envs, PIDGains(**self.gains), env.config.dt)

    def __call__(self, obs: np.ndarray, env: VehicleVectorEnv) -> np.ndarray:
        return self.pid(obs)

    def observe(self, samples: np.ndarray) -> None:
        """The step's dynamics samples (a PID uses none)."""


class OracleDriver:
    """The map controller as ``env.vehicle.action: residual_map`` runs it (``actors.vehicle.residual.MapFeedForward``,
    a zero correction) on each vehicle's true map ``a(u, v)``."""

    def __init__(self, gains: dict) -> None:
        self.gains = MapControlGains(**gains)

    def start(self, env: VehicleVectorEnv) -> None:
        self.source = self.map_source(env)
        self.base = MapFeedForward(env.num_envs, self.source, self.gains, env.config.dt)

    def __call__(self, obs: np.ndarray, env: VehicleVectorEnv) -> np.ndarray:
        return self.base(obs)

    @property
    def maps(self) -> np.ndarray:
        """The maps the controller inverts now, ``[n, U, V]``."""
        return self.source.maps()

    def map_source(self, env: VehicleVectorEnv) -> MapSource:
        return TrueMaps(env)

    def observe(self, samples: np.ndarray) -> None:
        """The step's dynamics samples (the true map needs none)."""


class MapDriver(OracleDriver):
    """``OracleDriver`` on each vehicle's map as the dynamics-map context estimates it from the episode's samples
    (``reconstruction``: the context's ``smoothed`` or ``basis`` reconstruction, its other settings the defaults)."""

    def __init__(self, gains: dict, reconstruction: str = "smoothed") -> None:
        super().__init__(gains)
        self.context = ContextConfig(mode="dynamics_map", reconstruction=reconstruction)

    def map_source(self, env: VehicleVectorEnv) -> MapSource:
        """The context's estimate: the population-mean prior until samples come in."""
        self.provider = dynamics_map_context(self.context, env.config, env.num_envs, env.config.dt)
        return EstimatedMaps(self.provider)

    def observe(self, samples: np.ndarray) -> None:
        self.provider.observe(samples)


def drive(config: VehicleConfig, driver, vehicles: int, seed: int, steps: int) -> dict:
    """One episode on each of ``vehicles`` cars: mean return, mean |speed error| and the return split by term."""
    config = dataclasses.replace(config, episode_steps=steps)
    env = VehicleVectorEnv(vehicles, config, seed=seed)
    obs = env.reset(seed)
    driver.start(env)
    rc, n = config.reward, vehicles
    returns, errors, terms = np.zeros(n), np.zeros(n), dict.fromkeys(TERMS, 0.0)
    u_prev, a_prev = np.zeros(n), np.zeros(n)
    for t in range(steps):
        u = np.clip(np.nan_to_num(np.asarray(driver(obs, env), dtype=np.float64).reshape(n)), -1.0, 1.0)
        v0 = env.speed
        step = env.step(u.reshape(-1, 1))
        driver.observe(step.dynamics_samples)
        accel = (env.speed - v0) / config.dt
        terms["track"] += float(np.sum(rc.w_track * step.speed_error**2))
        terms["energy"] += float(np.sum(rc.w_action * np.abs(u)))
        if t < steps - 1:  # the last step's speed is already the next car's: its jerk goes to the rest
            terms["jerk"] += float(np.sum(rc.w_jerk * np.abs((accel - a_prev) / config.dt)))
        terms["smooth"] += float(np.sum(rc.w_smooth * np.abs(u - u_prev)))
        returns += step.reward
        errors += step.speed_error
        u_prev, a_prev, obs = u, accel, step.obs
    known = sum(terms.values())
    terms["rest"] = -float(returns.sum()) - known  # brake, stop, rolling back (and the last jerk), by difference
    return {"mean_return": float(returns.mean()), "mean_abs_speed_error": float((errors / steps).mean()),
            "cost_by_term": {k: v / n for k, v in terms.items()}}  # fmt: skip


def tune(config: VehicleConfig, make, grid: dict, vehicles: int, seed: int, steps: int) -> tuple[dict, dict]:
    """The grid point with the best mean return on the tuning vehicles."""
    best = None
    for values in itertools.product(*grid.values()):
        gains = dict(zip(grid, values, strict=True))
        score = drive(config, make(gains), vehicles, seed, steps)["mean_return"]
        if best is None or score > best[1]:
            best = (gains, score)
    return best[0], {"tuning_return": best[1], "grid_points": int(np.prod([len(v) for v in grid.values()]))}


def study_variant(name: str, args: argparse.Namespace) -> dict:
    config = variant_config(VARIANTS[name])
    started = time.monotonic()
    tuned = {}
    for label, make, grid in (("pid", PIDDriver, PID_GRID), ("oracle", OracleDriver, ORACLE_GRID)):
        gains, info = tune(config, make, grid, args.tune_vehicles, args.tune_seed, args.tune_steps)
        held_out = drive(config, make(gains), args.episodes, HELD_OUT_SEED, config.episode_steps)
        tuned[label] = {"gains": gains, **info, **held_out}
    for label, reconstruction in MAP_CONTROLLERS.items():  # the oracle's gains: only the map differs
        driver = MapDriver(tuned["oracle"]["gains"], reconstruction)
        tuned[label] = {"gains": tuned["oracle"]["gains"], "reconstruction": reconstruction,
                        **drive(config, driver, args.episodes, HELD_OUT_SEED, config.episode_steps)}  # fmt: skip
    shipped = drive(config, PIDDriver({}), args.episodes, HELD_OUT_SEED, config.episode_steps)
    pid, oracle = tuned["pid"], tuned["oracle"]
    row = {
        "overrides": VARIANTS[name], "shipped_pid": shipped, **tuned,
        "oracle_return_gain": (oracle["mean_return"] - pid["mean_return"]) / abs(pid["mean_return"]),
        "oracle_error_gain": (pid["mean_abs_speed_error"] - oracle["mean_abs_speed_error"]) / pid["mean_abs_speed_error"],
    }  # fmt: skip
    for label in MAP_CONTROLLERS:
        for metric, key in (("return", "mean_return"), ("error", "mean_abs_speed_error")):
            row[f"{label}_share_of_oracle_{metric}_gain"] = share(pid[key], oracle[key], tuned[label][key])
    row["seconds"] = time.monotonic() - started
    maps = "; ".join(f"{label} {fmt(tuned[label]['mean_return'])} / {tuned[label]['mean_abs_speed_error']:.3f} m/s: "
                     f"{100 * row[f'{label}_share_of_oracle_return_gain']:.0f} % / "
                     f"{100 * row[f'{label}_share_of_oracle_error_gain']:.0f} % of the oracle's gain" for label in MAP_CONTROLLERS)  # fmt: skip
    print(f"{name}: PID {fmt(pid['mean_return'])} / {pid['mean_abs_speed_error']:.3f} m/s, oracle "
          f"{fmt(oracle['mean_return'])} / {oracle['mean_abs_speed_error']:.3f} m/s: return "
          f"{100 * row['oracle_return_gain']:+.1f} %, error {100 * row['oracle_error_gain']:+.1f} %; {maps} "
          f"({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    return row


def share(baseline: float, oracle: float, estimated: float) -> float:
    """How much of the oracle's improvement on ``baseline`` the estimate keeps (1: all of it; NaN without a gain)."""
    return (estimated - baseline) / (oracle - baseline) if oracle != baseline else float("nan")


def markdown(report: dict) -> str:
    lines = ["# Task headroom: does knowing the vehicle pay on the vehicle task?", "",
             f"{machine_line(report['machine'])}.  ", f"Command: `{report['command']}`", "",
             f"Both controllers grid-tuned for return on {report['tune_vehicles']} training vehicles (env seed "
             f"{report['tune_seed']}, {report['tune_steps']}-step episodes), then scored on {report['episodes']} "
             f"held-out vehicles (env seed {HELD_OUT_SEED}, full episodes).", "",
             "| variant | overrides (env.vehicle.*) | shipped PID: return / abs err | tuned PID: return / abs err | "
             "oracle: return / abs err | oracle gain: return / error | "
             + "".join(f"{label} ({reconstruction} map, estimated online): return / abs err | its share of the oracle's "
                       "gain: return / error | " for label, reconstruction in MAP_CONTROLLERS.items()),
             "|---|---|---|---|---|---|" + "---|---|" * len(MAP_CONTROLLERS)]  # fmt: skip
    for name, r in report["variants"].items():
        s, p, o = r["shipped_pid"], r["pid"], r["oracle"]
        lines.append(f"| {name} | {', '.join(r['overrides']) or '-'} | {fmt(s['mean_return'])} / "
                     f"{s['mean_abs_speed_error']:.3f} | {fmt(p['mean_return'])} / {p['mean_abs_speed_error']:.3f} | "
                     f"{fmt(o['mean_return'])} / {o['mean_abs_speed_error']:.3f} | "
                     f"{100 * r['oracle_return_gain']:+.1f} % / {100 * r['oracle_error_gain']:+.1f} % | "
                     + " | ".join(map_cells(r, label) for label in MAP_CONTROLLERS) + " |")  # fmt: skip
    lines += ["", "Cost per episode by reward term (tuned PID, held-out):", "",
              "| variant | " + " | ".join(next(iter(report["variants"].values()))["pid"]["cost_by_term"]) + " |",
              "|---|" + "---|" * len(next(iter(report["variants"].values()))["pid"]["cost_by_term"])]  # fmt: skip
    for name, r in report["variants"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(v) for v in r["pid"]["cost_by_term"].values()) + " |")
    lines += ["", "Tuned gains:", ""]
    lines += [f"- {name}: PID {r['pid']['gains']}; oracle {r['oracle']['gains']}" for name, r in report["variants"].items()]
    return "\n".join(lines + [""])


def map_cells(row: dict, label: str) -> str:
    """A map controller's cells of a variant's row (a report from before it: dashes)."""
    if label not in row:
        return "- | -"
    m = row[label]
    return (f"{fmt(m['mean_return'])} / {m['mean_abs_speed_error']:.3f} | "
            f"{100 * row[f'{label}_share_of_oracle_return_gain']:.0f} % / "
            f"{100 * row[f'{label}_share_of_oracle_error_gain']:.0f} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--episodes", type=int, default=32, help="held-out vehicles")
    parser.add_argument("--tune-vehicles", type=int, default=16)
    parser.add_argument("--tune-seed", type=int, default=515_151)
    parser.add_argument("--tune-steps", type=int, default=2048, help="steps per tuning episode (a full episode)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="variants studied at once")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    report = {"benchmark": "task_headroom", "command": command_line(), "machine": machine(),
              "episodes": args.episodes, "tune_vehicles": args.tune_vehicles, "tune_seed": args.tune_seed,
              "tune_steps": args.tune_steps}  # fmt: skip
    with cf.ProcessPoolExecutor(max_workers=min(args.workers, len(args.variants))) as pool:
        rows = list(pool.map(study_variant, args.variants, [args] * len(args.variants)))
    report["variants"] = dict(zip(args.variants, rows, strict=True))
    path = write_report(args.out, "task_headroom", report, markdown(report))
    print(markdown(report))
    print(f"wrote task_headroom.json, {path.name} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
