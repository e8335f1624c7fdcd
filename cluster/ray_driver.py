"""``cluster.mode: ray``: N rollout actors and one learner actor, collecting asynchronously.

The step budget is counted in fragments handed out: an actor gets its next
fragment only while ``train.total_env_steps`` is not reached, a fragment lost
with a dying actor is handed to that actor again once Ray has restarted it (or
to another actor when it is gone for good), and every fragment handed out is
ingested. So the learner ingests exactly the budget rounded up to whole
fragments (README, "The step budget"). A learner that dies is replaced inside
the job by ``LearnerHandle`` (``cluster/learner_handle.py``).

A job of several runs (``train.parallel_runs``) has a ``RayDriver`` per run, each
with its own rollout actors, budget and record, and one learner for all of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from cluster.config import Config, run_configs
from cluster.learner_handle import LearnerHandle
from cluster.placement import SchedulingWatch, connect, resource_shape, rollout_options
from cluster.ray_actors import FragmentHeader, RolloutActor, TestHooks
from cluster.runner import (
    CapacityError,
    RunRecord,
    Stopper,
    exit_code_for,
    format_progress,
    prepare_run_dirs,
    run_label,
    write_summary,
)
from learner.checkpoint import Checkpointer, checkpoint_root
from learner.checkpoint_io import read_manifest

log = logging.getLogger("dmsac")
ACTOR_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError)


def resumed_step(resume: str | None, config: Config) -> int:
    """The env step a resume starts from (0 for a fresh start): the actors' seed stream. ``auto``: the run's last
    good checkpoint (a single run's driver resolved an existing one to its path already)."""
    if resume is None:
        return 0
    if resume == "auto":
        root = checkpoint_root(config.checkpoint, config.train.run_dir)
        good = Checkpointer(root, config.checkpoint.keep_last).latest_good()
        return int(read_manifest(good)["step"]) if good else 0
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
    """Routes one run's fragments from its actors to the learner and the run's weights from the learner to them."""

    def __init__(
        self, config: Config, resume: str | None, hooks: TestHooks | None, stopper: Stopper,
        learner: LearnerHandle | None = None, run: int = 0, runs: int = 1,
    ) -> None:  # fmt: skip
        """``config``: the run's; ``learner``: the job's (default: a new one); ``run`` of ``runs`` in the job."""
        self.config, self.run, self.runs = config, run, runs
        self.stopper = stopper
        self.learner = learner or LearnerHandle(config, resume, hooks, stopper)
        self.rollout_options = rollout_options(config)
        stream = resumed_step(resume, config)
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
    def begin(self, run_dir: Path, progress) -> None:
        """The run's record from the learner's first progress; its budget goes on from the steps already ingested."""
        self.record = RunRecord(run_dir, progress)
        self.env_steps_handed_out = self.env_steps_received = self.record.start.env_steps
        self.learner.report_fleet(len(self.fleet.actors), 0, self.run)

    def needs(self) -> str:
        actors = self.config.cluster.num_actors * self.runs
        gpus = self.learner.options.get("num_gpus")
        gpu = f" and {gpus:g} GPU" if gpus else ""
        runs = f" of {self.runs} runs" if self.runs > 1 else ""
        return f"the job needs {actors + 1} CPUs{gpu} ({actors} rollout actors{runs} + the learner)"

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
            .remote(self.config.rollout.steps_per_fragment, random_actions, self.learner.weights[self.run])
        )
        self.pending[header] = (index, fragment, self.learner.weights[self.run][0])

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
        self.learner.step(fragment, header.env_steps, self.run)
        if self.take_fragment():
            self.submit(index)

    def note_incarnation(self, index: int, header: FragmentHeader, version_sent: int) -> None:
        known = self.fleet.incarnations[index]
        self.fleet.incarnations[index] = header.incarnation
        if known is None or known == header.incarnation:
            return
        self.fleet.restarts[index] += 1
        self.fleet.restart_versions.append((version_sent, header.weights_version))
        self.learner.report_fleet(self.fleet.alive_count, 1, self.run)
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
        self.learner.report_fleet(self.fleet.alive_count, 0, self.run)

    def give_up(self, index: int) -> None:
        """Ray will not restart actor ``index``: its fragment goes back to the budget, for another actor."""
        self.fleet.alive[index] = False
        self.fleet.retry_at.pop(index, None)
        self.env_steps_handed_out -= self.fragment_steps
        self.learner.report_fleet(self.fleet.alive_count, 0, self.run)
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
        return {"fleet": self.fleet_summary(), "learner": self.learner.summary(self.run)}


def run_ray(
    config: Config, resume: str | None = None, hooks: TestHooks | None = None, on_tick=None,
    stopper: Stopper | None = None,
) -> dict:  # fmt: skip
    """Train on Ray until every step budget is spent or a stop is requested; returns the final summary (with
    ``train.parallel_runs``: ``{"exit_code", "runs": [each run's summary]}``, each run's also in its directory).

    Stopped by SIGTERM/Ctrl-C: the fragments in flight are stored, a final checkpoint written, and
    the summary returned as for a finished run. Otherwise the error that ends the run is raised (its
    exit code: ``runner.exit_code_for``) after ``final_stats.json`` recorded it: ``LearnerStartError``,
    ``CapacityError`` (after a checkpoint), ``NonFiniteStop``, ``SecondSignal``. ``on_tick`` gets the first
    run's driver on every turn of the loop (tests and benchmarks that act on the job).
    """
    configs = run_configs(config)
    job_dir, run_dirs = prepare_run_dirs(config, configs)
    stopper = stopper or Stopper()
    drivers: list[RayDriver] = []
    connected = False
    with stopper:
        try:
            connected = connect(config)
            learner = LearnerHandle(config, resume, hooks, stopper)
            for run, run_config in enumerate(configs):
                drivers.append(RayDriver(run_config, resume, hooks, stopper, learner, run, len(configs)))
            if on_tick is not None:  # also while a replacement learner is awaited
                learner.on_wait = lambda: on_tick(drivers[0])
            start_runs(drivers, run_dirs)
            per_run = f" per run, {len(configs)} runs in {job_dir}/runs/<k>" if len(configs) > 1 else f"; run dir {job_dir}"
            log.info(
                "learner on %s (%s); %d rollout actors x %d envs%s",
                learner.call("device"), learner.call("node"), config.cluster.num_actors, config.env.num_envs, per_run,
            )  # fmt: skip
            collect(drivers, on_tick)
            finish_in_flight(drivers)
            checkpoints = learner.call("checkpoint", False)
            return finish(drivers, checkpoints, job_dir)
        except BaseException as err:
            cause = err.cause if isinstance(err, RayTaskError) and err.cause is not None else err
            if exit_code_for(cause) != 1:
                record_failures(drivers, job_dir, run_dirs, cause)
                raise cause from None
            raise
        finally:
            for driver in drivers:
                for actor in driver.fleet.actors:
                    ray.kill(actor, no_restart=True)
            if connected:  # now, not at interpreter exit: a local instance stops faster while we wait for it
                ray.shutdown()


def start_runs(drivers: list[RayDriver], run_dirs: list[Path]) -> None:
    """Wait for the learner's first weights (watching for actors no node can host); start every run's record."""
    first, learner = drivers[0], drivers[0].learner
    awaited = {"the learner": resource_shape(learner.options)}
    for driver in drivers:
        named = f"run {driver.run} rollout actor" if driver.runs > 1 else "rollout actor"
        shape = resource_shape(driver.rollout_options)
        awaited.update({f"{named} {i}": shape for i in range(len(driver.fleet.actors))})
    progress = learner.wait_ready(first.watch, awaited, first.needs())
    for driver, run_dir, start_progress in zip(drivers, run_dirs, progress, strict=True):
        driver.begin(run_dir, start_progress)
    learner.started([driver.record for driver in drivers])


def owners(drivers: list[RayDriver]) -> dict:
    """Every pending header ref, with the driver of its run."""
    return {ref: driver for driver in drivers for ref in driver.pending}


def collect(drivers: list[RayDriver], on_tick=None) -> None:
    """The driver loop: route fragments as they come, keep the learner queue short, report progress."""
    first, learner = drivers[0], drivers[0].learner
    config = first.config
    for driver in drivers:
        driver.hand_out_idle()
    last_log = time.monotonic()
    while any(d.pending or d.fleet.retry_at for d in drivers) and not first.stopper.requested:
        pending = owners(drivers)
        if not pending:
            time.sleep(0.2)
        for ref in headers_in(list(pending)):
            pending[ref].on_header(ref)
        for driver in drivers:
            driver.resubmit_due()
        learner.drain(keep=config.cluster.max_inflight_steps * len(drivers))
        for driver in drivers:
            driver.watch_scheduling()
            driver.check_fleet()
        if on_tick is not None:
            on_tick(first)
        if time.monotonic() - last_log >= config.train.log_every_seconds:
            last_log = time.monotonic()
            for driver in drivers:
                alive = f"actors={driver.fleet.alive_count}/{len(driver.fleet.actors)}"
                log.info("%s%s", run_label(driver.run, driver.runs), format_progress(driver.progress, alive))


def headers_in(refs: list) -> list:
    """Every fragment header that has arrived, after waiting up to a second for the first. All of them are routed
    (and their actors given their next fragment) before the driver next waits on the learner: taking one per turn, in
    ``refs``' order, left the actors of the runs listed last waiting (in a 3-run Pendulum job on an H200, run 2 was at
    9 600 env steps when run 0 was at 13 500)."""
    if not refs or not ray.wait(refs, num_returns=1, timeout=1.0)[0]:
        return []
    return ray.wait(refs, num_returns=len(refs), timeout=0)[0]


def finish_in_flight(drivers: list[RayDriver]) -> None:
    """Every fragment being collected goes to the learner (ingested only, after a stop); then its queue drains.

    Calls waiting for an actor Ray is still restarting are cancelled: no fragment exists for them yet.
    """
    learner = drivers[0].learner
    learner.forward_stop()
    for driver in drivers:
        driver.fleet.retry_at.clear()
        for ref, (index, _, _) in list(driver.pending.items()):
            if index in driver.restarting:
                ray.cancel(ref)
                del driver.pending[ref]
                driver.env_steps_handed_out -= driver.fragment_steps
    while pending := owners(drivers):
        for ref in ray.wait(list(pending), num_returns=1, timeout=1.0)[0]:
            pending[ref].on_header(ref)
    learner.drain(keep=0)
    for driver in drivers:
        driver.collect_health()


def finish(drivers: list[RayDriver], checkpoints: list, job_dir: Path) -> dict:
    progress = drivers[0].learner.call("progress")
    summaries = []
    for driver, latest, checkpoint in zip(drivers, progress, checkpoints, strict=True):
        driver.record.update(latest)
        driver.record.extra.update(driver.summary_sections())
        log.info("%s%s", run_label(driver.run, driver.runs), driver.record.done_line(checkpoint))
        summaries.append(driver.record.write(0))
    if len(drivers) == 1:
        return summaries[0]
    summary = {"exit_code": 0, "exit_reason": "", "runs": summaries}
    write_summary(job_dir, summary)
    return summary


def record_failures(drivers: list[RayDriver], job_dir: Path, run_dirs: list[Path], cause: BaseException) -> None:
    """``final_stats.json`` of every run that ends with an error (and the job's own when it has several runs); exit 3
    checkpoints first (the learner is fine)."""
    code, reason = exit_code_for(cause), str(cause)
    started = len(drivers) == len(run_dirs) and all(driver.record is not None for driver in drivers)
    if not started:  # it ended before training started
        for run_dir in dict.fromkeys([job_dir, *run_dirs]):
            write_summary(run_dir, {"exit_code": code, "exit_reason": reason})
        return
    learner = drivers[0].learner
    if code in (3, 4) and learner.ready:  # a second signal asks nothing more of the learner
        try:
            if code == 3:
                log.error("%s; writing a checkpoint before stopping", cause)
                ray.get(learner.actor.checkpoint.remote(), timeout=600)
            progress = ray.get(learner.actor.progress.remote(), timeout=60)
            for driver in drivers:
                driver.record.update(progress[driver.run])
        except (RayActorError, ray.exceptions.GetTimeoutError) as err:  # the records keep what the driver knew
            log.error("the learner could not add its final figures: %s", err)
    summaries = []
    for driver in drivers:
        driver.record.extra.update(driver.summary_sections())
        summaries.append(driver.record.write(code, reason))
    if len(drivers) > 1:
        write_summary(job_dir, {"exit_code": code, "exit_reason": reason, "runs": summaries})
