"""Pieces every driver shares: the run directory, the schedule, progress lines, the summary."""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
from pathlib import Path

from cluster.config import Config, config_to_yaml
from learner.service import Progress, Schedule

log = logging.getLogger("dmsac")


class LearnerStartError(RuntimeError):
    """The learner could not start (its port taken, no GPU for ``learner.device: cuda``, ...): exit 2."""


def make_schedule(config: Config) -> Schedule:
    return Schedule(
        warmup_steps=config.train.warmup_steps,
        update_to_data=config.train.update_to_data,
        block_updates=config.learner.block_updates,
        broadcast_every=config.learner.broadcast_every,
        batch_size=config.learner.batch_size,
        max_policy_lag=config.learner.max_policy_lag,
        checkpoint_every=config.checkpoint.every_env_steps,
    )


def prepare_run_dir(config: Config) -> Path:
    run_dir = Path(config.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(config))
    return run_dir


def format_progress(progress: Progress, extra: str = "") -> str:
    recent = "n/a" if math.isnan(progress.recent_return) else f"{progress.recent_return:.1f}"
    checkpoint = progress.last_checkpoint_step if progress.last_checkpoint_step >= 0 else "none"
    line = (
        f"env_steps={progress.env_steps} updates={progress.updates} updates/s={progress.updates_per_second:.1f} "
        f"utd={progress.update_to_data:.2f} recent_return={recent} episodes={progress.episodes} "
        f"weights_v={progress.weights_version} replay={progress.replay_size} last_ckpt={checkpoint}"
    )
    return f"{line} {extra}".rstrip()


def done_line(progress: Progress, wall_seconds: float, checkpoint) -> str:
    """The last progress line: the whole run's mean update rate (the instantaneous one is 0 once training ends)."""
    mean_rate = progress.updates / wall_seconds if wall_seconds > 0 else 0.0
    return f"done: {format_progress(progress)} mean_updates/s={mean_rate:.1f} wall_s={wall_seconds:.0f}; final checkpoint {checkpoint}"


def summary_dict(progress: Progress, wall_seconds: float, history: list[tuple[int, float]]) -> dict:
    stats = progress.last_stats.as_dict() if progress.last_stats else {}
    return {
        "env_steps": progress.env_steps,
        "updates": progress.updates,
        "episodes": progress.episodes,
        "recent_return": progress.recent_return,
        "weights_version": progress.weights_version,
        "wall_seconds": wall_seconds,
        "last_stats": stats,
        "counters": progress.counters,
        "remedies": progress.remedies,
        "last_checkpoint_step": progress.last_checkpoint_step,
        "return_curve": [[step, value] for step, value in history],
    }


def write_summary(run_dir: Path, summary: dict) -> Path:
    path = run_dir / "final_stats.json"
    path.write_text(json.dumps(summary, indent=2, allow_nan=True))
    return path


class Stopper:
    """Turns SIGTERM (preemption, ``ray job stop``) and Ctrl-C into a request to stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: give up on the graceful path
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s received: finishing the current step, then a final checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
