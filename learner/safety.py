"""What the learner does when an update goes non-finite: the seed's fixes, made automatic.

``RollbackToLastGood`` restores the device snapshot taken before the block,
replays the block's good prefix, applies the configured remedies (smaller
reward scale, smaller learning rate) and lets training go on; ``Stop`` ends
the job with the resume command. Either way an emergency checkpoint of the
state before the bad update is written first (by the service).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from learner.types import require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SafetyConfig:
    """The NaN response and the seed's remedies."""

    on_nan: Literal["rollback", "stop"] = "rollback"
    """``rollback``: restore the last good in-memory state and continue; ``stop``: exit with the resume command."""
    max_rollbacks: int = 3
    """More rollbacks than this within ``rollback_window_updates`` turns the loop into a stop."""
    rollback_window_updates: int = 20_000
    """Window (in learner updates) over which rollbacks are counted."""
    reward_scale_factor: float = 0.1
    """Remedy: multiply the reward scale in force by this after a rollback (1.0 disables it)."""
    reward_scale_floor: float = 1e-6
    """The reward-scale remedy never goes below this."""
    max_reward_scale_remedies: int = 2
    """Times the reward-scale remedy may apply in one run."""
    lr_factor: float = 0.1
    """Remedy: multiply every learning rate in force by this after a rollback (1.0 disables it)."""
    lr_floor: float = 1e-7
    """The learning-rate remedy never goes below this."""
    max_lr_remedies: int = 2
    """Times the learning-rate remedy may apply in one run."""
    stats_history: int = 200
    """Recent ``UpdateStats`` kept for emergency checkpoints."""

    def __post_init__(self) -> None:
        require(self.max_rollbacks >= 0, "max_rollbacks", "must be >= 0")
        require(self.rollback_window_updates >= 1, "rollback_window_updates", "must be >= 1")
        require(0 < self.reward_scale_factor <= 1, "reward_scale_factor", "must be in (0, 1]")
        require(0 < self.lr_factor <= 1, "lr_factor", "must be in (0, 1]")
        require(self.reward_scale_floor > 0, "reward_scale_floor", "must be > 0")
        require(self.lr_floor > 0, "lr_floor", "must be > 0")
        require(self.max_reward_scale_remedies >= 0, "max_reward_scale_remedies", "must be >= 0")
        require(self.max_lr_remedies >= 0, "max_lr_remedies", "must be >= 0")
        require(self.stats_history >= 1, "stats_history", "must be >= 1")


@dataclass(frozen=True)
class Remedies:
    """Remedies applied so far in this run (recorded in checkpoints and metrics)."""

    reward_scale_applied: int = 0
    lr_applied: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"reward_scale_applied": self.reward_scale_applied, "lr_applied": self.lr_applied}


def next_value(current: float, factor: float, floor: float, applied: int, limit: int) -> tuple[float, bool]:
    """The remedied value and whether the remedy applied (not past its limit, never below the floor)."""
    if applied >= limit or factor >= 1.0 or current <= floor:
        return current, False
    return max(floor, current * factor), True


def apply_remedies(
    config: SafetyConfig, reward_scale: float, lr: float, done: Remedies
) -> tuple[float, float, Remedies]:
    """Reward scale × factor and learning rate × factor, each within its floor and application limit."""
    scale, scale_applied = next_value(
        reward_scale, config.reward_scale_factor, config.reward_scale_floor, done.reward_scale_applied,
        config.max_reward_scale_remedies,
    )  # fmt: skip
    new_lr, lr_applied = next_value(lr, config.lr_factor, config.lr_floor, done.lr_applied, config.max_lr_remedies)
    return scale, new_lr, Remedies(done.reward_scale_applied + scale_applied, done.lr_applied + lr_applied)


class RollbackLimiter:
    """Counts rollbacks in a sliding window of updates."""

    def __init__(self, limit: int, window: int) -> None:
        self.limit = limit
        self.window = window
        self.at_updates: deque[int] = deque()

    def allow(self, updates_done: int) -> bool:
        """Record a rollback at ``updates_done``; False when it exceeds the limit within the window."""
        self.at_updates.append(updates_done)
        while self.at_updates and self.at_updates[0] <= updates_done - self.window:
            self.at_updates.popleft()
        return len(self.at_updates) <= self.limit


class NanResponse(Protocol):
    def continues(self, updates_done: int) -> bool:
        """True: roll back and continue; False: stop the job."""
        ...


class Stop:
    def continues(self, updates_done: int) -> bool:
        return False


class RollbackToLastGood:
    def __init__(self, config: SafetyConfig) -> None:
        self.limiter = RollbackLimiter(config.max_rollbacks, config.rollback_window_updates)

    def continues(self, updates_done: int) -> bool:
        allowed = self.limiter.allow(updates_done)
        if not allowed:
            log.error("more than %d rollbacks within %d updates: stopping", self.limiter.limit, self.limiter.window)
        return allowed


def make_nan_response(config: SafetyConfig) -> NanResponse:
    return RollbackToLastGood(config) if config.on_nan == "rollback" else Stop()


class NonFiniteStop(RuntimeError):
    """Training stopped on a non-finite update; the message names the last good checkpoint and resume command."""
