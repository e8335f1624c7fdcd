"""What the learner does when an update goes non-finite or a warning sign holds: the seed's fixes, made automatic.

``RollbackToLastGood`` restores the device snapshot taken before the block,
replays the block's good prefix, applies the configured remedies (smaller
reward scale, smaller learning rate) and lets training go on; ``Stop`` ends
the job with the resume command. Either way an emergency checkpoint of the
state before the bad update is written first (by the service).

``WarningWatch`` logs the seed's warning signs (policy grad norm > 4.5,
|Q mean| > 10 000, Q std > 5 000) and tells the service when one has held
long enough for the remedies; the alert rules render the same thresholds.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import torch
from pydantic import Field

from learner.types import UpdateStats, config_section

if TYPE_CHECKING:
    from learner.learner import BlockResult, Learner

log = logging.getLogger(__name__)


@config_section
class WarningSignsConfig:
    """The seed's warning signs: one set of thresholds for the learner's log lines, its remedy and the alert rules."""

    grad_norm_fraction: float = Field(0.9, gt=0)
    """Policy or Q gradient norm (before clipping) above this fraction of ``learner.max_grad_norm`` (seed: 0.9 × 5.0 = 4.5)."""
    q_mean_abs_max: float = Field(10000.0, gt=0)
    """|mean Q| above this (scaled units; rewards are negative, so Q diverges downward)."""
    q_std_max: float = Field(5000.0, gt=0)
    """Standard deviation of Q above this."""


@config_section
class SafetyConfig:
    """The NaN response, the warning signs and the seed's remedies."""

    on_nan: Literal["rollback", "stop"] = "rollback"
    """``rollback``: restore the last good in-memory state and continue; ``stop``: exit with the resume command."""
    max_rollbacks: int = Field(3, ge=0)
    """More rollbacks than this within ``rollback_window_updates`` turns the loop into a stop."""
    rollback_window_updates: int = Field(20_000, ge=1)
    """Window (in learner updates) over which rollbacks are counted."""
    reward_scale_factor: float = Field(0.1, gt=0, le=1)
    """Remedy: multiply the reward scale in force by this after a rollback (1.0 disables it)."""
    reward_scale_floor: float = Field(1e-6, gt=0)
    """The reward-scale remedy never goes below this."""
    max_reward_scale_remedies: int = Field(2, ge=0)
    """Times the reward-scale remedy may apply in one run."""
    lr_factor: float = Field(0.1, gt=0, le=1)
    """Remedy: multiply every learning rate in force by this after a rollback (1.0 disables it)."""
    lr_floor: float = Field(1e-7, gt=0)
    """The learning-rate remedy never goes below this."""
    max_lr_remedies: int = Field(2, ge=0)
    """Times the learning-rate remedy may apply in one run."""
    stats_history: int = Field(200, ge=1)
    """Recent ``UpdateStats`` kept for emergency checkpoints."""
    warnings: WarningSignsConfig = field(default_factory=WarningSignsConfig)
    """Thresholds of the seed's warning signs (logs, ``on_warning: remedy`` and the rendered alert rules)."""
    on_warning: Literal["log", "remedy"] = "log"
    """``log``: rate-limited WARNING lines while a sign holds; ``remedy``: also apply the remedies above once a sign
    has held for ``warning_sustain_updates`` updates in a row (same factors, floors and limits as after a rollback)."""
    warning_sustain_updates: int = Field(5000, ge=1)
    """Consecutive updates a warning sign must hold before ``on_warning: remedy`` acts (checked once per block)."""
    warning_log_every_updates: int = Field(10000, ge=1)
    """While a sign holds, its WARNING line repeats at most once per this many updates."""


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


WARNING_SIGNS = ("policy_grad_norm", "q_grad_norm", "q_mean", "q_std")
"""``UpdateStats`` gauges the seed watched; ``q_mean`` is compared by its absolute value."""


def warning_thresholds(signs: WarningSignsConfig, max_grad_norm: float) -> dict[str, float]:
    """The threshold of every warning sign, resolved against the gradient clip limit."""
    grad = signs.grad_norm_fraction * max_grad_norm
    return {"policy_grad_norm": grad, "q_grad_norm": grad, "q_mean": signs.q_mean_abs_max, "q_std": signs.q_std_max}


def signs_holding(stats: UpdateStats, thresholds: dict[str, float]) -> dict[str, float]:
    """The signs above their thresholds and their values (|q_mean|); NaN is the NaN guard's, not a warning."""
    values = {name: abs(getattr(stats, name)) if name == "q_mean" else getattr(stats, name) for name in thresholds}
    return {name: v for name, v in values.items() if math.isfinite(v) and v > thresholds[name]}


class WarningWatch:
    """Follows the warning signs block by block: logs them (rate-limited) and reports the ones held long enough.

    A block counts as holding a sign when its last update's value is above the
    threshold; a sign has held for N updates when the blocks since it started
    holding add up to N. After a report its count starts again. Each sign logs
    at most one WARNING line per ``log_every_updates``, however often it comes and goes.
    """

    def __init__(self, thresholds: dict[str, float], sustain_updates: int, log_every_updates: int) -> None:
        self.thresholds = thresholds
        self.sustain_updates = sustain_updates
        self.log_every_updates = log_every_updates
        self.held_since: dict[str, int] = {}
        """Update at which each holding sign started to hold."""
        self.counted_from: dict[str, int] = {}
        """Where each sign's count toward ``sustain_updates`` starts (its hold's start, or its last report)."""
        self.logged_at: dict[str, int] = {}
        self.holding: dict[str, float] = {}
        """The signs above their thresholds in the latest block, with their values (progress lines show them)."""

    def observe(self, stats: UpdateStats, updates_done: int) -> list[str]:
        """Record one block ending at update ``updates_done``; return the signs that held ``sustain_updates`` updates."""
        holding = self.holding = signs_holding(stats, self.thresholds)
        for name in [n for n in self.held_since if n not in holding]:
            log.debug("warning sign cleared: %s back within %g at update %d", name, self.thresholds[name], updates_done)
            del self.held_since[name], self.counted_from[name]
        sustained = []
        for name, value in holding.items():
            since = self.held_since.setdefault(name, updates_done - stats.updates)
            counted_from = self.counted_from.setdefault(name, since)
            if updates_done - self.logged_at.get(name, -self.log_every_updates) >= self.log_every_updates:
                self.logged_at[name] = updates_done
                label = "|q_mean|" if name == "q_mean" else name
                log.warning(
                    "warning sign: %s=%.4g > %g at update %d (held for %d updates; see deploy/prometheus/RUNBOOK.md)",
                    label, value, self.thresholds[name], updates_done, updates_done - since,
                )  # fmt: skip
            if updates_done - counted_from >= self.sustain_updates:
                sustained.append(name)
                self.counted_from[name] = updates_done
        return sustained


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


class Safety:
    """The service's reactions: to a non-finite block (emergency checkpoint, then a rollback with remedies or a
    stop) and to the seed's warning signs (log lines; the remedies too, with ``on_warning: remedy``).

    Owns what those reactions remember: the remedies applied, the recent statistics, and their counts.
    """

    COUNTS = ("nan_blocks", "rollbacks", "warning_remedies")

    def __init__(
        self, config: SafetyConfig | None = None, response: NanResponse | None = None,
        resume_command: str = "python -m cluster.train --config CONFIG --resume auto",
    ) -> None:  # fmt: skip
        self.config = config or SafetyConfig()
        self.response = response or Stop()
        self.resume_command = resume_command
        self.remedies = Remedies()
        self.history: deque[dict] = deque(maxlen=self.config.stats_history)
        self.counts = dict.fromkeys(self.COUNTS, 0)
        self.watch: WarningWatch | None = None

    def observe(self, stats: UpdateStats, learner: Learner, updates_done: int) -> bool:
        """Record the statistics of a block ending at update ``updates_done`` and follow the warning signs; True when
        the remedies changed the rates."""
        self.history.append(stats.as_dict())
        if self.watch is None:
            thresholds = warning_thresholds(self.config.warnings, learner.config.max_grad_norm)
            self.watch = WarningWatch(thresholds, self.config.warning_sustain_updates, self.config.warning_log_every_updates)
        sustained = self.watch.observe(stats, updates_done)
        if not sustained or self.config.on_warning != "remedy":
            return False
        before = learner.rates()
        if not self.remedy(learner):
            log.warning("warning signs %s persist; the remedies are spent (limits or floors reached)", ", ".join(sustained))
            return False
        self.counts["warning_remedies"] += 1
        log.warning(
            "warning signs %s held for %d updates: reward_scale %g -> %g, lr %g -> %g (remedies %s)",
            ", ".join(sustained), self.config.warning_sustain_updates, before[0], learner.rates()[0], before[1],
            learner.rates()[1], self.remedies.as_dict(),
        )  # fmt: skip
        return True

    def signs_holding(self) -> dict[str, tuple[float, float]]:
        """Each warning sign holding in the latest block: ``(value, threshold)`` (|q_mean| for ``q_mean``)."""
        if self.watch is None:
            return {}
        return {name: (value, self.watch.thresholds[name]) for name, value in self.watch.holding.items()}

    def remedy(self, learner: Learner) -> bool:
        """The seed's remedies within their factors, floors and limits; False when none could apply."""
        scale, lr, remedies = apply_remedies(self.config, *learner.rates(), self.remedies)
        changed, self.remedies = remedies != self.remedies, remedies
        learner.set_rates(scale, lr)
        return changed

    def recover(
        self, result: BlockResult, snapshot: dict, learner: Learner,
        emergency: Callable[[dict, UpdateStats], Path | None], last_good: Path | None,
    ) -> None:  # fmt: skip
        """A block with a non-finite update: back to the state before that update, its evidence written
        (``emergency(extra, stats)``), then a rollback with remedies, or ``NonFiniteStop``."""
        bad = result.first_bad_index
        self.counts["nan_blocks"] += 1
        learner.restore(snapshot)
        learner.replay_updates(result.batch_indices[:bad])  # the block's good prefix
        if not learner.parameters_finite():
            learner.restore(snapshot)  # the prefix did not reproduce finitely: keep the block start
        log.error("non-finite update %d (block index %d): %s", learner.updates_done, bad, result.stats)
        batch = learner.replay.fields(learner.replay.gather(result.batch_indices[bad]))
        extra = {
            "offending_batch": {k: v.detach().cpu() for k, v in batch.items()}, "stats_history": list(self.history),
            "context_stats": context_statistics(batch), "bad_update": learner.updates_done,
        }  # fmt: skip
        written = emergency(extra, result.stats)
        if not self.response.continues(learner.updates_done):
            raise NonFiniteStop(self.stop_message(written, last_good))
        self.counts["rollbacks"] += 1
        self.remedy(learner)
        scale, lr = learner.rates()
        log.warning("rolled back to update %d; reward_scale=%g lr=%g (remedies %s)", learner.updates_done, scale, lr,
                    self.remedies.as_dict())  # fmt: skip

    def stop_message(self, emergency: Path | None, last_good: Path | None) -> str:
        saved = f"; emergency checkpoint: {emergency}" if emergency else ""
        if last_good is None:  # --resume auto would have nothing to load
            return f"training stopped on a non-finite update (no good checkpoint was written yet{saved}); start afresh"
        return (
            f"training stopped on a non-finite update (last good checkpoint: {last_good}{saved}). "
            f"Resume with: {self.resume_command}"
        )

    def load(self, remedies: dict, counters: dict) -> None:
        """What a checkpoint recorded: the remedies applied and the counts."""
        self.remedies = Remedies(**remedies)
        self.counts.update({k: int(v) for k, v in counters.items() if k in self.counts})


@torch.no_grad()
def context_statistics(batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Summary of the batch's contexts for an emergency checkpoint (NaN-aware)."""
    stats: dict[str, float] = {}
    for name in ("context", "next_context"):
        values = batch[name].float()
        if values.numel() == 0:
            continue
        finite = values[torch.isfinite(values)]
        stats[f"{name}_nonfinite"] = float((~torch.isfinite(values)).sum())
        stats[f"{name}_abs_max"] = float(finite.abs().max()) if finite.numel() else float("nan")
        stats[f"{name}_mean"] = float(finite.mean()) if finite.numel() else float("nan")
    return stats
