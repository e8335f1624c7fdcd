"""Score a trained checkpoint, or a baseline policy, on held-out environments.

    python -m cluster.evaluate --checkpoint PATH|RUN_DIR [--episodes 32] [--seed N]
                               [--baseline pid|random|base ...|none] [--report DIR] [--set key=value ...]
    python -m cluster.evaluate --config FILE --policy pid|random|base [--episodes N] [--seed S] [--set key=value ...]

``--checkpoint`` loads the policy (``weights_only=True``, every file's sha256 checked) and the
config it trained with, rebuilds that run's context provider, and drives the deterministic
policy (its mean action) on ``--episodes`` held-out vehicles, one episode each, and the
baseline on the same vehicles. Held out: the env seed is none a training actor, the prior map
or the encoder's pretraining used. A bad path, a checkpoint that fails verification or a
config this code cannot rebuild exits 2 with the reason. ``base``: under a residual action
(``env.vehicle.action: residual_pid | residual_map``) the run's own base controller alone, a zero correction,
its context built and reset as the policy's is: what the residual adds is the difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from actors.envs import VectorEnv
from actors.vehicle.evaluation import ContextPolicy, EvalReport, ObservingEnv, Policy, evaluate_policy
from cluster.config import Config, ConfigError, config_from, load_config
from learner.checkpoint import CheckpointError, load_checkpoint
from learner.checkpoint_io import verify_dir
from learner.checkpoint_read import last_good_under

log = logging.getLogger(__name__)
PolicyBuilder = Callable[[Config, VectorEnv, argparse.Namespace], Policy]
HELD_OUT_SEED = 7_770_001
"""Default env seed of the held-out vehicles (checked against the run's own seeds)."""
PRETRAIN_SEEDS = range(50_000, 100_000)
"""Env seeds ``python -m cluster.pretrain_encoder`` draws its training and validation vehicles from."""
TRACES = 4
"""Vehicles whose speed and reference the report draws."""


def pid_policy(config: Config, env: VectorEnv, args: argparse.Namespace) -> Policy:
    if config.env.kind != "vehicle":
        raise ValueError("the pid policy drives the vehicle environment only (env.kind: vehicle)")
    from actors.vehicle.pid import PIDController

    return PIDController(env.num_envs, config.env.vehicle.pid, config.env.vehicle.dt)


def random_policy(config: Config, env: VectorEnv, args: argparse.Namespace) -> Policy:
    rng = np.random.default_rng(args.seed + 1)
    shape = (env.num_envs, env.action_dim)
    return lambda obs: rng.uniform(env.action_low, env.action_high, shape)


POLICIES: dict[str, PolicyBuilder] = {"pid": pid_policy, "random": random_policy}
"""Policy name → builder (driving the vehicle directly); the CLI accepts these names and ``BASE``."""
BASE = "base"
"""The run's base controller under its residual action, alone (``evaluate_base``)."""


class ZeroCorrection:
    """A residual policy that corrects nothing; it resets the context at new vehicles as a trained policy does."""

    def __init__(self, provider, env: VectorEnv) -> None:
        self.provider, self.zeros = provider, np.zeros((env.num_envs, env.action_dim), np.float32)

    def reset(self, env_ids: np.ndarray) -> None:
        self.provider.reset(np.asarray(env_ids))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.zeros


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.evaluate", description="Evaluate a policy.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="PATH|RUN_DIR", help="a checkpoint, or a run directory (its last good)")
    source.add_argument("--config", help="YAML config, e.g. configs/vehicle.yaml (with --policy)")
    parser.add_argument("--policy", choices=[*sorted(POLICIES), BASE], help="with --config: which baseline policy to run")
    parser.add_argument("--baseline", nargs="+", choices=[*sorted(POLICIES), BASE, "none"], default=None,
                        help="with --checkpoint: the baselines on the same vehicles (default pid for the vehicle env; "
                             "base: the run's base controller alone, under a residual action)")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=None, help="episodes, one per vehicle (default 32; 10 with --policy)")
    parser.add_argument("--seed", type=int, default=None, help=f"env seed (default {HELD_OUT_SEED}; 0 with --policy)")
    parser.add_argument("--num-envs", type=int, default=None, help="environments stepped together (default: episodes, at most 64)")
    parser.add_argument("--report", type=Path, default=None, metavar="DIR", help="with --checkpoint: write report.md (and PNGs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set env.vehicle.episode_steps=512 (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.config and not args.policy:
        parser.error("--config needs --policy pid|random (or use --checkpoint)")
    if args.checkpoint and args.policy:
        parser.error("--policy goes with --config; with --checkpoint the baseline is --baseline")
    args.episodes = args.episodes if args.episodes is not None else (32 if args.checkpoint else 10)
    args.seed = args.seed if args.seed is not None else (HELD_OUT_SEED if args.checkpoint else 0)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.baseline and "none" in args.baseline and len(args.baseline) > 1:
        parser.error("--baseline none goes alone")
    return args


def eval_num_envs(episodes: int, num_envs: int | None) -> int:
    """Environments stepped together: ``num_envs``, default the episodes, at most 64."""
    return num_envs or min(episodes, 64)


def with_num_envs(config: Config, num_envs: int) -> Config:
    return dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=num_envs))


def eval_env_and_context(config: Config, episodes: int, num_envs: int | None, seed: int):
    """The run's environments and context, as a worker has them."""
    from cluster.factory import make_env_and_context

    return make_env_and_context(with_num_envs(config, eval_num_envs(episodes, num_envs)), seed)


def make_eval_env(config: Config, num_envs: int, seed: int) -> VectorEnv:
    from cluster.factory import make_env

    return make_env(with_num_envs(config, num_envs), seed)


# -- a trained checkpoint ---------------------------------------------------------------------------


def trained_checkpoint(spec: str) -> Path:
    """The checkpoint ``--checkpoint`` names: a run or checkpoint directory's last good one, or that checkpoint,
    which must verify (evaluating another one than asked for would mislead)."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(f"--checkpoint {spec}: no such file or directory")
    found = last_good_under(path)
    if found is not None:
        return found
    runs = sorted(path.glob("runs/*/config.yaml"))
    if runs:
        raise CheckpointError(f"--checkpoint {spec}: a job of {len(runs)} parallel runs (train.parallel_runs); "
                              f"evaluate one of them, e.g. --checkpoint {runs[0].parent}")  # fmt: skip
    verdict = verify_dir(path)
    if not verdict.ok:
        raise CheckpointError(f"--checkpoint {spec}: {verdict.reason}")
    return path


def load_trained(path: Path, overrides: list[str]) -> tuple[Config, dict]:
    """The run's config (with ``overrides``) and its policy's tensors, from a verified checkpoint."""
    state = load_checkpoint(path).state
    data = yaml.safe_load(state.get("config_yaml") or "") or {}
    return config_from(data, f"{path} (the run's config)", overrides), state["learner"]["sac"]["actor"]


def check_held_out(config: Config, seed: int) -> None:
    """``seed`` must be no rollout actor's (first) env seed, nor the prior's, nor the encoder pretraining's."""
    from cluster.factory import actor_seed

    taken = {actor_seed(config, actor, 0) for actor in range(config.cluster.num_actors)}
    if seed in taken or seed == config.context.prior_seed or seed in PRETRAIN_SEEDS:
        raise ValueError(f"--seed {seed} is a training, prior or encoder-pretraining seed of this run; pick another")


def evaluate_trained(config: Config, actor: dict, episodes: int, seed: int, num_envs: int | None = None,
                     trace_envs: int = 0) -> EvalReport:  # fmt: skip
    """The deterministic policy on ``episodes`` environments of env seed ``seed``, its context built as in training."""
    from actors.context.base import policy_context_dim
    from actors.policy import PolicyCopy
    from learner.types import VersionedWeights

    env, provider = eval_env_and_context(config, episodes, num_envs, seed)
    in_dim = env.observation_dim + policy_context_dim(provider)
    policy = PolicyCopy(in_dim, env.action_dim, config.learner.hidden_sizes, seed)
    try:
        policy.load(VersionedWeights(1, actor, ""))
    except RuntimeError as err:  # tensor names or shapes the config's networks do not have
        raise ValueError(f"the checkpoint's policy does not fit the networks its config builds: {err}") from None
    return evaluate_policy(ObservingEnv(env, provider), ContextPolicy(policy, provider, env), episodes, seed=seed,
                           dt=step_seconds(config), trace_envs=trace_envs)  # fmt: skip


def evaluate_baseline(config: Config, name: str, episodes: int, seed: int, num_envs: int | None = None,
                      trace_envs: int = 0) -> EvalReport:  # fmt: skip
    """A baseline policy alone on the same vehicles (the vehicle env's commands direct, even for a residual run)."""
    from cluster.factory import direct_control

    config = direct_control(config)
    env = make_eval_env(config, eval_num_envs(episodes, num_envs), seed)
    policy = POLICIES[name](config, env, argparse.Namespace(seed=seed))
    return evaluate_policy(env, policy, episodes, seed=seed, dt=step_seconds(config), trace_envs=trace_envs)


def evaluate_base(config: Config, episodes: int, seed: int, num_envs: int | None = None,
                  trace_envs: int = 0) -> EvalReport:  # fmt: skip
    """The run's base controller alone on the same vehicles: its residual action with a zero correction, on the
    environments and context a trained policy of the run is evaluated on."""
    if config.env.kind != "vehicle" or config.env.vehicle.action == "direct":
        raise ValueError("the base policy is the base controller under a residual action (env.vehicle.action "
                         "residual_pid or residual_map); this config's action is the command itself")  # fmt: skip
    env, provider = eval_env_and_context(config, episodes, num_envs, seed)
    return evaluate_policy(ObservingEnv(env, provider), ZeroCorrection(provider, env), episodes, seed=seed,
                           dt=step_seconds(config), trace_envs=trace_envs)  # fmt: skip


def step_seconds(config: Config) -> float:
    return config.env.vehicle.dt if config.env.kind == "vehicle" else 1.0


# -- tables and the report --------------------------------------------------------------------------


def format_table(title: str, reports: dict[str, EvalReport]) -> str:
    """One column per policy; a gymnasium env's rows without figures show ``-``."""
    names = list(reports)
    rows = [[name for name, _ in next(iter(reports.values())).as_rows()]]
    rows += [[value for _, value in report.as_rows()] for report in reports.values()]
    width = max(len(label) for label in rows[0])
    lines = [title, "| " + "metric".ljust(width) + " | " + " | ".join(names) + " |",
             "|" + "-" * (width + 2) + "|" + "|".join("-" * (len(n) + 2) for n in names) + "|"]  # fmt: skip
    for i, label in enumerate(rows[0]):
        values = [column[i].replace("nan", "-") for column in rows[1:]]
        lines.append("| " + label.ljust(width) + " | " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_report(out: Path, title: str, reports: dict[str, EvalReport], vehicle: bool) -> list[Path]:
    """``report.md``, ``summary.json`` (each policy's figures), ``episodes.json`` (per episode), and with matplotlib
    the PNGs; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    per_episode = {name: {"return": list(r.episode_returns), "abs_speed_error": list(r.episode_errors)}
                   for name, r in reports.items()}  # fmt: skip
    (out / "episodes.json").write_text(json.dumps(per_episode, indent=1) + "\n")
    summary = {"title": title, "policies": {name: r.figures() for name, r in reports.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    pngs = plot_report(out, reports) if vehicle else []
    lines = [f"# {title}", "", format_table("", reports).strip(), ""]
    lines += [f"![{png.stem}]({png.name})" for png in pngs]
    if vehicle and not pngs:
        lines.append("(no figures: matplotlib is not installed; `pip install matplotlib`)")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return [out / "report.md", out / "summary.json", out / "episodes.json", *pngs]


def plot_report(out: Path, reports: dict[str, EvalReport]) -> list[Path]:
    """Speed vs reference for a few vehicles, the error distribution, and per-vehicle errors, policy vs baseline."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names, files = list(reports), []
    first = reports[names[0]]
    fig, axes = plt.subplots(len(first.traces), 1, figsize=(9, 2.2 * len(first.traces)), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(first.traces[i][:, 4], "k--", lw=1, label="reference")  # vehicle observation: v_ref[t] at 4
        for name in names:
            ax.plot(reports[name].traces[i][:, 0], lw=1, label=name)  # measured speed at 0
        ax.set_ylabel(f"vehicle {i}: m/s")
    axes[0, 0].legend(loc="upper right")
    axes[-1, 0].set_xlabel("control step")
    files.append(_save(fig, out / "speed_traces.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist([reports[n].episode_errors for n in names], bins=16, label=names)
    ax.set_xlabel("mean |v - v_ref| per vehicle (m/s)")
    ax.legend()
    files.append(_save(fig, out / "error_distribution.png"))
    if len(names) >= 2:  # the policy against the first baseline
        fig, ax = plt.subplots(figsize=(5, 5))
        x, y = reports[names[1]].episode_errors, reports[names[0]].episode_errors
        ax.scatter(x, y, s=12)
        top = max(max(x), max(y))
        ax.plot([0, top], [0, top], "k:", lw=1)
        ax.set_xlabel(f"{names[1]}: mean |v - v_ref| (m/s)")
        ax.set_ylabel(f"{names[0]}: mean |v - v_ref| (m/s)")
        files.append(_save(fig, out / "per_vehicle.png"))
    return files


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# -- the command ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_checkpoint(args) if args.checkpoint else run_baseline(args)
    except ConfigError as err:
        sys.stderr.write(f"config error: {err}\n")
        return 2
    except (CheckpointError, ValueError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2


def run_baseline(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.policy == BASE:
        report = evaluate_base(config, args.episodes, args.seed, args.num_envs)
    else:
        report = evaluate_baseline(config, args.policy, args.episodes, args.seed, args.num_envs)
    title = f"policy {args.policy} on {args.config}, {args.episodes} episodes, seed {args.seed}"
    sys.stdout.write(format_table(title, {args.policy: report}) + "\n")
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    path = trained_checkpoint(args.checkpoint)
    config, actor = load_trained(path, args.overrides)
    check_held_out(config, args.seed)
    vehicle = config.env.kind == "vehicle"
    baselines = [b for b in args.baseline or ["pid" if vehicle else "none"] if b != "none"]
    traces = TRACES if vehicle and args.report else 0
    reports = {"sac": evaluate_trained(config, actor, args.episodes, args.seed, args.num_envs, traces)}
    for name in baselines:
        reports[name] = (evaluate_base(config, args.episodes, args.seed, args.num_envs, traces) if name == BASE else
                         evaluate_baseline(config, name, args.episodes, args.seed, args.num_envs, traces))  # fmt: skip
    title = f"{path} on {args.episodes} held-out episodes (env seed {args.seed}), deterministic policy"
    sys.stdout.write(format_table(title, reports) + "\n")
    if not vehicle:
        sac = reports["sac"]
        sys.stdout.write(f"mean return {sac.mean_return:.1f} ± {sac.std_return:.1f}\n")
    if args.report:
        files = write_report(args.report, title, reports, vehicle)
        sys.stdout.write("wrote " + ", ".join(str(f) for f in files) + "\n")
    return 0 if all(math.isfinite(r.mean_return) for r in reports.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
