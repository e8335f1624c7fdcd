"""The learner's public types: the wire format between actors and learner.

Actors import this module (and ``learner.networks``) the way a client depends on
a server's API; nothing here imports torch-heavy learner internals or Ray.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch

config_section = pydantic.dataclasses.dataclass(
    frozen=True, config=pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)
)
"""The decorator of every config section: a frozen dataclass that pydantic validates on construction (types,
``Field`` ranges, unknown keys); the docstring under each field is its description (``--help-config``)."""


def text_matching(pattern: str, message: str) -> Any:
    """A config string type that must match ``pattern`` whole; its error is ``message``, in words."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return Annotated[str, pydantic.AfterValidator(check)]


class ConfigValueError(ValueError):
    """A config value that is wrong together with another, or with the environment it names; ``key`` is relative
    to the section that raises it (``__post_init__``), or the full key path (checks at start-up)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


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
class Stat:
    """How one ``UpdateStats`` field is measured and where it goes: the one table of the learner's statistics."""

    kind: Literal["gauge", "count", "flag"]
    """``gauge``: the block's last update's value; ``count``: summed over the block; ``flag``: a non-finite
    guard flag, summed over the block up to the first flagged update."""
    metric: str
    """The Prometheus metric it feeds (gauges ``set`` it, counts and flags ``inc`` it)."""
    labels: tuple[tuple[str, str], ...] = ()
    panel: str = ""
    """Dashboard panel drawing this gauge (panels group gauges by title)."""
    legend: str = ""
    nan_alert: bool = False
    """A NaN in this gauge alone fires ``DmsacNonFiniteDetected``."""


def stat(kind: Literal["gauge", "count", "flag"], metric: str, **details) -> Any:
    return field(metadata={"stat": Stat(kind, metric, **details)})


def _gauge(metric: str, panel: str, legend: str = "") -> Any:
    return stat("gauge", metric, panel=panel, legend=legend, nan_alert=True)


@dataclass(frozen=True)
class UpdateStats:
    """The learner's health for one block of updates; one field, one Prometheus metric.

    Gauges carry the last update's value, counts are summed over the block.
    Gradient norms are measured before clipping; Q statistics are in the
    learner's (scaled) reward units. The per-update statistics vector on the
    device has the layout ``STAT_FIELDS`` (every field but ``updates``, flags last).
    """

    updates: int = stat("count", "dmsac_learner_updates_total")
    policy_grad_norm: float = _gauge("dmsac_policy_grad_norm", "Policy gradient norm (before clipping)", "policy")
    q_grad_norm: float = _gauge("dmsac_q_grad_norm", "Critic gradient norm (before clipping)", "critic")
    q_mean: float = _gauge("dmsac_q_mean", "Q mean (scaled units)", "mean Q")
    q_std: float = _gauge("dmsac_q_std", "Q std (scaled units)", "std Q")
    alpha: float = _gauge("dmsac_alpha", "Alpha", "alpha")
    policy_loss: float = _gauge("dmsac_policy_loss", "Losses", "policy")
    q_loss: float = _gauge("dmsac_q_loss", "Losses", "critic")
    policy_clipped: int = stat("count", "dmsac_grad_clipped_total", labels=(("network", "policy"),))
    q_clipped: int = stat("count", "dmsac_grad_clipped_total", labels=(("network", "q"),))
    nonfinite_loss: int = stat("flag", "dmsac_nan_events_total", labels=(("source", "loss"),))
    nonfinite_grad: int = stat("flag", "dmsac_nan_events_total", labels=(("source", "grad"),))
    nonfinite_q: int = stat("flag", "dmsac_nan_events_total", labels=(("source", "q"),))

    @property
    def finite(self) -> bool:
        return all(getattr(self, name) == 0 for name in FLAG_FIELDS)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_vector(cls, values: list[float], updates: int) -> UpdateStats:
        """An accumulated statistics vector (``STAT_FIELDS`` layout, read once per block) as ``UpdateStats``."""
        named = dict(zip(STAT_FIELDS, values, strict=True))
        return cls(updates=updates, **{k: float(v) if STATS[k].kind == "gauge" else int(round(v)) for k, v in named.items()})


STATS: dict[str, Stat] = {f.name: f.metadata["stat"] for f in fields(UpdateStats)}
"""Every statistic by name: what the metrics exporter, the alert rules and the dashboard derive from."""
STAT_FIELDS: tuple[str, ...] = tuple(name for name in STATS if name != "updates")
"""Layout of the per-update statistics vector on the device."""
COUNT_FIELDS = frozenset(name for name in STAT_FIELDS if STATS[name].kind != "gauge")
FLAG_FIELDS: tuple[str, ...] = tuple(name for name in STAT_FIELDS if STATS[name].kind == "flag")
assert STAT_FIELDS[-len(FLAG_FIELDS) :] == FLAG_FIELDS, "the non-finite flags close the vector"


def stat_index(name: str) -> int:
    """Where statistic ``name`` sits in the per-update vector."""
    return STAT_FIELDS.index(name)
