"""Config sections the rollout side owns. Frozen, typed; every field documented."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from actors.vehicle.config import VehicleConfig
from learner.types import require


@dataclass(frozen=True)
class EnvConfig:
    """Which environment the actors roll out, and how many copies each."""

    kind: Literal["gymnasium", "vehicle"] = "gymnasium"
    """``vehicle``: the built-in electric-vehicle speed-tracking task; ``gymnasium``: ``id`` below."""
    id: str = "Pendulum-v1"
    """Gymnasium id (``Pendulum-v1``) or ``module:Class``; ignored for ``kind: vehicle``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to ``gymnasium.make`` (or the class)."""
    num_envs: int = 4
    """Environments stepped together by each rollout worker."""
    vehicle: VehicleConfig = field(default_factory=VehicleConfig)
    """Vehicle environment settings (used when kind is vehicle)."""

    def __post_init__(self) -> None:
        require(self.num_envs >= 1, "num_envs", f"must be >= 1, got {self.num_envs}")
        require(bool(self.id), "id", "must name an environment")


@dataclass(frozen=True)
class RolloutConfig:
    """How rollout workers collect experience."""

    steps_per_fragment: int = 64
    """Environment steps (per environment) in one fragment."""

    def __post_init__(self) -> None:
        require(self.steps_per_fragment >= 1, "steps_per_fragment", f"must be >= 1, got {self.steps_per_fragment}")
