"""Pieces every driver shares: the run directory, the schedule, progress lines, stopping, the run record."""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.config import Config, ConfigError, config_to_yaml
from learner.checkpoint import CheckpointError
from learner.metrics import MetricsPortInUseError
from learner.safety import NonFiniteStop
from learner.service import Progress, Schedule

log = logging.getLogger("dmsac")


class LearnerStartError(RuntimeError):
    """The learner could not start (its port taken, no GPU for ``learner.device: cuda``, ...): exit 2."""


class CapacityError(RuntimeError):
    """The cluster cannot give the job what it needs (actors gone, resources never available): exit 3."""


class SecondSignal(KeyboardInterrupt):
    """A second SIGINT/SIGTERM during a graceful stop: give it up, exit 130."""


def exit_code_for(err: BaseException) -> int:
    """The documented exit code of an error that ends a run (README, "Progress, stopping, exit codes")."""
    if isinstance(err, (ConfigError, CheckpointError, MetricsPortInUseError, LearnerStartError)):
        return 2
    if isinstance(err, CapacityError):
        return 3
    if isinstance(err, NonFiniteStop):
        return 4
    if isinstance(err, KeyboardInterrupt):
        return 130
    return 1


def make_schedule(config: Config) -> Schedule:
    return Schedule(
        warmup_steps=config.train.warmup_steps,
        update_to_data=config.train.update_to_data,
        block_updates=config.learner.block_updates,
        broadcast_every=config.learner.broadcast_every,
        batch_size=config.learner.batch_size,
        checkpoint_every=config.checkpoint.every_env_steps,
    )


def prepare_run_dir(config: Config) -> Path:
    run_dir = Path(config.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(config))
    return run_dir


def prepare_run_dirs(config: Config, configs: list[Config]) -> tuple[Path, list[Path]]:
    """The job's directory and its runs' (``run_configs``): a job of one run is that run, in the job's directory
    with the run's own config.yaml; several runs each get ``<run_dir>/runs/<k>``."""
    if len(configs) == 1:
        run_dir = prepare_run_dir(configs[0])
        return run_dir, [run_dir]
    return prepare_run_dir(config), [prepare_run_dir(c) for c in configs]


def format_progress(progress: Progress, extra: str = "") -> str:
    recent = "n/a" if math.isnan(progress.recent_return) else f"{progress.recent_return:.1f}"
    checkpoint = progress.last_checkpoint_step if progress.last_checkpoint_step >= 0 else "none"
    line = (
        f"env_steps={progress.env_steps} updates={progress.updates} updates/s={progress.updates_per_second:.1f} "
        f"utd={progress.update_to_data:.2f} recent_return={recent} episodes={progress.episodes} "
        f"weights_v={progress.weights_version} replay={progress.replay_size} last_ckpt={checkpoint}"
    )
    return f"{line}{warning_signs(progress.warnings)} {extra}".rstrip()


def run_label(run: int, runs: int) -> str:
    """How a progress line names its run in a job of several (``train.parallel_runs``)."""
    return f"run {run}: " if runs > 1 else ""


def warning_signs(holding: dict[str, tuple[float, float]]) -> str:
    """`` WARN |q_mean|=2.1e+07>1e+04 q_std=7e+06>5e+03`` for the signs holding now (empty when none)."""
    signs = [f"{'|q_mean|' if name == 'q_mean' else name}={value:.3g}>{limit:.3g}" for name, (value, limit) in holding.items()]
    return f" WARN {' '.join(signs)}" if signs else ""


class RunRecord:
    """What a run reports on every way out: the done line and ``final_stats.json``.

    ``start`` is the learner's progress when this process began training (a
    resume starts from its checkpoint's counters): rates count this process's work only.
    """

    def __init__(self, run_dir: Path, start: Progress, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = run_dir
        self.clock = clock
        self.started = clock()
        self.start = start
        self.latest = start
        self.history: list[tuple[int, float, float]] = []
        """``(env_steps, recent_return, seconds since this process began training)``, one per env-step count."""
        self.extra: dict = {}
        """Driver-specific sections of the summary (the Ray fleet)."""

    def update(self, progress: Progress) -> None:
        self.latest = progress
        fresh = not self.history or self.history[-1][0] != progress.env_steps
        if fresh and not math.isnan(progress.recent_return):
            self.history.append((progress.env_steps, progress.recent_return, round(self.wall_seconds, 3)))

    @property
    def wall_seconds(self) -> float:
        return self.clock() - self.started

    def mean_update_rate(self) -> float:
        wall = self.wall_seconds
        return (self.latest.updates - self.start.updates) / wall if wall > 0 else 0.0

    def done_line(self, checkpoint: Path | str | None) -> str:
        """The last progress line, with this process's mean update rate (the instantaneous one reads 0 at the end)."""
        return (
            f"done: {format_progress(self.latest)} mean_updates/s={self.mean_update_rate():.1f} "
            f"wall_s={self.wall_seconds:.0f}; final checkpoint {checkpoint or 'none'}"
        )

    def summary(self, exit_code: int, reason: str = "") -> dict:
        p = self.latest
        return {
            "exit_code": exit_code,
            "exit_reason": reason,
            "env_steps": p.env_steps,
            "updates": p.updates,
            "episodes": p.episodes,
            "recent_return": p.recent_return,
            "weights_version": p.weights_version,
            "replay_size": p.replay_size,
            "wall_seconds": self.wall_seconds,
            "env_steps_this_run": p.env_steps - self.start.env_steps,
            "updates_this_run": p.updates - self.start.updates,
            "mean_updates_per_second_this_run": self.mean_update_rate(),
            "stop_requested_at_update": p.stop_requested_at_update,
            "last_stats": p.last_stats.as_dict() if p.last_stats else {},
            "counters": p.counters,
            "transitions_rejected": p.transitions_rejected,
            "context_fallbacks": p.context_fallbacks,
            "remedies": p.remedies,
            "last_checkpoint_step": p.last_checkpoint_step,
            "learner_seconds": p.phase_seconds,
            "return_curve": [list(point) for point in self.history],
            **self.extra,
        }

    def write(self, exit_code: int, reason: str = "") -> dict:
        summary = self.summary(exit_code, reason)
        write_summary(self.run_dir, summary)
        return summary


@contextmanager
def recorded(run_dir: Path, record_of: Callable[[], RunRecord | None]) -> Iterator[None]:
    """Write ``final_stats.json`` with the exit code of whatever error ends the run (the caller writes exit 0)."""
    try:
        yield
    except BaseException as err:
        record, reason = record_of(), str(err) or type(err).__name__
        if record is None:  # it ended before training started
            write_summary(run_dir, {"exit_code": exit_code_for(err), "exit_reason": reason})
        else:
            record.write(exit_code_for(err), reason)
        raise


def write_summary(run_dir: Path, summary: dict) -> Path:
    path = run_dir / "final_stats.json"
    path.write_text(json.dumps(summary, indent=2, allow_nan=True))
    return path


class Stopper:
    """Turns SIGTERM (preemption, ``ray job stop``) and Ctrl-C into a graceful stop; a second signal ends it at once.

    ``on_request`` runs inside the signal handler: it must only set flags.
    """

    def __init__(self, on_request: Callable[[], None] | None = None) -> None:
        self.requested = False
        self.on_request = on_request
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            raise SecondSignal(f"second {name}: stopped at once, without a final checkpoint")
        self.requested = True
        if self.on_request is not None:
            self.on_request()
        log.warning(
            "%s received: no new updates; storing the fragments in flight, then a final checkpoint "
            "(send it again to stop at once)",
            name,
        )

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
