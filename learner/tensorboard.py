"""TensorBoard scalars under the seed's tag names, from the statistics the Prometheus gauges get.

The seed's single-process script logged ``train/policy_grad_norm``, ``train/q_grad_norm``, ``train/q_mean`` and
``train/q_std``; the learner writes those (every gauge of ``UpdateStats`` as ``train/<field>``), ``safety/<counter>``
and ``rollout/episode_return`` to ``<run_dir>/tensorboard/`` with ``torch.utils.tensorboard``'s writer, whose own
thread writes the event file. Statistics are written at most once per ``metrics.tensorboard_every_updates`` updates
(the latest block's, which the gauges hold at that moment), so the update loop does not wait on protobuf encoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

from learner.types import STATS, UpdateStats

TRAIN_TAGS: dict[str, str] = {name: f"train/{name}" for name, spec in STATS.items() if spec.kind == "gauge"}
"""``UpdateStats`` gauge field → TensorBoard tag (the seed's names)."""
EPISODE_RETURN_TAG = "rollout/episode_return"
SAFETY_PREFIX = "safety/"
BOARD_DIR = "tensorboard"
"""Where the event files go, under the run directory (``make tensorboard RUN_DIR=…`` serves it)."""


class ScalarLog:
    """The null log: a learner without TensorBoard calls the same methods."""

    def record(self, stats: UpdateStats, counters: Callable[[], Mapping[str, float]], updates: int) -> None:
        """One block's statistics and the safety counters (``counters()``, asked only for a point written), at
        learner update ``updates``."""

    def episode_return(self, value: float, env_steps: int) -> None:
        """The recent mean episode return (unscaled reward units), at ``env_steps``."""

    def flush(self) -> None:
        """Everything written so far on disk (at each checkpoint: a job's end is one)."""

    def close(self) -> None:
        pass


class TensorBoardLog(ScalarLog):
    def __init__(self, log_dir: str | Path, every_updates: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when a run asks for it

        self.writer = SummaryWriter(str(log_dir), flush_secs=10)  # a killed learner loses at most 10 s of points
        self.every_updates = every_updates
        self.next_at = 0

    def record(self, stats: UpdateStats, counters: Callable[[], Mapping[str, float]], updates: int) -> None:
        if updates < self.next_at:
            return
        self.next_at = (updates // self.every_updates + 1) * self.every_updates
        for name, tag in TRAIN_TAGS.items():
            self.writer.add_scalar(tag, getattr(stats, name), updates)  # NaN included: it is the evidence
        for name, value in counters().items():
            self.writer.add_scalar(SAFETY_PREFIX + name, value, updates)

    def episode_return(self, value: float, env_steps: int) -> None:
        if not math.isnan(value):
            self.writer.add_scalar(EPISODE_RETURN_TAG, value, env_steps)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
