"""The root config: every section, loading it from YAML plus ``--set`` overrides, and errors that name key and file.

Sections are pydantic dataclasses (``learner.types.config_section``): types, ranges and unknown keys are checked by
pydantic; this module turns its errors into one ``ConfigError`` a user can act on.
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml
from pydantic import Field

from actors.config import EnvConfig, RolloutConfig
from actors.context.config import ContextConfig
from cluster.alerts import AlertsConfig
from learner.checkpoint import CheckpointConfig
from learner.config import LearnerConfig, ReplayConfig
from learner.metrics import MetricsConfig
from learner.safety import SafetyConfig
from learner.types import ConfigValueError, config_section

T = TypeVar("T")
BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
          "less_than_equal": ("le", "<=")}  # fmt: skip
"""pydantic's range errors, said the way the docs say them: ``must be >= 1``."""


class ConfigError(Exception):
    """A config problem a user must fix: names the key path and the file."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}")
        self.source = source
        self.key = key
        self.message = message


@config_section
class TrainConfig:
    """The training run as a whole."""

    total_env_steps: int = Field(1_000_000, ge=1)
    """Environment steps (all environments of all actors) after which training stops."""
    warmup_steps: int = Field(10_000, ge=0)
    """Environment steps of uniformly random actions before the policy acts and updates start."""
    update_to_data: float = Field(1.0, gt=0)
    """Learner updates per environment step collected (the UTD ratio)."""
    seed: int = 0
    """Seeds networks, replay sampling and (offset per actor) the environments."""
    run_dir: str = "runs/default"
    """Where the resolved config, checkpoints and metrics targets are written."""
    log_every_seconds: float = Field(10.0, gt=0)
    """Seconds between progress lines."""
    episode_window: int = Field(10, ge=1)
    """Finished episodes averaged into the reported recent return."""
    parallel_runs: int = Field(1, ge=1, le=64)
    """Independent runs this job trains at once in one learner process (seed studies, small sweeps): run ``k`` has
    its own rollout workers, replay, guard, checkpoints and metrics port, lives in ``<run_dir>/runs/<k>`` (a run
    directory of its own: ``cluster.evaluate`` and ``--resume`` work on it), seeds from ``seed + k``, and its updates
    share the device with the others (on CUDA, one graph replay updates them all). On Ray each run has
    ``cluster.num_actors`` rollout actors of its own and one learner actor trains them all."""
    run_overrides: tuple[tuple[str, ...], ...] = ()
    """Per run, ``KEY=VALUE`` overrides on top of this config (``parallel_runs`` lists, or none): a grid of learning
    rates, reward scales, context modes. Keys of the job as a whole (``cluster.*``, ``metrics.*``, ``train.run_dir``,
    ``learner.device``, ``checkpoint.dir``) are the same for every run."""


@config_section
class ClusterConfig:
    """Where the job runs."""

    mode: Literal["local", "ray"] = "ray"
    """``local``: worker and learner in this process, no Ray (tests, debugging); ``ray``: actors on Ray."""
    address: str = ""
    """Ray address to join; empty: join the running cluster if there is one, else start a local Ray instance;
    ``local``: always start a local instance (its workers see this shell's ``PYTHONPATH``; a running cluster's do not)."""
    num_actors: int = Field(2, ge=1)
    """Rollout actors (``local`` mode runs exactly one worker)."""
    node_ip_address: str = ""
    """IP this driver registers with Ray (and binds, when it starts Ray itself); empty: Ray's choice."""
    max_actor_restarts: int = Field(3, ge=0)
    """Times Ray restarts a dead rollout actor before it is given up."""
    actors_gone_timeout_s: float = Field(60.0, gt=0)
    """With every rollout actor gone this long, the job checkpoints and exits 3."""
    max_learner_restarts: int = Field(3, ge=0)
    """Times the driver replaces a learner that died (its process or its node) from ``last_good``; past it, exit 3."""
    learner_restart_timeout_s: float = Field(600.0, gt=0)
    """A replacement learner that no node can host for this long (waiting for a node to join) ends the job: exit 3."""
    schedule_timeout_s: float = Field(60.0, gt=0)
    """An actor (learner or rollout) that Ray keeps pending for resources this long at start-up ends the job with exit 3."""
    max_inflight_steps: int = Field(2, ge=1)
    """Fragments queued at the learner before the driver holds back new rollouts (keeps the UTD ratio)."""
    learner_gpu_fraction: float = Field(1.0, gt=0, le=1)
    """Share of one GPU the learner asks Ray for: 0.25 lets four jobs' learners share a GPU (seed studies, sweeps)."""


@config_section
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
        if self.replay.capacity < self.learner.batch_size:
            raise ConfigValueError(
                "replay.capacity", f"must hold at least one batch (learner.batch_size={self.learner.batch_size})"
            )
        context = self.context
        for key in ("encoder", "reconstruction"):
            if getattr(context, key) == "basis" and context.mode == "dynamics_map" and self.env.kind != "vehicle":
                raise ConfigValueError(
                    f"context.{key}", f"basis is built from the vehicle population's maps: it needs env.kind vehicle, not {self.env.kind}"
                )
        if self.env.kind == "vehicle" and self.env.vehicle.action == "residual_map" and context.mode not in (
            "oracle", "dynamics_map"
        ):
            raise ConfigValueError(
                "env.vehicle.action", f"residual_map inverts the acceleration map the context knows: it needs "
                f"context.mode oracle (the true map) or dynamics_map (the estimate), not {context.mode}"
            )  # fmt: skip
        runs = self.train.parallel_runs
        if self.train.run_overrides and len(self.train.run_overrides) != runs:
            raise ConfigValueError(
                "train.run_overrides", f"lists {len(self.train.run_overrides)} runs, train.parallel_runs is {runs}"
            )


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` strictly and apply ``--set`` overrides; errors name key and file."""
    return config_from(load_yaml(Path(path)), str(path), overrides)


def config_from(data: dict[str, Any], source: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A config from YAML data (a file's, a checkpoint's, none) and ``--set`` overrides; errors name ``source``."""
    for assignment in overrides:
        data = apply_override(data, assignment)
    return build(Config, data, with_overrides(source, overrides))


def with_overrides(source: str, overrides: list[str] | tuple[str, ...]) -> str:
    """How errors name a config: its file, and the ``--set`` overrides on top of it."""
    return f"{source} (with --set {' '.join(overrides)})" if overrides else source


def build(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Validate ``data`` into the config section ``cls``; the first problem becomes a ``ConfigError``."""
    try:
        return pydantic.TypeAdapter(cls).validate_python(data)
    except pydantic.ValidationError as err:
        raise config_error(cls, err.errors()[0], source) from None


def config_error(cls: type, error: Any, source: str) -> ConfigError:
    """One pydantic error as ``ConfigError``: the full key path, and a message in the config's words."""
    loc = error["loc"]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigValueError):  # a check across fields, raised in a section's __post_init__
        return ConfigError(source, f"{key}.{cause.key}" if key else cause.key, cause.message)
    if error["type"] == "unexpected_keyword_argument":
        known = ", ".join(fields_of(section_at(cls, loc[:-1])))
        return ConfigError(source, key, f"unknown key (known: {known})")
    bound = BOUNDS.get(error["type"])
    message = f"must be {bound[1]} {error['ctx'][bound[0]]}" if bound else error["msg"].removeprefix("Value error, ")
    if not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})"
    return ConfigError(source, key, message)


def fields_of(section: type) -> dict[str, Any]:
    """A section's fields (pydantic's ``FieldInfo``: resolved annotation, default, description)."""
    return section.__pydantic_fields__  # type: ignore[attr-defined]


def section_at(cls: type, loc: tuple) -> type:
    for name in loc:
        cls = fields_of(cls)[name].annotation
    return cls


def is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "__pydantic_fields__")


def config_help(cls: type = Config, prefix: str = "") -> list[str]:
    """Every key with its type, default and description (``python -m cluster.train --help-config``)."""
    lines = []
    for name, info in fields_of(cls).items():
        if is_section(info.annotation):
            lines += config_help(info.annotation, f"{prefix}{name}.")
            continue
        default = info.get_default(call_default_factory=True)
        kind = typing.get_origin(info.annotation) or info.annotation
        choices = ", ".join(map(str, typing.get_args(info.annotation)))
        type_name = f"one of {choices}" if kind is Literal else getattr(kind, "__name__", str(kind))
        description = " ".join(info.description.split())
        lines.append(f"{prefix}{name} ({type_name}, default {to_plain(default)!r}): {description}")
    return lines


JOB_KEYS = ("cluster.", "metrics.", "train.run_dir", "train.parallel_runs", "train.run_overrides",
            "train.log_every_seconds", "learner.device", "checkpoint.dir")  # fmt: skip
"""Keys of a ``parallel_runs`` job as a whole: no run overrides them."""


def run_configs(config: Config, source: str = "config") -> list[Config]:
    """The configs of a job's runs: the job's own for ``parallel_runs: 1`` (with its one ``run_overrides`` entry, if
    given); else run ``k``'s, a whole single-run config (``<run_dir>/runs/<k>``, seed ``seed + k``, its own metrics
    port and checkpoint directory, then ``run_overrides[k]``). Errors name the run's override."""
    train = config.train
    if train.parallel_runs == 1:
        if not train.run_overrides:
            return [config]
        data = to_plain(config)
        data["train"]["run_overrides"] = []
        return [config_from(data, f"{source}, train.run_overrides[0]", run_only(train.run_overrides[0], 0, source))]
    configs = []
    for k in range(train.parallel_runs):
        data = to_plain(config)
        data["train"].update(parallel_runs=1, run_overrides=[], run_dir=str(run_dir_of(config, k)), seed=train.seed + k)
        if config.metrics.port:
            data["metrics"]["port"] = config.metrics.port + k
        if config.checkpoint.dir:
            data["checkpoint"]["dir"] = str(Path(config.checkpoint.dir) / "runs" / str(k))
        overrides = run_only(train.run_overrides[k], k, source) if train.run_overrides else []
        configs.append(config_from(data, f"{source}, train.run_overrides[{k}]", overrides))
    return configs


def run_only(overrides: list[str], k: int, source: str) -> list[str]:
    """Run ``k``'s overrides, refused where they set a key of the whole job (``JOB_KEYS``)."""
    for assignment in overrides:
        key = assignment.split("=", 1)[0].strip()
        if key.startswith(JOB_KEYS) or f"{key}." in JOB_KEYS:
            raise ConfigError(source, f"train.run_overrides[{k}]", f"{key} is the job's, the same for every run")
    return list(overrides)


def run_dir_of(config: Config, k: int) -> Path:
    """Where run ``k`` of a ``parallel_runs`` job lives."""
    return Path(config.train.run_dir) / "runs" / str(k)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; problems become ``ConfigError``."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(str(path), "<file>", f"cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "<file>", f"not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "<file>", "top level must be a mapping")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to a nested mapping copy."""
    if "=" not in assignment:
        raise ConfigError("--set", assignment, "expected KEY=VALUE, for example learner.lr=1e-5")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError("--set", key, "empty key component")
    result = dict(data)
    node = result
    for part in parts[:-1]:
        child = node.get(part, {})
        if not isinstance(child, dict):
            raise ConfigError("--set", key, f"{part} is not a section")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return result


def to_plain(value: Any) -> Any:
    """A config (or any value in one) as YAML-safe data: tuples become lists."""
    return pydantic.TypeAdapter(type(value)).dump_python(value, mode="json")


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML (saved in the run directory and in checkpoints)."""
    return yaml.safe_dump(to_plain(config), sort_keys=False)


def config_hash(config: Config) -> str:
    """A stable sha256 of the resolved config."""
    return hashlib.sha256(json.dumps(to_plain(config), sort_keys=True).encode()).hexdigest()


__all__ = ["Config", "ConfigError", "build", "config_from", "config_help", "load_config", "config_to_yaml", "config_hash",
           "run_configs"]  # fmt: skip
