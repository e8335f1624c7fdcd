"""The learner's loop around ``Learner``: ingest, updates held at the update-to-data ratio, broadcasts.

The same object runs in-process (``cluster.mode: local``) and inside the Ray
learner actor; only the shell differs.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from learner.learner import BlockResult, Learner
from learner.types import Fragment, UpdateStats, VersionedWeights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """When updates start and how many are due (plain numbers, taken from the job config)."""

    warmup_steps: int
    update_to_data: float
    block_updates: int
    broadcast_every: int
    batch_size: int

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
    last_stats: UpdateStats | None = None
    counters: dict[str, int] = field(default_factory=dict)


class LearnerService:
    """Ingests fragments, trains what the schedule says is due, and publishes gated weights."""

    def __init__(self, learner: Learner, schedule: Schedule, episode_window: int = 10) -> None:
        self.learner = learner
        self.schedule = schedule
        self.returns: deque[float] = deque(maxlen=episode_window)
        self.episodes = 0
        self.last_stats: UpdateStats | None = None
        self.counters: dict[str, int] = {"weights_rejected": 0, "fragments_duplicate": 0, "nan_blocks": 0}
        self._updates_at_broadcast = 0
        self._clock = (time.monotonic(), 0)
        self._rate = 0.0

    def ingest(self, fragment: Fragment) -> int:
        inserted = self.learner.ingest(fragment)
        if inserted == 0 and fragment.valid.any():
            self.counters["fragments_duplicate"] += 1
            return 0
        for episode in fragment.episodes:
            self.returns.append(episode.episode_return)
        self.episodes += len(fragment.episodes)
        return inserted

    def train(self, max_updates: int | None = None) -> VersionedWeights | None:
        """Run the updates due (in blocks); returns new weights when a broadcast is due and passes the gate."""
        learner = self.learner
        due = self.schedule.updates_due(learner.env_steps, learner.updates_done, len(learner.replay))
        if max_updates is not None:
            due = min(due, max_updates)
        while due > 0:
            count = min(due, self.schedule.block_updates)
            self.on_block(learner.update_block(count))
            due -= count
        if learner.updates_done - self._updates_at_broadcast >= self.schedule.broadcast_every:
            return self.broadcast()
        return None

    def on_block(self, result: BlockResult) -> None:
        self.last_stats = result.stats
        if result.first_bad_index is not None:
            self.counters["nan_blocks"] += 1
            log.error("non-finite update at block index %d: %s", result.first_bad_index, result.stats)

    def broadcast(self) -> VersionedWeights | None:
        self._updates_at_broadcast = self.learner.updates_done
        weights, verdict = self.learner.publish()
        if weights is None:
            self.counters["weights_rejected"] += 1
            log.warning("broadcast rejected by the weight gate: %s (%s)", verdict.reason, verdict.detail)
        return weights

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
            recent_return=sum(self.returns) / len(self.returns) if self.returns else float("nan"),
            episodes=self.episodes,
            weights_version=self.learner.weights_version,
            replay_size=len(self.learner.replay),
            last_stats=self.last_stats,
            counters=dict(self.counters),
        )
