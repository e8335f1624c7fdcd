"""In-process SAC training for the learning benchmarks (``soak.py``, ``context_benefit.py``).

The loop is ``cluster.local.steps``, the one ``run_local`` drives: one rollout worker
and the learner service in this process, no Ray. This module adds the trace the
benchmarks need and the summary does not keep: one row per fragment with the
learner's health over the blocks of that fragment (Q mean/std, pre-clip gradient
norms, alpha, clip counts, NaN counters, reward scale and learning rate in force),
the fragment's mean unscaled reward per step, and every finished episode. The
Prometheus endpoint is not started.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actors.worker import RolloutWorker
from cluster.config import Config
from cluster.factory import make_learner_service
from cluster.local import Step, start_worker, steps
from learner.safety import NonFiniteStop
from learner.service import LearnerService
from learner.types import UpdateStats, VersionedWeights

log = logging.getLogger("bench")
NEVER = 10**12
"""``checkpoint.every_env_steps`` beyond any budget: no regular checkpoints during a benchmark run."""


def plumbing_overrides(run_dir: str | Path, total_env_steps: int, device: str) -> list[str]:
    """Overrides that place the run (in-process, temp dir, loopback metrics, no regular checkpoints); no hyperparameter."""
    return [
        "cluster.mode=local",
        "metrics.port=0",
        "metrics.bind_address=127.0.0.1",
        f"train.total_env_steps={total_env_steps}",
        f"train.run_dir={run_dir}",
        f"learner.device={device}",
        f"checkpoint.every_env_steps={NEVER}",
        "checkpoint.save_replay=false",
    ]


def hyperparameters(config: Config) -> dict:
    """The settings in force that decide the learning (for the report)."""
    lc, tc, cc = config.learner, config.train, config.context
    return {
        "lr": lc.lr, "tau": lc.tau, "gamma": lc.gamma, "max_grad_norm": lc.max_grad_norm,
        "reward_scale": lc.reward_scale, "batch_size": lc.batch_size, "hidden_sizes": list(lc.hidden_sizes),
        "temperature": lc.temperature, "initial_alpha": lc.initial_alpha, "warmup_steps": tc.warmup_steps,
        "update_to_data": tc.update_to_data, "replay_capacity": config.replay.capacity,
        "num_envs": config.env.num_envs, "steps_per_fragment": config.rollout.steps_per_fragment,
        "context_mode": cc.mode, "encoder": cc.encoder if cc.mode != "none" else "-",
        "on_nan": config.safety.on_nan, "fast_path": lc.fast_path,
    }  # fmt: skip


def block_summary(blocks: list[UpdateStats]) -> dict:
    """One fragment's learner health: last values, extremes over its blocks, summed counts."""
    if not blocks:
        return {"blocks": 0}
    last = blocks[-1]

    def top(name: str, key=abs) -> float:
        return max((key(getattr(b, name)) for b in blocks), default=math.nan)

    return {
        "blocks": len(blocks),
        "q_mean": last.q_mean, "q_mean_abs_max": top("q_mean"), "q_std": last.q_std, "q_std_max": top("q_std"),
        "policy_grad_norm": last.policy_grad_norm, "policy_grad_norm_max": top("policy_grad_norm"),
        "q_grad_norm": last.q_grad_norm, "q_grad_norm_max": top("q_grad_norm"),
        "alpha": last.alpha, "policy_loss": last.policy_loss, "q_loss": last.q_loss,
        "policy_clipped": sum(b.policy_clipped for b in blocks), "q_clipped": sum(b.q_clipped for b in blocks),
        "nonfinite": sum(b.nonfinite_loss + b.nonfinite_grad + b.nonfinite_q for b in blocks),
    }  # fmt: skip


@dataclass
class TrainResult:
    """What one benchmark training run leaves: its trace and summary, the final gated weights."""

    rows: list[dict] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    weights: VersionedWeights | None = None


class Totals:
    """Run-wide extremes and sums over every block after the warm-up."""

    def __init__(self) -> None:
        self.values = {"max_abs_q_mean": 0.0, "max_q_std": 0.0, "max_policy_grad_norm": 0.0, "max_q_grad_norm": 0.0}
        self.counts = {"policy_clipped": 0, "q_clipped": 0, "nonfinite": 0, "context_fallbacks": 0, "rejected": 0}

    def add(self, blocks: list[UpdateStats], fragment) -> None:
        for b in blocks:
            for key, value in (("max_abs_q_mean", abs(b.q_mean)), ("max_q_std", b.q_std),
                               ("max_policy_grad_norm", b.policy_grad_norm), ("max_q_grad_norm", b.q_grad_norm)):  # fmt: skip
                # NaN compares False: keep it visible instead of silently skipping it
                self.values[key] = value if math.isnan(value) or value > self.values[key] else self.values[key]
            self.counts["policy_clipped"] += b.policy_clipped
            self.counts["q_clipped"] += b.q_clipped
            self.counts["nonfinite"] += b.nonfinite_loss + b.nonfinite_grad + b.nonfinite_q
        self.counts["context_fallbacks"] += sum(fragment.context_fallbacks.values())
        self.counts["rejected"] += sum(fragment.rejected.values())


class Run:
    """One in-process training run: ``cluster.local.steps``, traced per fragment."""

    def __init__(self, config: Config, label: str) -> None:
        self.config, self.label = config, label
        self.service = make_learner_service(config, serve_metrics=False)
        self.worker = start_worker(config, self.service)
        self.result, self.totals = TrainResult(), Totals()
        self.started = time.monotonic()
        self.rollout_s = self.learn_s = 0.0

    def trace(self, step: Step) -> None:
        self.rollout_s += step.rollout_seconds
        self.learn_s += step.learner_seconds
        blocks = list(step.report.blocks)
        self.totals.add(blocks, step.fragment)
        wall = time.monotonic() - self.started
        row = trace_row(self.service, step.fragment, blocks, step.random_actions, wall, self.rollout_s, self.learn_s)
        self.result.rows.append(row)
        for episode in step.fragment.episodes:
            self.result.episodes.append({"env_steps": row["env_steps"], "return": episode.episode_return,
                                         "length": episode.length, "mean_abs_speed_error": episode.mean_abs_speed_error})  # fmt: skip

    def finish(self, stopped: str) -> TrainResult:
        """The final gated weights (the worker's where the gate refuses or training broke) and the summary."""
        wall = time.monotonic() - self.started
        broken = stopped.startswith("error")
        self.result.weights = (None if broken else self.service.broadcast()) or worker_weights(self.worker)
        self.result.summary = run_summary(self.service, self.totals, wall, self.rollout_s, self.learn_s, stopped)
        return self.result


def train(config: Config, deadline: float | None = None, label: str = "", log_every: float = 30.0) -> TrainResult:
    """Train until ``train.total_env_steps`` or the wall-clock ``deadline`` (``time.time()``); trace every fragment."""
    run = Run(config, label)
    log.info("%s training on %s: %d env steps", label, run.service.learner.device, config.train.total_env_steps)
    past_deadline = lambda: deadline is not None and time.time() >= deadline  # noqa: E731
    stopped, last_log = "budget", time.monotonic()
    try:
        for step in steps(config, run.service, run.worker, past_deadline):
            run.trace(step)
            if time.monotonic() - last_log >= log_every:
                last_log = time.monotonic()
                log.info("%s %s", label, progress_line(run.result.rows[-1]))
        stopped = "wall" if past_deadline() else "budget"
    except NonFiniteStop as err:
        stopped = f"nonfinite_stop: {err}"
    except Exception as err:  # noqa: BLE001 - keep the trace so far and report the error
        log.exception("%s training failed", label)
        stopped = f"error: {type(err).__name__}: {err}"
    result = run.finish(stopped)
    log.info("%s done (%s): %s", label, stopped, progress_line(result.rows[-1]) if result.rows else "no fragment")
    return result


def trace_row(service: LearnerService, fragment, blocks, warming: bool, wall: float, rollout_s: float, learn_s: float):
    counters = service.all_counters()
    reward_scale, lr = service.learner.rates()
    return {
        "env_steps": service.learner.env_steps, "updates": service.learner.updates_done, "wall_s": round(wall, 3),
        "rollout_s": round(rollout_s, 3), "learn_s": round(learn_s, 3), "random_actions": warming,
        "reward_per_step": float(np.mean(fragment.reward)), "episodes": len(fragment.episodes),
        "nan_blocks": counters["nan_blocks"], "rollbacks": counters["rollbacks"],
        "reward_scale": reward_scale, "lr": lr, **block_summary(blocks),
    }  # fmt: skip


def progress_line(row: dict) -> str:
    q = f"q_mean={row['q_mean']:.3g} q_std={row['q_std']:.3g} alpha={row['alpha']:.3g} " if row.get("blocks") else ""
    return (
        f"env_steps={row['env_steps']} updates={row['updates']} reward/step={row['reward_per_step']:.4g} {q}"
        f"nan_blocks={row['nan_blocks']} rollbacks={row['rollbacks']} wall={row['wall_s']:.0f}s"
    )


def worker_weights(worker: RolloutWorker) -> VersionedWeights:
    """The worker's policy as weights (when the final broadcast is refused by the gate)."""
    tensors = {k: v.clone() for k, v in worker.policy.network.state_dict().items()}
    return VersionedWeights(worker.policy.version, tensors, "")


def run_summary(service: LearnerService, totals: Totals, wall: float, rollout_s: float, learn_s: float, stopped: str):
    progress = service.progress()
    updates = max(progress.updates, 1)
    return {
        "env_steps": progress.env_steps, "updates": progress.updates, "episodes": progress.episodes,
        "wall_s": wall, "rollout_s": rollout_s, "learn_s": learn_s, "stopped": stopped,
        "env_steps_per_s": progress.env_steps / wall if wall else math.nan,
        "updates_per_s_in_learner": progress.updates / learn_s if learn_s else math.nan,
        "counters": dict(progress.counters), "remedies": dict(progress.remedies),
        "reward_scale_final": service.learner.rates()[0],
        "lr_final": service.learner.rates()[1],
        "last_stats": progress.last_stats.as_dict() if progress.last_stats else {},
        **totals.values, **totals.counts,
        "policy_clip_fraction": totals.counts["policy_clipped"] / updates,
        "q_clip_fraction": totals.counts["q_clipped"] / updates,
    }  # fmt: skip


# -- deterministic evaluation with the trained context provider (cluster.evaluate's) -----------------------


def evaluate_sac(config: Config, weights: VersionedWeights, episodes: int, seed: int) -> dict:
    """Deterministic policy on ``episodes`` held-out vehicles (env seed ``seed``), context built as in training."""
    from cluster.evaluate import evaluate_trained

    return report_dict(evaluate_trained(config, weights.tensors, episodes, seed))


def evaluate_pid(config: Config, episodes: int, seed: int) -> dict:
    """The shipped PID baseline on the same held-out vehicles."""
    from cluster.evaluate import evaluate_baseline

    return report_dict(evaluate_baseline(config, "pid", episodes, seed))


def report_dict(report) -> dict:
    return {
        "episodes": report.episodes, "mean_abs_speed_error": report.mean_abs_speed_error,
        "mean_return": report.mean_return, "std_return": report.std_return,
        "mean_abs_jerk": report.mean_abs_jerk, "mean_abs_action_change": report.mean_abs_action_change,
    }  # fmt: skip
