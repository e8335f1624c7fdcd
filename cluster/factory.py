"""The composition root: the only place that constructs collaborators from config."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket
from pathlib import Path

import numpy as np
import yaml

from actors.context.base import ContextProvider, NoContext, policy_context_dim
from actors.envs import VectorEnv
from actors.gym_env import GymVectorEnv
from actors.policy import PolicyCopy
from actors.worker import RolloutWorker
from cluster.config import Config, config_hash, config_to_yaml
from cluster.runner import make_schedule
from learner.checkpoint import Checkpointer, NoGoodCheckpointError, checkpoint_root
from learner.config import LearnerConfig
from learner.learner import Dimensions, Learner, resolve_device
from learner.metrics import TARGETS_FILE_NAME, MetricsExporter, target_host, write_file_sd
from learner.safety import Safety, make_nan_response
from learner.service import LearnerService
from learner.tensorboard import BOARD_DIR, ScalarLog, TensorBoardLog
from learner.types import ConfigValueError

log = logging.getLogger(__name__)


def make_env(config: Config, seed: int) -> VectorEnv:
    """The environments of ``config`` without their context (an env whose base controller reads the context's maps,
    ``env.vehicle.action: residual_map``, comes from ``make_env_and_context``)."""
    env = config.env
    if env.kind != "vehicle":
        return GymVectorEnv(env.id, env.num_envs, env.kwargs)
    from actors.vehicle import VehicleVectorEnv

    vehicles = VehicleVectorEnv(env.num_envs, env.vehicle, seed=seed)
    if env.vehicle.action == "residual_pid":
        from actors.vehicle.residual import ResidualEnv

        return ResidualEnv(vehicles, env.vehicle.residual_scale)
    if env.vehicle.action == "residual_map":
        raise ValueError("env.vehicle.action residual_map reads the context's maps: build it with make_env_and_context")
    return vehicles


def make_env_and_context(config: Config, seed: int) -> tuple[VectorEnv, ContextProvider]:
    """A worker's environments and their context provider; under ``residual_map`` the environments' base controller
    inverts the maps that context knows (``map_source``)."""
    return with_context(config, make_env(without_map_base(config), seed))


def without_map_base(config: Config) -> Config:
    """The config ``make_env`` builds a ``residual_map`` run's environments from: the vehicles alone, their base
    controller added by ``with_context`` once the context exists."""
    vehicle = config.env.vehicle if config.env.kind == "vehicle" else None
    return direct_control(config) if vehicle is not None and vehicle.action == "residual_map" else config


def with_context(config: Config, env: VectorEnv) -> tuple[VectorEnv, ContextProvider]:
    """``env`` (from ``make_env(without_map_base(config))``) with its context provider, and under ``residual_map``
    the map controller as its base."""
    context = make_policy_context(config, env)
    vehicle = config.env.vehicle
    if config.env.kind == "vehicle" and vehicle.action == "residual_map":
        from actors.vehicle.residual import MapFeedForward, ResidualEnv

        base = MapFeedForward(env.num_envs, map_source(config, env, context), vehicle.map_control, vehicle.dt)
        env = ResidualEnv(env, vehicle.residual_scale, base)
    if config.context.append_history:
        from actors.context.history import HistoryContext
        from actors.context.privileged import JoinedContext

        context = JoinedContext(context, HistoryContext(env.num_envs, config.context))
    return env, with_privileged_critic(config, env, context)


def direct_control(config: Config) -> Config:
    """``config`` with the vehicle's command the action itself (``env.vehicle.action: direct``); others unchanged."""
    if config.env.kind != "vehicle":
        return config
    direct = dataclasses.replace(config.env.vehicle, action="direct")
    return dataclasses.replace(config, env=dataclasses.replace(config.env, vehicle=direct))


def map_source(config: Config, env: VectorEnv, policy_context: ContextProvider):
    """The maps a ``residual_map`` base controller inverts: the true ones with the oracle context, else the dynamics-map
    context's estimate (``Config`` refuses any other context with it)."""
    from actors.vehicle.residual import EstimatedMaps, TrueMaps

    return TrueMaps(env) if config.context.mode == "oracle" else EstimatedMaps(policy_context)


def with_privileged_critic(config: Config, env: VectorEnv, provider: ContextProvider) -> ContextProvider:
    """``provider``, with the true vehicle parameters appended for the critics if ``context.privileged_critic``."""
    if not config.context.privileged_critic:
        return provider
    from actors.context.privileged import JoinedContext
    from actors.vehicle.oracle import OracleContext

    if not hasattr(env, "true_params"):
        raise ValueError("context.privileged_critic reads the true vehicle parameters: it needs env.kind vehicle")
    return JoinedContext(provider, OracleContext(env, config.env.vehicle.randomization), second_for_critics_only=True)


def make_policy_context(config: Config, env: VectorEnv) -> ContextProvider:
    """The context of ``context.mode`` (what the policy sees)."""
    context = getattr(config, "context", None)
    if context is None or context.mode == "none":
        return NoContext(env.num_envs)
    if context.mode == "oracle":
        from actors.vehicle.oracle import OracleContext

        if not hasattr(env, "true_params"):
            raise ValueError("context.mode oracle reads the true vehicle parameters: it needs env.kind vehicle")
        return OracleContext(env, config.env.vehicle.randomization)
    if context.mode == "history":
        from actors.context.history import HistoryContext

        return HistoryContext(env.num_envs, context)
    from cluster.context_factory import make_dynamics_map_context

    return make_dynamics_map_context(config, env)


def actor_seed(config: Config, actor_id: int, stream: int = 0) -> int:
    """Distinct, reproducible seeds per actor and seed stream.

    ``stream`` is 0 for a fresh run, the resumed checkpoint's env step for a resumed
    one (its episodes differ from the first run's), and random for an actor Ray rebuilt.
    """
    return (config.train.seed * 1_000_003 + actor_id * 10_007 + stream * 101 + 1) % 2**63


def new_incarnation() -> int:
    """An incarnation unique per worker start (process start, Ray restart, resume): fragment keys never repeat."""
    return secrets.randbits(62)


def make_worker(config: Config, actor_id: int = 0, seed_stream: int = 0) -> RolloutWorker:
    seed = actor_seed(config, actor_id, seed_stream)
    env, provider = make_env_and_context(config, seed)
    policy = PolicyCopy(env.observation_dim + policy_context_dim(provider), env.action_dim, config.learner.hidden_sizes, seed)
    return RolloutWorker(env, provider, policy, actor_id=actor_id, incarnation=new_incarnation(), seed=seed)


def probe_dimensions(config: Config) -> Dimensions:
    """Observation, context and action sizes, read off one environment that is built, reset and stepped once.

    The driver calls it before any actor starts: any failure is a config problem,
    ``ConfigValueError`` naming the key (``env.id``, ``env.kwargs``, ``env.vehicle``, ``context``).
    """
    key = "env.vehicle" if config.env.kind == "vehicle" else "env.id"
    try:
        single = dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=1))
        env = make_env(without_map_base(single), seed=0)
    except TypeError as err:
        raise ConfigValueError("env.kwargs" if config.env.kwargs else key, f"{config.env.id}: {err}") from None
    except Exception as err:  # gymnasium's NameNotFound, an import error, a discrete action space, ...
        raise ConfigValueError(key, f"{config.env.id if key == 'env.id' else 'vehicle'}: {err}") from None
    try:
        env, provider = with_context(single, env)  # the context, and a base controller that reads it
    except Exception as err:  # a missing or mismatched encoder checkpoint, ...
        raise ConfigValueError("context", f"the context provider cannot be built: {err}") from None
    try:
        env.reset(0)
        env.step((env.action_low + env.action_high) / 2 * np.ones((1, env.action_dim), np.float32))
    except Exception as err:
        raise ConfigValueError(key, f"reset or step of one environment failed: {type(err).__name__}: {err}") from None
    if config.context.mode in ("dynamics_map", "history") and not getattr(env, "reports_samples", True):
        raise ConfigValueError(
            "env.id", f"{config.env.id}: context.mode {config.context.mode} needs info['dynamics_samples'] from step() (an array "
            "[k, 4] of u, v, a, theta: README, 'Your own environment'); this environment returned none"
        )  # fmt: skip
    policy_part = policy_context_dim(provider)  # None: the policy sees the whole context
    return Dimensions(env.observation_dim, provider.context_dim, env.action_dim,
                      None if policy_part == provider.context_dim else policy_part)  # fmt: skip


AUTO_COMPILE_MIN_UPDATES = 40_000
"""``learner.fast_path: auto`` compiles only for a job that plans at least this many updates per run. On an H200 the
compile took 16-25 s with cold caches (training goes on beside it, slower) and made a Pendulum-sized update 2.4x
faster (3 215 against 1 312 per s, ``bench/learner_startup.py``): its time back after some 30 000-45 000
learner-bound updates. Below the bar it only slows the job: the Pendulum job (3 runs, 14 000 updates each) reached
-200 in 13.4 s on average with the plain graph, 18.7 s with the compile (warm caches) and 28.2 s cold
(``bench/results/pendulum_joint_fast_path.md``). Above it, it pays: the vehicle job of 8 actors and 61 680 updates
trained 1 308 updates/s with the plain graph (67 s for the run), 3 395 once compiled in the background (47 s)
(``bench/results/in_job_rate_plain_graph.md``, ``in_job_rate_8_stacked.md``)."""


def planned_updates(config: Config) -> int:
    """The updates a run plans: one per ``train.update_to_data`` env step after the warm-up."""
    return int(max(0, config.train.total_env_steps - config.train.warmup_steps) * config.train.update_to_data)


def job_learner_config(config: Config) -> LearnerConfig:
    """``config.learner`` with ``fast_path: auto`` settled for this job: ``graph`` (never compiled) when it plans
    fewer than ``AUTO_COMPILE_MIN_UPDATES`` updates per run; any other value as given."""
    learner = config.learner
    updates = planned_updates(config)
    if learner.fast_path != "auto" or updates >= AUTO_COMPILE_MIN_UPDATES:
        return learner
    log.info("learner.fast_path auto: %d updates per run do not pay back torch.compile (under %d): the plain CUDA graph",
             updates, AUTO_COMPILE_MIN_UPDATES)  # fmt: skip
    return dataclasses.replace(learner, fast_path="graph")


def make_learner(config: Config, dims: Dimensions) -> Learner:
    device = resolve_device(config.learner.device)
    return Learner(dims, job_learner_config(config), config.replay, device, config.train.seed)


def make_learner_service(
    config: Config, resume: str | None = None, serve_metrics: bool = True, node_ip: str = "",
    require_checkpoint: bool = False,
) -> LearnerService:  # fmt: skip
    """The learner service with its checkpointer, metrics exporter and NaN response; resumed if asked.

    ``node_ip``: the address of the node the learner runs on, for the scrape target (Ray mode knows it).
    ``require_checkpoint``: ``--resume auto`` finding no checkpoint is an error, not a fresh start (a
    replacement learner on a node that cannot see the checkpoint directory must not start from scratch).
    """
    learner = make_learner(config, probe_dimensions(config))
    run_dir = Path(config.train.run_dir)
    checkpointer = Checkpointer(checkpoint_root(config.checkpoint, run_dir), config.checkpoint.keep_last)
    removed = checkpointer.clean_temporaries()
    if removed:
        log.warning("removed unfinished checkpoint directories: %s", ", ".join(removed))
    safety = Safety(config.safety, make_nan_response(config.safety), resume_command(config))
    meta = {
        "config_hash": config_hash(config),
        "config_yaml": config_to_yaml(config),
        "save_replay": config.checkpoint.save_replay,
    }
    service = LearnerService(
        learner, make_schedule(config), config.train.episode_window, safety, checkpointer,
        make_metrics(config, run_dir, node_ip) if serve_metrics and config.metrics.enabled else None, meta,
        make_board(config, run_dir), overlap_blocks=config.learner.overlap_blocks,
    )  # fmt: skip
    if resume:
        resume_from(service, checkpointer, resume, config, require_checkpoint)
    return service


def resume_command(config: Config) -> str:
    return f"python -m cluster.train --config {Path(config.train.run_dir) / 'config.yaml'} --resume auto"


def resume_from(
    service: LearnerService, checkpointer: Checkpointer, spec: str, config: Config, require: bool = False
) -> None:
    """``--resume auto`` with no checkpoint at all starts fresh; a broken one falls back to the previous good one."""
    if spec == "auto" and not checkpointer.entries():
        if require:
            raise NoGoodCheckpointError(
                f"no checkpoint under {checkpointer.root} on node {socket.gethostname()}, although the learner "
                "before this one wrote some: checkpoint.dir (or train.run_dir) must be on storage every node sees"
            )
        log.info("--resume auto: no checkpoint under %s yet; starting a fresh run", checkpointer.root)
        return
    # The driver already resolved a PATH (verifying it); load() verifies once more, so don't resolve twice.
    path = checkpointer.resolve(spec) if spec == "auto" else Path(spec)
    # Loaded on the CPU: RNG states must stay CPU byte tensors; load_state_dict copies the rest onto the device.
    loaded = checkpointer.load(path)
    service.load_full_state(loaded.state, loaded.replay)
    apply_rate_overrides(service, config, loaded.state.get("config_yaml", ""))
    log.info("resumed from %s at env step %d, update %d", path, service.learner.env_steps, service.learner.updates_done)


def apply_rate_overrides(service: LearnerService, config: Config, saved_config_yaml: str) -> None:
    """A resume keeps the reward scale and learning rate in force (remedies included), unless this run's config
    sets a value other than the checkpoint's config did: that is the user asking for it (the runbook's NaN advice)."""
    saved = (yaml.safe_load(saved_config_yaml) or {}).get("learner", {}) if saved_config_yaml else {}
    wanted = config.learner
    scale, lr = service.learner.rates()
    if "reward_scale" in saved and float(saved["reward_scale"]) != wanted.reward_scale:
        log.warning("learner.reward_scale=%g replaces the checkpoint's %g in force", wanted.reward_scale, scale)
        scale = wanted.reward_scale
    if "lr" in saved and float(saved["lr"]) != wanted.lr:
        log.warning("learner.lr=%g replaces the checkpoint's %g in force", wanted.lr, lr)
        lr = wanted.lr
    service.learner.set_rates(scale, lr)
    service.publish_in_force()


def make_board(config: Config, run_dir: Path) -> ScalarLog:
    """TensorBoard scalars in ``<run_dir>/tensorboard`` (a resumed or replacement learner adds an event file)."""
    if not config.metrics.tensorboard:
        return ScalarLog()
    return TensorBoardLog(run_dir / BOARD_DIR, config.metrics.tensorboard_every_updates)


def make_metrics(config: Config, run_dir: Path, node_ip: str = "") -> MetricsExporter:
    """Start the learner's Prometheus endpoint and write its file_sd target into the run directory."""
    exporter = MetricsExporter(config.metrics, run=run_dir.name)
    host, port = exporter.start()
    target = target_host(host, node_ip or config.cluster.node_ip_address or "127.0.0.1")
    write_file_sd(run_dir / TARGETS_FILE_NAME, target, port, {"run": run_dir.name})
    return exporter
