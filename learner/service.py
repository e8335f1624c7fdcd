"""The learner's loop around ``Learner``: ingest, updates at the UTD ratio, NaN safety, checkpoints, broadcasts.

The same object runs in-process (``cluster.mode: local``) and inside the Ray
learner actor; only the shell differs. Every collaborator (checkpointer,
metrics exporter, NaN response) is passed in by the composition root.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from learner.checkpoint import Checkpointer, NonFiniteCheckpointError
from learner.learner import BlockResult, LaunchedResult, Learner
from learner.metrics import MetricsExporter, mean_return
from learner.safety import NonFiniteStop, Safety
from learner.tensorboard import ScalarLog
from learner.timing import PhaseTimes
from learner.types import CONTEXT_FALLBACK_REASONS, REJECTED_TRANSITION_REASONS, Fragment, UpdateStats, VersionedWeights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """When updates start, how many are due, and when to broadcast and checkpoint."""

    warmup_steps: int
    update_to_data: float
    block_updates: int
    broadcast_every: int
    batch_size: int
    checkpoint_every: int = 0
    """Environment steps between checkpoints (0: never)."""

    def updates_due(self, env_steps: int, updates_done: int, replay_size: int) -> int:
        """Updates owed: ``utd × (env_steps − warmup)`` minus those done (none before a full batch)."""
        if env_steps < self.warmup_steps or replay_size < self.batch_size:
            return 0
        return max(0, int((env_steps - self.warmup_steps) * self.update_to_data) - updates_done)


@dataclass(frozen=True)
class Progress:
    """What the driver prints and the tests read."""

    env_steps: int
    updates: int
    updates_per_second: float
    update_to_data: float
    recent_return: float
    episodes: int
    weights_version: int
    replay_size: int
    policy_lag: int = 0
    last_checkpoint_step: int = -1
    last_stats: UpdateStats | None = None
    counters: dict[str, int] = field(default_factory=dict)
    remedies: dict[str, int] = field(default_factory=dict)
    transitions_rejected: dict[str, int] = field(default_factory=dict)
    """Transitions the actors dropped, by reason (``obs_nonfinite``, ``reward_nonfinite``, ``action_nonfinite``)."""
    context_fallbacks: dict[str, int] = field(default_factory=dict)
    """Contexts the actors replaced by zeros, by reason."""
    stop_requested_at_update: int | None = None
    """``updates`` when a stop was requested (no block starts after it), else None."""
    warnings: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Warning signs holding in the latest block: ``(value, threshold)`` by name (the WARNING log lines' numbers)."""
    phase_seconds: dict[str, float] = field(default_factory=dict)
    """Where this learner's time went since its first step (``PhaseTimes.summary``)."""


COUNTERS = ("weights_rejected", "fragments_duplicate", "checkpoints", "episodes_cut_short", "learner_restarts")
"""The service's run counters (with ``Safety.COUNTS``: saved in checkpoints, carried on by a resume, written to
``final_stats.json``)."""


@dataclass(frozen=True)
class StepReport:
    """What one ``step`` returns to the driver: new weights to broadcast (if any) and progress."""

    weights: VersionedWeights | None
    progress: Progress
    accepted: bool
    blocks: tuple[UpdateStats, ...] = ()
    """Statistics of every block of updates this step ran, in order."""


@dataclass(frozen=True)
class LaunchedBlock:
    """A block of updates started on the device and not yet read: what undoes it, and its device result."""

    snapshot: dict
    """The learner's state before it (``Learner.snapshot``)."""
    sampler_state: torch.Tensor
    """The replay sampler's generator before it."""
    result: LaunchedResult


class LearnerService:
    """Ingests fragments, trains what is due, guards every block, checkpoints, and publishes gated weights."""

    def __init__(
        self,
        learner: Learner,
        schedule: Schedule,
        episode_window: int = 10,
        safety: Safety | None = None,
        checkpointer: Checkpointer | None = None,
        metrics: MetricsExporter | None = None,
        checkpoint_meta: dict | None = None,
        board: ScalarLog | None = None,
        times: PhaseTimes | None = None,
        overlap_blocks: bool = True,
    ) -> None:
        self.learner = learner
        self.times = times or PhaseTimes()
        self.blocks_in_flight = 2 if overlap_blocks else 1
        """Blocks launched before the oldest is read: with 2 the device runs the next block while the host reads,
        records and guards the one before (the same updates and results as one at a time)."""
        self.schedule = schedule
        self.safety = safety or Safety()
        self.checkpointer = checkpointer
        self.metrics = metrics or MetricsExporter()  # without a server: nothing serves it, nothing to check for
        self.checkpoint_meta = checkpoint_meta or {}
        self.board = board or ScalarLog()
        self.returns: deque[float] = deque(maxlen=episode_window)
        self.episodes = 0
        self.last_stats: UpdateStats | None = None
        self._step_blocks: list[UpdateStats] = []  # the blocks of the running step, for its StepReport
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.rejected = dict.fromkeys(REJECTED_TRANSITION_REASONS, 0)
        self.fallbacks = dict.fromkeys(CONTEXT_FALLBACK_REASONS, 0)
        self._stop = threading.Event()
        self.stop_requested_at_update: int | None = None
        self.policy_lag = 0
        self.last_checkpoint_step = -1
        self._updates_at_broadcast = 0
        self._clock = (time.monotonic(), 0)
        self._rate = 0.0
        self.publish_in_force()

    # -- the loop ------------------------------------------------------------------------------
    def step(self, fragment: Fragment) -> StepReport:
        """Ingest one fragment, train what is due, checkpoint when due, and hand back weights when due.

        After ``request_stop`` a step only ingests: the fragment is kept, no update runs.
        """
        accepted = self.begin_step(fragment)
        weights = None if self.stopping else self.train()
        return self.end_step(weights, accepted)

    def begin_step(self, fragment: Fragment) -> bool:
        """A step's first half (``JointTrainer`` trains between the halves): ingest; whether it was stored."""
        self._step_blocks = []
        with self.times.phase("ingest"):
            return self.ingest(fragment) > 0

    def end_step(self, weights: VersionedWeights | None, accepted: bool) -> StepReport:
        """A step's second half: checkpoint when due; the report (with the blocks trained since ``begin_step``)."""
        if self.checkpoint_due() and not self.stopping:
            with self.times.phase("checkpoint"):
                self.checkpoint()
        return StepReport(weights, self.progress(), accepted, tuple(self._step_blocks))

    def request_stop(self) -> None:
        """Start no further block of updates (thread-safe: a signal handler or another thread may call it)."""
        if not self._stop.is_set():
            self.stop_requested_at_update = self.learner.updates_done
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def ingest(self, fragment: Fragment) -> int:
        """Store a fragment's valid transitions unless it is a duplicate; returns transitions stored."""
        self.policy_lag = max(0, self.learner.weights_version - fragment.weights_version)
        inserted = self.learner.ingest(fragment)
        if inserted < 0:
            self.counters["fragments_duplicate"] += 1
            self.metrics.fragment_duplicate()
            return 0
        whole = [episode for episode in fragment.episodes if not episode.cut_short]
        self.returns.extend(episode.episode_return for episode in whole)  # a cut-short return is partial
        self.episodes += len(fragment.episodes)
        self.counters["episodes_cut_short"] += len(fragment.episodes) - len(whole)
        for total, counts in ((self.rejected, fragment.rejected), (self.fallbacks, fragment.context_fallbacks)):
            for reason, count in counts.items():
                total[reason] = total.get(reason, 0) + count
        self.metrics.record_fragment(fragment, self.learner.weights_version)
        self.metrics.set_episode_return(self.returns)
        if whole:
            self.board.episode_return(mean_return(self.returns), self.learner.env_steps)
        self.metrics.set_replay_size(len(self.learner.replay))
        return inserted

    def train(self, max_updates: int | None = None) -> VersionedWeights | None:
        """Run the updates due in guarded blocks; returns new weights when a broadcast is due and passes the gate.

        A stop request is honoured between blocks: a block launched before it is finished, no other starts.
        With ``overlap_blocks`` the next block is launched before the previous one is read; it is undone (as if
        never launched) when reading the previous one changes its start: a rollback, a remedy's new rates.
        """
        done_here = 0
        running: list[LaunchedBlock] = []
        with self.times.phase("train"):
            while True:
                while len(running) < self.blocks_in_flight and not self.stopping:
                    count = self.next_block(max_updates, done_here)
                    if count <= 0:
                        break
                    running.append(self.launch(count))
                    done_here += count
                if not running:
                    break
                done_here -= self.finish(running.pop(0), running)
        return self.broadcast_if_due()

    def next_block(self, max_updates: int | None, done_here: int) -> int:
        due = self.updates_due()
        if max_updates is not None:
            due = min(due, max_updates - done_here)
        return min(due, self.schedule.block_updates)

    def launch(self, count: int) -> LaunchedBlock:
        undo_point = self.learner.undo_point()  # before the launch: the state the block starts from
        return LaunchedBlock(*undo_point, self.learner.launch_block(count))

    def finish(self, block: LaunchedBlock, ahead: list[LaunchedBlock]) -> int:
        """Read a block (the host's one wait for it), record and guard it. A block launched after it (``ahead``)
        started from the state and rates this one left: if reading this one changes them, that block is undone.
        Returns the updates undone."""
        result = block.result.read()
        undone = self.undo(ahead) if result.first_bad_index is not None else 0
        rates = self.learner.rates()
        self.after_block(result, block.snapshot)
        if self.learner.rates() != rates:
            undone += self.undo(ahead)
        return undone

    def undo(self, launched: list[LaunchedBlock]) -> int:
        """Back to the start of the oldest of ``launched`` (state and sampler; not the rates in force), as if none
        of them had run; returns their updates."""
        if not launched:
            return 0
        first = launched[0]
        self.learner.restore(first.snapshot)
        self.learner.replay.generator.set_state(first.sampler_state)
        undone = sum(block.result.count for block in launched)
        launched.clear()
        return undone

    def updates_due(self) -> int:
        learner = self.learner
        return self.schedule.updates_due(learner.env_steps, learner.updates_done, len(learner.replay))

    def after_block(self, result: BlockResult, snapshot: dict) -> None:
        """Record a block's statistics; a non-finite one is recovered from (``snapshot``: the state before it)."""
        self.record(result.stats, result.ended_at)
        if result.first_bad_index is not None:
            last_good = self.checkpointer.latest_good() if self.checkpointer else None
            try:
                self.safety.recover(result, snapshot, self.learner, self.write_emergency, last_good)
            except NonFiniteStop:
                # On Ray, steps queued behind this one still come: they only ingest. A block or checkpoint after the
                # stop would make a newer last_good than the one the stop's message names.
                self.request_stop()
                raise
            self.metrics.rollback()
            self.publish_in_force()

    def broadcast_if_due(self) -> VersionedWeights | None:
        if self.learner.updates_done - self._updates_at_broadcast >= self.schedule.broadcast_every:
            return self.broadcast()
        return None

    def record(self, stats: UpdateStats, ended_at: int) -> None:
        """A block's statistics, the block ending at learner update ``ended_at``."""
        self.last_stats = stats
        self._step_blocks.append(stats)
        self.metrics.record_update_stats(stats)
        self.board.record(stats, self.safety_counters, ended_at)
        if self.safety.observe(stats, self.learner, ended_at):  # a warning sign's remedies changed the rates
            self.publish_in_force()

    def write_emergency(self, extra: dict, stats: UpdateStats) -> Path | None:
        """The state before the bad update and the evidence ``Safety.recover`` gathered."""
        if self.checkpointer is None:
            return None
        meta = {**self.checkpoint_meta, "remedies": self.safety.remedies.as_dict(), "metrics": stats.as_dict()}
        return self.checkpointer.save_emergency(self.learner.env_steps, self.full_state(), extra, meta=meta)

    def close(self) -> None:
        """Stop serving metrics (an in-process run frees its port for the next one); flush TensorBoard's file."""
        self.metrics.stop()
        self.board.close()

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        every = self.schedule.checkpoint_every
        if not every or self.checkpointer is None:
            return False
        return self.learner.env_steps // every > max(self.last_checkpoint_step, 0) // every

    def checkpoint(self, announce: bool = True) -> Path | None:
        """Write a regular checkpoint through the atomic path; a non-finite state is counted, never committed.

        ``announce`` off: the caller logs the path (the final checkpoint is named by the done line).
        """
        if self.checkpointer is None:
            return None
        if not self.learner.parameters_finite():
            log.error("parameters are non-finite at step %d: checkpoint refused", self.learner.env_steps)
            self.metrics.nan_event("params")
            return None
        step = self.learner.env_steps
        replay = self.learner.replay.state_dict() if self.checkpoint_meta.get("save_replay", True) else None
        meta = {**self.checkpoint_meta, "remedies": self.safety.remedies.as_dict(), "metrics": self.metrics_summary()}
        state = self.full_state()
        state["service"]["counters"]["checkpoints"] += 1  # a checkpoint counts itself (a resume from it says 1)
        try:
            path = self.checkpointer.save(step, state, replay, self.checkpoint_meta.get("config_hash", ""), meta)
        except NonFiniteCheckpointError as err:
            log.error("%s", err)
            return None
        self.last_checkpoint_step = step
        self.counters["checkpoints"] += 1
        self.board.flush()
        self.metrics.set_checkpoint(step)
        self.metrics.set_last_good(step)
        if announce:
            log.info("checkpoint %s", path)
        return path

    def full_state(self) -> dict:
        return {
            "learner": self.learner.state_dict(),
            "service": {
                "returns": list(self.returns),
                "episodes": self.episodes,
                "counters": self.all_counters(),
                "transitions_rejected": dict(self.rejected),
                "context_fallbacks": dict(self.fallbacks),
                "remedies": self.safety.remedies.as_dict(),
                "updates_at_broadcast": self._updates_at_broadcast,
                "last_checkpoint_step": self.learner.env_steps,
            },
            "config_yaml": self.checkpoint_meta.get("config_yaml", ""),
        }

    def load_full_state(self, state: dict, replay: dict | None) -> None:
        """Restore a checkpoint's state (and replay); parameters are checked after the restore."""
        self.learner.load_state_dict(state["learner"])
        if replay is not None:
            self.learner.replay.load_state_dict(replay)
        service = state["service"]
        self.returns.extend(service["returns"])
        self.episodes = int(service["episodes"])
        self.counters.update({k: v for k, v in service["counters"].items() if k in self.counters})
        self.rejected.update(service.get("transitions_rejected", {}))
        self.fallbacks.update(service.get("context_fallbacks", {}))
        self.safety.load(service["remedies"], service["counters"])
        self._updates_at_broadcast = int(service["updates_at_broadcast"])
        self.last_checkpoint_step = int(service["last_checkpoint_step"])
        if not self.learner.parameters_finite():
            raise NonFiniteCheckpointError("restored parameters are non-finite")
        self.metrics.learner_restarted(self.counters["learner_restarts"])  # carried on: DmsacLearnerRestarted
        self.publish_in_force()

    def metrics_summary(self) -> dict:
        stats = self.last_stats.as_dict() if self.last_stats else {}
        finite = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        recent = mean_return(self.returns)  # NaN before the first episode: null in the manifest's JSON
        return {**finite, "env_steps": self.learner.env_steps, "recent_return": None if math.isnan(recent) else recent}

    # -- weights -------------------------------------------------------------------------------
    def broadcast(self) -> VersionedWeights | None:
        self._updates_at_broadcast = self.learner.updates_done
        with self.times.phase("broadcast"):
            weights, verdict = self.learner.publish()
        if weights is None:
            self.counters["weights_rejected"] += 1
            self.metrics.weights_rejected(verdict.reason)
            if verdict.reason in ("nonfinite", "probe"):
                self.metrics.nan_event("weights")
        else:
            self.metrics.set_weights_version(weights.version)
        return weights

    def publish_in_force(self) -> None:
        scale, lr = self.learner.rates()
        self.metrics.set_in_force(scale, {"policy": lr, "q": lr}, self.learner.config.max_grad_norm)

    def continue_after_restart(self, restarts: int, weights_floor: int) -> None:
        """This learner replaces ``restarts`` that died: count them on, and publish versions above ``weights_floor``."""
        self.counters["learner_restarts"] = max(self.counters["learner_restarts"], restarts)
        self.learner.weights_version = max(self.learner.weights_version, weights_floor)
        self.metrics.learner_restarted(self.counters["learner_restarts"])

    def report_fleet(self, alive: int, new_restarts: int) -> None:
        self.metrics.set_actors(alive)
        if new_restarts:
            self.metrics.actor_restarted(new_restarts)

    def safety_counters(self) -> dict[str, int]:
        """What TensorBoard shows as ``safety/*``: NaN blocks, rollbacks, remedies, rejected transitions and weights,
        context fallbacks."""
        fallbacks = {f"context_fallback_{reason}": count for reason, count in self.fallbacks.items()}
        return {**self.safety.counts, **self.rejected, **fallbacks, "weights_rejected": self.counters["weights_rejected"]}

    def all_counters(self) -> dict[str, int]:
        return {**self.counters, **self.safety.counts}

    def progress(self) -> Progress:
        now, updates = time.monotonic(), self.learner.updates_done
        then, updates_then = self._clock
        if now - then > 0.5:
            self._rate = (updates - updates_then) / (now - then)
            self._clock = (now, updates)
        steps = self.learner.env_steps
        return Progress(
            env_steps=steps,
            updates=updates,
            updates_per_second=self._rate,
            update_to_data=updates / max(1, steps - self.schedule.warmup_steps),
            recent_return=mean_return(self.returns),
            episodes=self.episodes,
            weights_version=self.learner.weights_version,
            replay_size=len(self.learner.replay),
            policy_lag=self.policy_lag,
            last_checkpoint_step=self.last_checkpoint_step,
            last_stats=self.last_stats,
            counters=self.all_counters(),
            remedies=self.safety.remedies.as_dict(),
            transitions_rejected=dict(self.rejected),
            context_fallbacks=dict(self.fallbacks),
            stop_requested_at_update=self.stop_requested_at_update,
            warnings=self.safety.signs_holding(),
            phase_seconds=self.times.summary(),
        )
