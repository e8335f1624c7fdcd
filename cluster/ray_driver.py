"""``cluster.mode: ray``: N rollout actors and one learner actor, collecting asynchronously."""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from cluster.config import Config
from cluster.ray_actors import FragmentHeader, LearnerActor, RolloutActor, TestHooks
from cluster.runner import (
    LearnerStartError,
    Stopper,
    done_line,
    format_progress,
    prepare_run_dir,
    summary_dict,
    write_summary,
)
from learner.safety import NonFiniteStop
from learner.service import Progress, StepReport

log = logging.getLogger("dmsac")
ACTOR_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError)


def connect(config: Config) -> None:
    """Join the configured or running cluster; with none, start a local Ray instance (laptop mode)."""
    if ray.is_initialized():
        return
    extra = {"_node_ip_address": config.cluster.node_ip_address} if config.cluster.node_ip_address else {}
    if config.cluster.address:
        ray.init(address=config.cluster.address, **extra)
        return
    running = running_cluster_address()
    if running:
        ray.init(address=running, **extra)
        log.info("joined the running Ray cluster at %s", running)
        return
    # Enough logical CPUs for every actor: a 2-core laptop still runs the whole job.
    cpus = max(os.cpu_count() or 1, config.cluster.num_actors + 1)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, **extra)
    log.info("started a local Ray instance with %d CPUs", cpus)


def running_cluster_address() -> str | None:
    """The cluster ``ray.init(address="auto")`` would join (``RAY_ADDRESS``, else the last ``ray start``), if it answers.

    A head that ended without ``ray stop`` leaves its address recorded; joining
    it would retry for minutes, so a quick TCP probe decides first.
    """
    try:
        address = ray._private.services.canonicalize_bootstrap_address("auto")  # Ray's own lookup
    except ConnectionError:
        return None
    if not address:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3.0):
            return address
    except (OSError, ValueError):
        log.warning(
            "a Ray cluster is recorded at %s but does not answer (stopped without `ray stop`?); "
            "starting a local Ray instance",
            address,
        )
        return None


def learner_options(config: Config) -> dict:
    """One GPU for the learner when asked for (auto/cuda) and the cluster has one; else a CPU."""
    resources = ray.cluster_resources()
    options: dict = {"num_cpus": 1}
    if config.learner.device != "cpu" and resources.get("GPU", 0) >= 1:
        options["num_gpus"] = 1
    elif config.learner.device == "cuda":
        raise LearnerStartError("learner.device is 'cuda' but the Ray cluster has no GPU")
    if resources.get("dmsac_learner", 0) >= 1:
        options["resources"] = {"dmsac_learner": 1}
    return options


def rollout_options(config: Config) -> dict:
    options: dict = {"num_cpus": 1, "max_restarts": config.cluster.max_actor_restarts, "max_task_retries": 0}
    if ray.cluster_resources().get("dmsac_rollout", 0) >= 1:
        options["resources"] = {"dmsac_rollout": 1}
    return options


@dataclass
class Fleet:
    """The rollout actors and what the driver knows about them."""

    actors: list
    restarts: list[int]
    alive: list[bool]
    incarnations: list[int]
    restart_versions: list[tuple[int, int]] = field(default_factory=list)
    """(version sent, version of the first fragment) for every restarted incarnation."""
    retry_at: dict[int, float] = field(default_factory=dict)
    """Actors that failed a task and are being restarted by Ray: when to submit to them again."""
    died_in_a_row: dict[int, int] = field(default_factory=dict)

    @property
    def alive_count(self) -> int:
        """Actors serving fragments now (a restarting one is not)."""
        return sum(alive for i, alive in enumerate(self.alive) if i not in self.retry_at)


class RayDriver:
    """Routes fragments from actors to the learner and weights from the learner to actors."""

    def __init__(self, config: Config, resume: str | None = None, hooks: TestHooks | None = None) -> None:
        self.config = config
        self.learner = LearnerActor.options(**learner_options(config)).remote(config, resume, hooks or TestHooks())
        options = rollout_options(config)
        actors = [RolloutActor.options(**options).remote(config, i) for i in range(config.cluster.num_actors)]
        count = len(actors)
        self.fleet = Fleet(actors, [0] * count, [True] * count, [0] * count)
        self.weights: tuple[int, list] = (0, [None])
        self.pending: dict = {}  # header ref -> (actor index, fragment ref)
        self.learner_steps: list = []
        self.env_steps_sent = 0
        self.progress: Progress | None = None
        self.gone_since: float | None = None
        self.health: list[dict] = []

    def publish(self, report_weights) -> None:
        if report_weights is not None and report_weights.version > self.weights[0]:
            self.weights = (report_weights.version, [ray.put(report_weights)])  # one put per version

    def submit(self, index: int) -> None:
        random_actions = self.env_steps_sent < self.config.train.warmup_steps
        header, fragment = (
            self.fleet.actors[index]
            .rollout.options(num_returns=2)
            .remote(self.config.rollout.steps_per_fragment, random_actions, self.weights)
        )
        self.pending[header] = (index, fragment, self.weights[0])
        self.env_steps_sent += self.config.rollout.steps_per_fragment * self.config.env.num_envs

    def on_header(self, ref) -> None:
        index, fragment, version_sent = self.pending.pop(ref)
        try:
            header: FragmentHeader = ray.get(ref)
        except ACTOR_FAILURES as err:
            self.on_actor_failure(index, err)
            return
        self.fleet.died_in_a_row.pop(index, None)
        if header.incarnation != self.fleet.incarnations[index]:
            self.fleet.incarnations[index] = header.incarnation
            self.fleet.restarts[index] += 1
            self.fleet.restart_versions.append((version_sent, header.weights_version))
            self.learner.report_fleet.remote(self.fleet.alive_count, 1)
            log.warning(
                "rollout actor %d is back (incarnation %d, restart %d of %d) with weights v%d",
                index,
                header.incarnation,
                self.fleet.restarts[index],
                self.config.cluster.max_actor_restarts,
                header.weights_version,
            )
        self.learner_steps.append(self.learner.step.remote(fragment))
        if self.env_steps_sent < self.config.train.total_env_steps:
            self.submit(index)

    def on_actor_failure(self, index: int, err: Exception) -> None:
        """A failed fragment: wait for Ray to restart the actor, or give it up once Ray has.

        Ray answers ``ActorUnavailableError`` while it restarts an actor and
        ``ActorDiedError`` once it will not (restarts spent); a restart is
        counted when the new incarnation's first fragment arrives.
        """
        self.env_steps_sent -= self.config.rollout.steps_per_fragment * self.config.env.num_envs
        if isinstance(err, ray.exceptions.ActorDiedError):
            self.fleet.died_in_a_row[index] = self.fleet.died_in_a_row.get(index, 0) + 1
        spent = self.fleet.restarts[index] >= self.config.cluster.max_actor_restarts
        if self.fleet.died_in_a_row.get(index, 0) >= (1 if spent else 3):
            self.fleet.alive[index] = False
            self.fleet.retry_at.pop(index, None)
            self.learner.report_fleet.remote(self.fleet.alive_count, 0)
            log.error(
                "rollout actor %d is gone after %d restarts; %d actors remain",
                index,
                self.fleet.restarts[index],
                self.fleet.alive_count,
            )
            return
        if index not in self.fleet.retry_at:
            log.warning("rollout actor %d failed (%s); waiting for Ray to restart it", index, type(err).__name__)
        self.fleet.retry_at[index] = time.monotonic() + 1.0
        self.learner.report_fleet.remote(self.fleet.alive_count, 0)

    def resubmit_due(self) -> None:
        now = time.monotonic()
        for index in [i for i, at in self.fleet.retry_at.items() if at <= now]:
            del self.fleet.retry_at[index]
            self.submit(index)

    def drain_learner(self, keep: int) -> None:
        """Wait until at most ``keep`` learner steps are queued; broadcast the newest weights."""
        while len(self.learner_steps) > keep:
            report: StepReport = ray.get(self.learner_steps.pop(0))
            self.progress = report.progress
            self.publish(report.weights)

    def collect_health(self) -> None:
        """Each live actor's incarnation, weights version and whether its policy is finite."""
        for index, actor in enumerate(self.fleet.actors):
            if not self.fleet.alive[index]:
                continue
            try:
                self.health.append(ray.get(actor.health.remote(), timeout=60))
            except (*ACTOR_FAILURES, ray.exceptions.GetTimeoutError):
                self.health.append({"incarnation": -1, "weights_version": -1, "policy_finite": None})

    def check_fleet(self) -> None:
        if self.fleet.alive_count > 0:
            self.gone_since = None
            return
        self.gone_since = self.gone_since or time.monotonic()
        if time.monotonic() - self.gone_since > self.config.cluster.actors_gone_timeout_s:
            raise FleetLost(f"every rollout actor has been gone for over {self.config.cluster.actors_gone_timeout_s} s")


class FleetLost(RuntimeError):
    pass


def run_ray(config: Config, resume: str | None = None, hooks: TestHooks | None = None, on_tick=None) -> int:
    """Train on Ray until the step budget is spent or a stop is requested; returns the exit code.

    0: done (or stopped by SIGTERM/Ctrl-C after a final checkpoint); 3: every actor lost;
    4: stopped on a non-finite update (the message names the last good checkpoint).
    """
    run_dir = prepare_run_dir(config)
    connect(config)
    driver = RayDriver(config, resume, hooks)
    started = time.monotonic()
    history: list[tuple[int, float]] = []
    try:
        try:
            driver.publish(ray.get(driver.learner.initial_weights.remote()))
        except ray.exceptions.RayActorError as err:  # its constructor raised: the cause is the last line
            lines = [line for line in str(err).splitlines() if line.strip()]
            raise LearnerStartError(f"the learner actor did not start: {lines[-1].strip()}") from err
        log.info(
            "learner on %s; %d rollout actors x %d envs; run dir %s",
            ray.get(driver.learner.device.remote()),
            config.cluster.num_actors,
            config.env.num_envs,
            run_dir,
        )
        driver.learner.report_fleet.remote(len(driver.fleet.actors), 0)
        with Stopper() as stopper:
            collect(driver, stopper, history, on_tick)
        driver.drain_learner(keep=0)
        driver.collect_health()
    except FleetLost as err:
        log.error("%s; writing a checkpoint and stopping", err)
        ray.get(driver.learner.checkpoint.remote())
        return 3
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, NonFiniteStop):
            log.error("%s", err.cause)
            return 4
        raise
    finally:
        for actor in driver.fleet.actors:
            ray.kill(actor, no_restart=True)
    checkpoint = ray.get(driver.learner.checkpoint.remote())
    wall = time.monotonic() - started
    finish(driver, run_dir, wall, history)
    log.info(done_line(driver.progress, wall, checkpoint))
    return 0


def collect(driver: RayDriver, stopper: Stopper, history: list, on_tick) -> None:
    """The driver loop: route fragments as they come, keep the learner queue short, report progress."""
    config = driver.config
    if driver.progress is None:
        driver.progress = ray.get(driver.learner.progress.remote())
    driver.env_steps_sent = driver.progress.env_steps  # a resumed run continues its budget
    for index in range(config.cluster.num_actors):
        driver.submit(index)
    last_log = time.monotonic()
    while (driver.pending or driver.fleet.retry_at) and not stopper.requested:
        ready = ray.wait(list(driver.pending), num_returns=1, timeout=1.0)[0] if driver.pending else []
        if not ready and not driver.pending:
            time.sleep(0.2)
        for ref in ready:
            driver.on_header(ref)
        driver.resubmit_due()
        driver.drain_learner(keep=config.cluster.max_inflight_steps)
        driver.check_fleet()
        if on_tick is not None:
            on_tick(driver)
        progress = driver.progress
        if not math.isnan(progress.recent_return):
            history.append((progress.env_steps, progress.recent_return))
        if time.monotonic() - last_log >= config.train.log_every_seconds:
            last_log = time.monotonic()
            log.info(format_progress(progress, f"actors={driver.fleet.alive_count}/{len(driver.fleet.actors)}"))


def finish(driver: RayDriver, run_dir, wall: float, history: list) -> dict:
    progress = ray.get(driver.learner.progress.remote())
    driver.progress = progress
    summary = summary_dict(progress, wall, history)
    summary["fleet"] = {
        "restarts": driver.fleet.restarts,
        "alive": driver.fleet.alive_count,
        "restart_versions": driver.fleet.restart_versions,
        "actors": driver.health,
    }
    write_summary(run_dir, summary)
    return summary
