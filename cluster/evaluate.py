"""``python -m cluster.evaluate --config FILE --policy pid|random [--episodes N] [--seed S] [--set key=value ...]``.

Runs a policy on the configured environment for N episodes and prints mean
|speed error|, return and comfort figures. Policies are built by the
functions in ``POLICIES`` (name → builder); a new policy kind is one more entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

import numpy as np

from actors.envs import VectorEnv
from actors.vehicle.evaluation import EvalReport, Policy, evaluate_policy
from cluster.config import Config, ConfigError, load_config

PolicyBuilder = Callable[[Config, VectorEnv, argparse.Namespace], Policy]


def pid_policy(config: Config, env: VectorEnv, args: argparse.Namespace) -> Policy:
    if config.env.kind != "vehicle":
        raise ValueError("the pid policy drives the vehicle environment only (env.kind: vehicle)")
    from actors.vehicle.pid import PIDController, PIDGains

    return PIDController(env.num_envs, PIDGains(dt=config.env.vehicle.dt))


def random_policy(config: Config, env: VectorEnv, args: argparse.Namespace) -> Policy:
    rng = np.random.default_rng(args.seed + 1)
    shape = (env.num_envs, env.action_dim)
    return lambda obs: rng.uniform(env.action_low, env.action_high, shape)


POLICIES: dict[str, PolicyBuilder] = {"pid": pid_policy, "random": random_policy}
"""Policy name → builder; the CLI accepts exactly these names."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.evaluate", description="Evaluate a policy.")
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/vehicle.yaml")
    parser.add_argument("--policy", required=True, choices=sorted(POLICIES), help="which policy to run")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to evaluate (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="environment (and random policy) seed")
    parser.add_argument(
        "--num-envs", type=int, default=None, help="environments stepped together (default: episodes, at most 64)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set env.vehicle.episode_steps=512 (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    return args


def make_eval_env(config: Config, num_envs: int, seed: int) -> VectorEnv:
    from cluster.factory import make_env

    return make_env(dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=num_envs)), seed)


def format_table(title: str, report: EvalReport) -> str:
    rows = [("metric", "value"), *report.as_rows()]
    width = max(len(name) for name, _ in rows)
    lines = [title, f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows[1:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        sys.stderr.write(f"config error: {err}\n")
        return 2
    num_envs = args.num_envs or min(args.episodes, 64)
    env = make_eval_env(config, num_envs, args.seed)
    try:
        policy = POLICIES[args.policy](config, env, args)
    except ValueError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    dt = config.env.vehicle.dt if config.env.kind == "vehicle" else 1.0
    report = evaluate_policy(env, policy, args.episodes, seed=args.seed, dt=dt)
    title = f"policy {args.policy} on {args.config}, {args.episodes} episodes, seed {args.seed}"
    sys.stdout.write(format_table(title, report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
