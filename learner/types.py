"""The learner's public types: the wire format between actors and learner.

Actors import this module (and ``learner.networks``) the way a client depends on
a server's API; nothing here imports torch-heavy learner internals or Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch


class ConfigValueError(ValueError):
    """A config value is out of range or inconsistent; ``key`` is relative to its section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def require(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigValueError(key, message)`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ConfigValueError(key, message)


CONTEXT_FALLBACK_REASONS = ("nan", "inf", "map_nonfinite", "encoder_nonfinite")
"""Why a context was replaced by the zero context (bounded label values)."""

REJECTED_TRANSITION_REASONS = ("obs_nonfinite", "reward_nonfinite", "action_nonfinite")
"""Why a transition was dropped before it reached replay (bounded label values)."""


@dataclass(frozen=True)
class EpisodeSummary:
    """One finished episode, in unscaled reward units."""

    episode_return: float
    length: int
    mean_abs_speed_error: float = float("nan")
    """Vehicle environment only: mean |v - v_ref| over the episode (NaN elsewhere)."""
    cut_short: bool = False
    """Ended by the actor's guard on a non-finite observation (its return is partial), not by the environment."""


@dataclass(frozen=True)
class Fragment:
    """What one ``rollout(k)`` returns: arrays of shape ``[k, num_envs, ...]``.

    Rewards travel unscaled; the learner applies ``reward_scale`` in one place.
    ``valid`` marks transitions that passed validation (a dropped transition is
    ``False`` and counted in ``rejected``).
    """

    obs: np.ndarray
    context: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    next_context: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    actor_id: int
    incarnation: int
    seq: int
    weights_version: int
    episodes: tuple[EpisodeSummary, ...] = ()
    context_fallbacks: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.reward.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.reward.shape[1])

    @property
    def env_steps(self) -> int:
        """Environment steps this fragment represents (valid or not)."""
        return int(self.reward.size)

    @property
    def key(self) -> tuple[int, int, int]:
        """Identity of a fragment: replay ingestion is idempotent on this key."""
        return (self.actor_id, self.incarnation, self.seq)


@dataclass(frozen=True)
class VersionedWeights:
    """The only thing that reaches actors. Versions increase strictly."""

    version: int
    tensors: dict[str, torch.Tensor]
    checksum: str


@dataclass(frozen=True)
class UpdateStats:
    """The learner's health for one block of updates; one field, one Prometheus metric.

    Gauges carry the last update's value, counts are summed over the block.
    Gradient norms are measured before clipping; Q statistics are in the
    learner's (scaled) reward units.
    """

    updates: int
    policy_grad_norm: float
    q_grad_norm: float
    q_mean: float
    q_std: float
    alpha: float
    policy_loss: float
    q_loss: float
    policy_clipped: int
    q_clipped: int
    nonfinite_loss: int
    nonfinite_grad: int
    nonfinite_q: int

    @property
    def finite(self) -> bool:
        return self.nonfinite_loss == 0 and self.nonfinite_grad == 0 and self.nonfinite_q == 0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
