"""``cluster.mode: ray``: N rollout actors and one learner actor, collecting asynchronously.

The step budget is counted in fragments handed out: an actor gets its next
fragment only while ``train.total_env_steps`` is not reached, a fragment lost
with a dying actor is handed to that actor again once Ray has restarted it (or
to another actor when it is gone for good), and every fragment handed out is
ingested. So the learner ingests exactly the budget rounded up to whole
fragments (README, "The step budget"). A learner that dies is replaced inside
the job by ``LearnerHandle`` (``cluster/learner_handle.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from cluster.config import Config
from cluster.learner_handle import LearnerHandle
from cluster.placement import SchedulingWatch, connect, resource_shape, rollout_options
from cluster.ray_actors import FragmentHeader, RolloutActor, TestHooks
from cluster.runner import (
    CapacityError,
    RunRecord,
    Stopper,
    exit_code_for,
    format_progress,
    prepare_run_dir,
    write_summary,
)
from learner.checkpoint_io import read_manifest

log = logging.getLogger("dmsac")
ACTOR_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError)


def resumed_step(resume: str | None) -> int:
    """The env step a resume starts from (0 for a fresh start): the actors' seed stream."""
    if resume is None or resume == "auto":  # the driver resolved every existing checkpoint to a path
        return 0
    return int(read_manifest(Path(resume))["step"])


@dataclass
class Fleet:
    """The rollout actors and what the driver knows about them."""

    actors: list
    restarts: list[int]
    alive: list[bool]
    incarnations: list[int | None]
    """The incarnation of each actor's latest fragment (None before its first)."""
    restart_versions: list[tuple[int, int]] = field(default_factory=list)
    """(version sent, version of the first fragment) for every restarted incarnation."""
    retry_at: dict[int, float] = field(default_factory=dict)
    """Actors whose fragment failed with ``ActorDiedError`` while Ray may still restart them: when to ask again."""
    died_in_a_row: dict[int, int] = field(default_factory=dict)

    @property
    def alive_count(self) -> int:
        """Actors serving fragments now (a restarting one is not)."""
        return sum(alive for i, alive in enumerate(self.alive) if i not in self.retry_at)


class RayDriver:
    """Routes fragments from actors to the learner and weights from the learner to actors."""

    def __init__(self, config: Config, resume: str | None, hooks: TestHooks | None, stopper: Stopper) -> None:
        self.config = config
        self.stopper = stopper
        self.learner = LearnerHandle(config, resume, hooks, stopper)
        self.rollout_options = rollout_options(config)
        stream = resumed_step(resume)
        count = config.cluster.num_actors
        self.fleet = Fleet(
            [RolloutActor.options(**self.rollout_options).remote(config, i, stream) for i in range(count)],
            [0] * count, [True] * count, [None] * count,
        )  # fmt: skip
        self.fragment_steps = config.rollout.steps_per_fragment * config.env.num_envs
        self.pending: dict = {}  # header ref -> (actor index, fragment ref, weights version sent)
        self.env_steps_handed_out = 0
        self.env_steps_received = 0
        self.record: RunRecord | None = None
        self.gone_since: float | None = None
        self.restarting: set[int] = set()
        """Actors asked again after a failure whose new incarnation has not answered yet."""
        self.health: list[dict] = []
        self.watch = SchedulingWatch(config.cluster.schedule_timeout_s)

    @property
    def progress(self):
        """The learner's latest reported progress (for hooks and progress lines)."""
        return self.record.latest if self.record is not None else None

    # -- start-up ----------------------------------------------------------------------------
    def start(self, run_dir: Path) -> None:
        """Wait for the learner's first weights (watching for actors no node can host); start the record."""
        awaited = {"the learner": resource_shape(self.learner.options)}
        awaited.update({f"rollout actor {i}": resource_shape(self.rollout_options) for i in range(len(self.fleet.actors))})
        self.record = RunRecord(run_dir, self.learner.wait_ready(self.watch, awaited, self.needs()))
        self.learner.started(self.record)
        # A resumed run continues its budget: the handed-out count starts at the steps already ingested.
        self.env_steps_handed_out = self.env_steps_received = self.record.start.env_steps
        self.learner.report_fleet(len(self.fleet.actors), 0)

    def needs(self) -> str:
        cpus = self.config.cluster.num_actors + 1
        gpus = self.learner.options.get("num_gpus")
        gpu = f" and {gpus:g} GPU" if gpus else ""
        return f"the job needs {cpus} CPUs{gpu} ({self.config.cluster.num_actors} rollout actors + the learner)"

    # -- fragments -----------------------------------------------------------------------------
    def take_fragment(self) -> bool:
        """Hand out one more fragment of the budget, if any is left and no stop was requested."""
        if self.stopper.requested or self.env_steps_handed_out >= self.config.train.total_env_steps:
            return False
        self.env_steps_handed_out += self.fragment_steps
        return True

    def submit(self, index: int) -> None:
        """Ask actor ``index`` for the fragment it holds of the budget."""
        # Uniform random actions while the steps before this fragment are inside the warm-up (as in local mode).
        random_actions = self.env_steps_handed_out - self.fragment_steps < self.config.train.warmup_steps
        header, fragment = (
            self.fleet.actors[index]
            .rollout.options(num_returns=2)
            .remote(self.config.rollout.steps_per_fragment, random_actions, self.learner.weights)
        )
        self.pending[header] = (index, fragment, self.learner.weights[0])

    def idle(self) -> list[int]:
        busy = {index for index, _, _ in self.pending.values()} | set(self.fleet.retry_at)
        return [i for i, alive in enumerate(self.fleet.alive) if alive and i not in busy]

    def hand_out_idle(self) -> None:
        for index in self.idle():
            if self.take_fragment():
                self.submit(index)

    def on_header(self, ref) -> None:
        index, fragment, version_sent = self.pending.pop(ref)
        try:
            header: FragmentHeader = ray.get(ref)
        except ACTOR_FAILURES as err:
            self.on_actor_failure(index, err)
            return
        self.fleet.died_in_a_row.pop(index, None)
        self.restarting.discard(index)
        self.note_incarnation(index, header, version_sent)
        self.env_steps_received += header.env_steps
        self.learner.step(fragment, header.env_steps)
        if self.take_fragment():
            self.submit(index)

    def note_incarnation(self, index: int, header: FragmentHeader, version_sent: int) -> None:
        known = self.fleet.incarnations[index]
        self.fleet.incarnations[index] = header.incarnation
        if known is None or known == header.incarnation:
            return
        self.fleet.restarts[index] += 1
        self.fleet.restart_versions.append((version_sent, header.weights_version))
        self.learner.report_fleet(self.fleet.alive_count, 1)
        log.warning(
            "rollout actor %d is back (restart %d of %d) with weights v%d",
            index, self.fleet.restarts[index], self.config.cluster.max_actor_restarts, header.weights_version,
        )  # fmt: skip

    def on_actor_failure(self, index: int, err: Exception) -> None:
        """A fragment lost with its actor: ask the same actor again once Ray has restarted it, or give it up.

        Ray answers ``ActorUnavailableError`` while it restarts an actor (a call made now waits
        for the new incarnation) and ``ActorDiedError`` once it may not (restarts spent). A
        restart is counted when the new incarnation's first fragment arrives.
        """
        if isinstance(err, ActorDiedError):
            self.fleet.died_in_a_row[index] = self.fleet.died_in_a_row.get(index, 0) + 1
        spent = self.fleet.restarts[index] >= self.config.cluster.max_actor_restarts
        if self.fleet.died_in_a_row.get(index, 0) >= (1 if spent else 3):
            self.give_up(index)
            return
        if self.stopper.requested:  # no new fragment after a stop: its share of the budget is released
            self.env_steps_handed_out -= self.fragment_steps
            return
        log.warning("rollout actor %d failed (%s); asking it again once Ray has restarted it", index, type(err).__name__)
        self.restarting.add(index)
        if isinstance(err, ActorDiedError):
            self.fleet.retry_at[index] = time.monotonic() + 1.0
        else:
            self.submit(index)
        self.learner.report_fleet(self.fleet.alive_count, 0)

    def give_up(self, index: int) -> None:
        """Ray will not restart actor ``index``: its fragment goes back to the budget, for another actor."""
        self.fleet.alive[index] = False
        self.fleet.retry_at.pop(index, None)
        self.env_steps_handed_out -= self.fragment_steps
        self.learner.report_fleet(self.fleet.alive_count, 0)
        log.error(
            "rollout actor %d is gone after %d restarts; %d actors remain",
            index, self.fleet.restarts[index], self.fleet.alive_count,
        )  # fmt: skip
        self.hand_out_idle()

    def resubmit_due(self) -> None:
        now = time.monotonic()
        for index in [i for i, at in self.fleet.retry_at.items() if at <= now]:
            del self.fleet.retry_at[index]
            self.submit(index)

    # -- health ----------------------------------------------------------------------------------
    def watch_scheduling(self) -> None:
        """Rollout actors pending for resources (``cluster.schedule_timeout_s``): at start-up exit 3; after a
        restart the actor is given up (its fragment goes to the others)."""
        shape = resource_shape(self.rollout_options)
        never = [f"rollout actor {i}" for i, known in enumerate(self.fleet.incarnations) if known is None]
        again = {f"rollout actor {i} (restarting)": i for i in self.restarting if self.fleet.alive[i]}
        for _, names in self.watch.stuck(dict.fromkeys([*never, *again], shape)).items():
            if any(name in never for name in names):
                raise self.watch.capacity_error(names, shape, self.needs())
            for index in (again[name] for name in names):
                ray.kill(self.fleet.actors[index], no_restart=True)
                self.pending = {ref: job for ref, job in self.pending.items() if job[0] != index}
                self.restarting.discard(index)
                self.give_up(index)

    def check_fleet(self) -> None:
        if self.fleet.alive_count > 0:
            self.gone_since = None
            return
        self.gone_since = self.gone_since or time.monotonic()
        if time.monotonic() - self.gone_since > self.config.cluster.actors_gone_timeout_s:
            raise CapacityError(
                f"every rollout actor has been gone for over {self.config.cluster.actors_gone_timeout_s} s "
                "(cluster.actors_gone_timeout_s)"
            )

    def collect_health(self) -> None:
        """Each live actor's incarnation, weights version and whether its policy is finite."""
        for index, actor in enumerate(self.fleet.actors):
            if not self.fleet.alive[index]:
                continue
            try:
                self.health.append(ray.get(actor.health.remote(), timeout=60))
            except (*ACTOR_FAILURES, ray.exceptions.GetTimeoutError):
                self.health.append({"incarnation": -1, "weights_version": -1, "policy_finite": None})

    def fleet_summary(self) -> dict:
        return {
            "restarts": self.fleet.restarts,
            "alive": self.fleet.alive_count,
            "incarnations": self.fleet.incarnations,
            "restart_versions": self.fleet.restart_versions,
            "env_steps_received": self.env_steps_received,
            "actors": self.health,
        }

    def summary_sections(self) -> dict:
        return {"fleet": self.fleet_summary(), "learner": self.learner.summary()}


def run_ray(
    config: Config, resume: str | None = None, hooks: TestHooks | None = None, on_tick=None,
    stopper: Stopper | None = None,
) -> dict:  # fmt: skip
    """Train on Ray until the step budget is spent or a stop is requested; returns the final summary.

    Stopped by SIGTERM/Ctrl-C: the fragments in flight are stored, a final checkpoint written, and
    the summary returned as for a finished run. Otherwise the error that ends the run is raised (its
    exit code: ``runner.exit_code_for``) after ``final_stats.json`` recorded it: ``LearnerStartError``,
    ``CapacityError`` (after a checkpoint), ``NonFiniteStop``, ``SecondSignal``.
    """
    run_dir = prepare_run_dir(config)
    stopper = stopper or Stopper()
    driver: RayDriver | None = None
    connected = False
    with stopper:
        try:
            connected = connect(config)
            driver = RayDriver(config, resume, hooks, stopper)
            if on_tick is not None:  # also while a replacement learner is awaited
                driver.learner.on_wait = lambda: on_tick(driver)
            driver.start(run_dir)
            log.info(
                "learner on %s (%s); %d rollout actors x %d envs; run dir %s",
                driver.learner.call("device"), driver.learner.call("node"), config.cluster.num_actors,
                config.env.num_envs, run_dir,
            )  # fmt: skip
            collect(driver, on_tick)
            finish_in_flight(driver)
            checkpoint = driver.learner.call("checkpoint", False)
            return finish(driver, checkpoint)
        except BaseException as err:
            cause = err.cause if isinstance(err, RayTaskError) and err.cause is not None else err
            if exit_code_for(cause) != 1:
                record_failure(driver, run_dir, cause)
                raise cause from None
            raise
        finally:
            if driver is not None:
                for actor in driver.fleet.actors:
                    ray.kill(actor, no_restart=True)
            if connected:  # now, not at interpreter exit: a local instance stops faster while we wait for it
                ray.shutdown()


def collect(driver: RayDriver, on_tick=None) -> None:
    """The driver loop: route fragments as they come, keep the learner queue short, report progress."""
    config = driver.config
    driver.hand_out_idle()
    last_log = time.monotonic()
    while (driver.pending or driver.fleet.retry_at) and not driver.stopper.requested:
        ready = ray.wait(list(driver.pending), num_returns=1, timeout=1.0)[0] if driver.pending else []
        if not ready and not driver.pending:
            time.sleep(0.2)
        for ref in ready:
            driver.on_header(ref)
        driver.resubmit_due()
        driver.learner.drain(keep=config.cluster.max_inflight_steps)
        driver.watch_scheduling()
        driver.check_fleet()
        if on_tick is not None:
            on_tick(driver)
        if time.monotonic() - last_log >= config.train.log_every_seconds:
            last_log = time.monotonic()
            alive = f"actors={driver.fleet.alive_count}/{len(driver.fleet.actors)}"
            log.info(format_progress(driver.progress, alive))


def finish_in_flight(driver: RayDriver) -> None:
    """Every fragment being collected goes to the learner (ingested only, after a stop); then its queue drains.

    Calls waiting for an actor Ray is still restarting are cancelled: no fragment exists for them yet.
    """
    driver.learner.forward_stop()
    driver.fleet.retry_at.clear()
    for ref, (index, _, _) in list(driver.pending.items()):
        if index in driver.restarting:
            ray.cancel(ref)
            del driver.pending[ref]
            driver.env_steps_handed_out -= driver.fragment_steps
    while driver.pending:
        for ref in ray.wait(list(driver.pending), num_returns=1, timeout=1.0)[0]:
            driver.on_header(ref)
    driver.learner.drain(keep=0)
    driver.collect_health()


def finish(driver: RayDriver, checkpoint) -> dict:
    driver.record.update(driver.learner.call("progress"))
    driver.record.extra.update(driver.summary_sections())
    log.info(driver.record.done_line(checkpoint))
    return driver.record.write(0)


def record_failure(driver: RayDriver | None, run_dir: Path, cause: BaseException) -> None:
    """``final_stats.json`` for a run that ends with an error; exit 3 checkpoints first (the learner is fine)."""
    code, record = exit_code_for(cause), driver.record if driver is not None else None
    if record is None:  # it ended before training started
        write_summary(run_dir, {"exit_code": code, "exit_reason": str(cause)})
        return
    if code in (3, 4) and driver.learner.ready:  # a second signal asks nothing more of the learner
        try:
            if code == 3:
                log.error("%s; writing a checkpoint before stopping", cause)
                ray.get(driver.learner.actor.checkpoint.remote(), timeout=600)
            record.update(ray.get(driver.learner.actor.progress.remote(), timeout=60))
        except (RayActorError, ray.exceptions.GetTimeoutError) as err:  # the record keeps what the driver knew
            log.error("the learner could not add its final figures: %s", err)
    record.extra.update(driver.summary_sections())
    record.write(code, str(cause))
