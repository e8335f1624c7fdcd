"""Config sections the rollout side owns. Frozen, typed; every field documented."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal

from pydantic import Field

from actors.vehicle.config import VehicleConfig
from learner.types import config_section


@config_section
class EnvConfig:
    """Which environment the actors roll out, and how many copies each."""

    kind: Literal["gymnasium", "vehicle"] = "gymnasium"
    """``vehicle``: the built-in electric-vehicle speed-tracking task; ``gymnasium``: ``id`` below."""
    id: str = Field("Pendulum-v1", min_length=1)
    """Gymnasium id (``Pendulum-v1``) or ``module:Class``; ignored for ``kind: vehicle``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to ``gymnasium.make`` (or the class)."""
    num_envs: int = Field(4, ge=1)
    """Environments stepped together by each rollout worker."""
    vehicle: VehicleConfig = field(default_factory=VehicleConfig)
    """Vehicle environment settings (used when kind is vehicle)."""


@config_section
class RolloutConfig:
    """How rollout workers collect experience."""

    steps_per_fragment: int = Field(64, ge=1)
    """Environment steps (per environment) in one fragment."""
