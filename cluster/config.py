"""The root config: every section, and loading it from YAML plus ``--set`` overrides."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from actors.config import EnvConfig, RolloutConfig
from actors.context.config import ContextConfig
from cluster.alerts import AlertsConfig
from cluster.configio import ConfigError, apply_override, build, load_yaml, to_plain
from learner.checkpoint import CheckpointConfig
from learner.config import LearnerConfig, ReplayConfig
from learner.metrics import MetricsConfig
from learner.safety import SafetyConfig
from learner.types import require


@dataclass(frozen=True)
class TrainConfig:
    """The training run as a whole."""

    total_env_steps: int = 1_000_000
    """Environment steps (all environments of all actors) after which training stops."""
    warmup_steps: int = 10_000
    """Environment steps of uniformly random actions before the policy acts and updates start."""
    update_to_data: float = 1.0
    """Learner updates per environment step collected (the UTD ratio)."""
    seed: int = 0
    """Seeds networks, replay sampling and (offset per actor) the environments."""
    run_dir: str = "runs/default"
    """Where the resolved config, checkpoints and metrics targets are written."""
    log_every_seconds: float = 10.0
    """Seconds between progress lines."""
    episode_window: int = 10
    """Finished episodes averaged into the reported recent return."""

    def __post_init__(self) -> None:
        require(self.total_env_steps >= 1, "total_env_steps", f"must be >= 1, got {self.total_env_steps}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(self.update_to_data > 0, "update_to_data", f"must be > 0, got {self.update_to_data}")
        require(self.log_every_seconds > 0, "log_every_seconds", "must be > 0")
        require(self.episode_window >= 1, "episode_window", "must be >= 1")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the job runs."""

    mode: Literal["local", "ray"] = "ray"
    """``local``: worker and learner in this process, no Ray (tests, debugging); ``ray``: actors on Ray."""
    address: str = ""
    """Ray address to join; empty: join the running cluster if there is one, else start a local Ray instance."""
    num_actors: int = 2
    """Rollout actors (``local`` mode runs exactly one worker)."""
    node_ip_address: str = ""
    """IP this driver registers with Ray (and binds, when it starts Ray itself); empty: Ray's choice."""
    max_actor_restarts: int = 3
    """Times Ray restarts a dead rollout actor before it is given up."""
    actors_gone_timeout_s: float = 60.0
    """With every rollout actor gone this long, the job checkpoints and exits 3."""
    max_learner_restarts: int = 3
    """Times the driver replaces a learner that died (its process or its node) from ``last_good``; past it, exit 3."""
    learner_restart_timeout_s: float = 600.0
    """A replacement learner that no node can host for this long (waiting for a node to join) ends the job: exit 3."""
    schedule_timeout_s: float = 60.0
    """An actor (learner or rollout) that Ray keeps pending for resources this long at start-up ends the job with exit 3."""
    max_inflight_steps: int = 2
    """Fragments queued at the learner before the driver holds back new rollouts (keeps the UTD ratio)."""

    def __post_init__(self) -> None:
        require(self.num_actors >= 1, "num_actors", f"must be >= 1, got {self.num_actors}")
        require(self.max_actor_restarts >= 0, "max_actor_restarts", "must be >= 0")
        require(self.actors_gone_timeout_s > 0, "actors_gone_timeout_s", "must be > 0")
        require(self.schedule_timeout_s > 0, "schedule_timeout_s", "must be > 0")
        require(self.max_learner_restarts >= 0, "max_learner_restarts", "must be >= 0")
        require(self.learner_restart_timeout_s > 0, "learner_restart_timeout_s", "must be > 0")
        require(self.max_inflight_steps >= 1, "max_inflight_steps", "must be >= 1")


@dataclass(frozen=True)
class Config:
    """A whole dmsac job."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """The run as a whole: budget, warmup, update-to-data ratio, seed, run directory."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Placement: in-process or on Ray, and how many rollout actors."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment the actors step."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Fragment size and collection settings."""
    context: ContextConfig = field(default_factory=ContextConfig)
    """What the policy sees besides the observation: none, or the dynamics-map context and its encoder."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """SAC hyperparameters and device."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """The replay buffer."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    """What a non-finite update triggers: rollback with remedies, or stop."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint interval, retention, replay inclusion and directory."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """The learner's Prometheus endpoint: on/off, port, bind address."""
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    """Thresholds and timings of the rendered alert rules (deploy/prometheus/alerts.yml)."""

    def __post_init__(self) -> None:
        require(
            self.replay.capacity >= self.learner.batch_size,
            "replay.capacity",
            f"must hold at least one batch (learner.batch_size={self.learner.batch_size})",
        )


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` strictly and apply ``--set`` overrides; errors name key and file."""
    path = Path(path)
    data = load_yaml(path)
    source = str(path)
    for assignment in overrides:
        data = apply_override(data, assignment)
        source = f"{path} (with --set {' '.join(overrides)})"
    return build(Config, data, source)


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML (saved in the run directory and in checkpoints)."""
    return yaml.safe_dump(to_plain(config), sort_keys=False)


def config_hash(config: Config) -> str:
    """A stable sha256 of the resolved config."""
    return hashlib.sha256(json.dumps(to_plain(config), sort_keys=True).encode()).hexdigest()


__all__ = ["Config", "ConfigError", "load_config", "config_to_yaml", "config_hash"]
