"""The learner as the Ray driver sees it: its actor, its queue of steps, and its recovery when it dies.

When the learner actor or its node dies (any ``RayActorError`` from it), a new
learner actor with the same resources (computed once, at the start) resumes
from ``last_good`` (the newest checkpoint that verifies), on whatever node Ray
finds. Nothing the actors collected is lost to it: the driver keeps the
fragments the dead learner ingested since the checkpoint before ``last_good``
(object refs; the data stays in Ray's object store) and the fragments still
queued, and hands the ones the checkpoint does not hold to the new learner, in
order. Weight versions go on increasing across the restart. Each restart is
logged and recorded: cause, checkpoint, downtime, env steps lost (those that
could not be handed over: a fragment whose object was lost with its node, or
older than the fragments kept). A job of several runs (``train.parallel_runs``)
has one learner for all of them: weights, kept fragments, checkpoints, records
and losses are kept per run, each delivery names its run, and a new learner
resumes every run from its own ``last_good``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

from cluster.config import Config, run_configs
from cluster.factory import resume_command
from cluster.placement import SchedulingWatch, learner_options, resource_shape
from cluster.ray_actors import LearnerActor, TestHooks
from cluster.runner import CapacityError, LearnerStartError, RunRecord, Stopper
from learner.checkpoint import Checkpointer, checkpoint_root
from learner.checkpoint_io import regular_name
from learner.service import Progress, StepReport

log = logging.getLogger("dmsac")


class LearnerLost(RuntimeError):
    """The learner actor died (its process or its node)."""


@dataclass(frozen=True)
class Delivery:
    """A fragment handed to the learner: its object ref, its env steps, and the learner's env steps after it."""

    fragment: ray.ObjectRef
    env_steps: int
    ingested_at: int = -1
    """The run's ``env_steps`` at the learner once it had ingested this fragment (-1 while queued)."""
    run: int = 0
    """The run of the job (``train.parallel_runs``) the fragment belongs to."""


def is_object_lost(err: BaseException) -> bool:
    """A fragment whose object Ray lost (its node died), raised directly or as the step's cause."""
    return isinstance(err, ObjectLostError) or (isinstance(err, RayTaskError) and isinstance(err.cause, ObjectLostError))


def is_learner_death(err: BaseException) -> bool:
    """A dead learner actor, not an error its code raised (that one is a ``RayTaskError``)."""
    return isinstance(err, RayActorError) and not isinstance(err, RayTaskError)


class LearnerHandle:
    """Owns the learner actor for the driver: start, queued steps, stop, and restarts from ``last_good``."""

    def __init__(self, config: Config, resume: str | None, hooks: TestHooks | None, stopper: Stopper) -> None:
        self.config = config
        self.hooks = hooks or TestHooks()
        self.stopper = stopper
        self.options = learner_options(config)  # the same request for every learner of this job
        self.actor = LearnerActor.options(**self.options).remote(config, resume, self.hooks)
        self.runs = config.train.parallel_runs
        self.weights: list[tuple[int, list]] = [(0, [None])] * self.runs
        """Per run: the newest version and its object ref, as the rollout actors are handed it."""
        self.queue: list[tuple[ray.ObjectRef, Delivery]] = []
        self.kept: list[Delivery] = []
        """Fragments ingested since their run's checkpoint before its newest one: what a new learner may need again."""
        self.checkpoint_steps: list[list[int]] = [[] for _ in range(self.runs)]
        self.records: list[RunRecord] = []
        self.restarts: list[dict] = []
        self.detected_at: list[float] = []
        """``time.monotonic()`` at which each death was noticed."""
        self.restarts_before = 0
        """Learner restarts of earlier jobs of this run (from the checkpoint's counters)."""
        self.env_steps_lost = [0] * self.runs
        """Per run, env steps of fragments that could not be ingested: lost with a node, or older than those kept."""
        self.stop_sent = False
        self.ready = False
        """The current learner actor answered (False from a death until its replacement is up)."""
        self.awaiting = False
        """True while a replacement learner is awaited."""
        self.on_wait: Callable[[], None] = lambda: None
        """Called on every turn of the wait for a replacement learner (the driver's ``on_tick``)."""

    # -- start ---------------------------------------------------------------------------------
    def wait_ready(self, watch: SchedulingWatch, awaited: dict[str, dict[str, float]], needs: str) -> list[Progress]:
        """Wait for the learner's first weights, raising ``CapacityError`` when Ray keeps it pending; each run's
        progress."""
        ref = self.actor.initial_weights.remote()
        try:
            while not ray.wait([ref], timeout=1.0)[0]:
                watch.check(awaited, needs)
                if self.awaiting:
                    self.on_wait()
            for run, weights in enumerate(ray.get(ref)):
                self.publish(weights, run)
            progress = ray.get(self.actor.progress.remote())
            self.ready = True
            return progress
        except RayActorError as err:  # its constructor raised: the cause is the last line
            lines = [line for line in str(err).splitlines() if line.strip()]
            raise LearnerStartError(f"the learner actor did not start: {lines[-1].strip()}") from err

    def started(self, records: list[RunRecord]) -> None:
        """Each run's record, from its progress when this process began training."""
        self.records = records
        self.restarts_before = records[0].start.counters.get("learner_restarts", 0)
        self.checkpoint_steps = [[max(record.start.last_checkpoint_step, 0)] for record in records]

    # -- steps ---------------------------------------------------------------------------------
    def step(self, fragment: ray.ObjectRef, env_steps: int, run: int = 0) -> None:
        self.queue.append((self.actor.step.remote(fragment, run), Delivery(fragment, env_steps, run=run)))

    def report_fleet(self, alive: int, new_restarts: int, run: int = 0) -> None:
        """A run's rollout actors alive and restarted, for its metrics (fire and forget: a dead learner misses it)."""
        self.actor.report_fleet.remote(alive, new_restarts, run)

    def publish(self, weights, run: int = 0) -> None:
        if weights is not None and weights.version > self.weights[run][0]:
            self.weights[run] = (weights.version, [ray.put(weights)])  # one put per version

    def forward_stop(self) -> None:
        """Tell the learner (out of band: its control group) to start no further block of updates."""
        if self.stopper.requested and not self.stop_sent:
            self.stop_sent = True
            self.actor.request_stop.remote()

    def get(self, ref: ray.ObjectRef):
        """``ray.get`` that forwards a stop request while it waits; a dead learner is ``LearnerLost``."""
        try:
            while not ray.wait([ref], timeout=0.5)[0]:
                self.forward_stop()
            return ray.get(ref)
        except BaseException as err:
            if is_learner_death(err):
                raise LearnerLost(str(err).splitlines()[0]) from err
            raise

    def drain(self, keep: int) -> None:
        """Wait until at most ``keep`` steps are queued (a dead learner is replaced first); publish new weights."""
        while len(self.queue) > keep:
            ref, delivery = self.queue[0]
            try:
                report: StepReport = self.get(ref)
            except LearnerLost as err:
                self.recover(str(err))
                continue
            except BaseException as err:
                if not is_object_lost(err):
                    raise
                self.queue.pop(0)  # the fragment's node is gone and its object with it
                self.env_steps_lost[delivery.run] += delivery.env_steps
                log.error("a fragment of %d env steps was lost with its node: %s", delivery.env_steps, err)
                continue
            self.queue.pop(0)
            self.on_report(report, delivery)

    def on_report(self, report: StepReport, delivery: Delivery) -> None:
        run, progress = delivery.run, report.progress
        self.records[run].update(progress)
        last = self.restarts[-1] if self.restarts else {}
        if last and "back_to_training_seconds" not in last and run == 0 and progress.updates > last["resumed_updates"]:
            last["back_to_training_seconds"] = round(time.monotonic() - self.detected_at[-1], 3)
        self.publish(report.weights, run)
        self.kept.append(Delivery(delivery.fragment, delivery.env_steps, progress.env_steps, run))
        steps = self.checkpoint_steps[run]
        if progress.last_checkpoint_step > steps[-1]:
            self.checkpoint_steps[run] = steps = [*steps[-1:], progress.last_checkpoint_step]
            # what the checkpoint before the newest one holds is safe twice over: let Ray free it
            self.kept = [d for d in self.kept if d.run != run or d.ingested_at > steps[0]]

    def call(self, method: str, *args):
        """A learner method's result; a dead learner is replaced first (after draining its queue)."""
        while True:
            try:
                return self.get(getattr(self.actor, method).remote(*args))
            except LearnerLost as err:
                self.recover(str(err))
                self.drain(keep=0)

    # -- recovery ------------------------------------------------------------------------------
    def recover(self, cause: str) -> None:
        """A new learner from ``last_good``; the fragments it lacks handed to it again; the restart recorded."""
        lost_at, known = time.monotonic(), [record.latest for record in self.records]
        self.detected_at.append(lost_at)
        restarts = len(self.restarts) + 1
        if restarts > self.config.cluster.max_learner_restarts:
            raise CapacityError(
                f"the learner died {restarts} times in this job (cluster.max_learner_restarts="
                f"{self.config.cluster.max_learner_restarts}), last: {cause}; {self.where_to_resume()}"
            )
        self.ready = False
        log.error("the learner died (%s); starting learner %d from last_good", cause, restarts + 1)
        ray.kill(self.actor, no_restart=True)
        # a run that had a checkpoint must find one: a node that cannot see the directory must not start it afresh
        require = [k.last_checkpoint_step > 0 or steps[0] > 0 for k, steps in zip(known, self.checkpoint_steps, strict=True)]
        floors = [version for version, _ in self.weights]
        self.actor = LearnerActor.options(**self.options).remote(
            self.config, "auto", self.hooks, self.restarts_before + restarts, floors, require
        )  # fmt: skip
        self.stop_sent = False
        watch = SchedulingWatch(self.config.cluster.learner_restart_timeout_s, "cluster.learner_restart_timeout_s")
        shape = resource_shape(self.options)
        needs = f"the learner needs {shape} on a node that can read the checkpoint directory"
        self.awaiting = True
        try:
            resumed = self.wait_ready(watch, {"the new learner": shape}, needs)
        except CapacityError as err:
            raise CapacityError(f"the learner cannot be started again: {err}; {self.where_to_resume()}") from None
        finally:
            self.awaiting = False
        self.forward_stop()
        lost = self.hand_over(resumed, known)
        self.env_steps_lost = [total + more for total, more in zip(self.env_steps_lost, lost, strict=True)]
        event = {
            "cause": cause, "resumed_from_step": resumed[0].env_steps, "resumed_updates": resumed[0].updates,
            "at_env_step": known[0].env_steps,
            "downtime_seconds": round(time.monotonic() - lost_at, 3), "env_steps_lost": sum(lost),
            "node": ray.get(self.actor.node.remote()),
        }  # fmt: skip
        if self.runs > 1:
            event["runs"] = [{"resumed_from_step": r.env_steps, "at_env_step": k.env_steps, "env_steps_lost": n}
                             for r, k, n in zip(resumed, known, lost, strict=True)]  # fmt: skip
        self.restarts.append(event)
        for run, (r, k, n) in enumerate(zip(resumed, known, lost, strict=True)):
            origin = f"checkpoint {regular_name(r.env_steps)}" if r.last_checkpoint_step > 0 else "scratch"
            label = f" run {run}" if self.runs > 1 else ""
            log.warning(
                "learner %d is up on %s,%s resumed from %s at env step %d (the dead one had %d); %d env steps lost, "
                "down %.1f s", restarts + 1, event["node"], label, origin, r.env_steps, k.env_steps, n,
                event["downtime_seconds"],
            )  # fmt: skip
        if not self.config.checkpoint.save_replay:
            log.warning("checkpoint.save_replay is off: the new learner's replay buffer starts empty and warms up again")

    def where_to_resume(self) -> str:
        """The last good checkpoint (of each run) and the command that resumes from it (for exit 3's message)."""
        goods = []
        for config in run_configs(self.config):
            root = checkpoint_root(config.checkpoint, config.train.run_dir)
            goods.append(str(Checkpointer(root, config.checkpoint.keep_last).latest_good() or "none"))
        which = "last good checkpoint" if len(goods) == 1 else "last good checkpoints"
        return f"{which}: {', '.join(goods)}; resume with: {resume_command(self.config)}"

    def hand_over(self, resumed: list[Progress], known: list[Progress]) -> list[int]:
        """Queue, on the new learner, every fragment its checkpoints lack (in the order they came); per run, the env
        steps that cannot be."""
        again = [d for d in self.kept if d.ingested_at > resumed[d.run].env_steps]
        queued = [delivery for _, delivery in self.queue]
        self.kept = [d for d in self.kept if d.ingested_at <= resumed[d.run].env_steps]
        self.queue = []
        for delivery in again + queued:
            self.step(delivery.fragment, delivery.env_steps, delivery.run)
        lost = []
        for run, (r, k) in enumerate(zip(resumed, known, strict=True)):
            handed = sum(d.env_steps for d in again if d.run == run)
            lost.append(max(0, k.env_steps - r.env_steps - handed))
            self.checkpoint_steps[run] = [r.last_checkpoint_step, r.last_checkpoint_step]
        return lost

    def summary(self, run: int = 0) -> dict:
        """The learner's restarts (the job's) and the env steps run ``run`` lost."""
        return {"restarts": len(self.restarts), "env_steps_lost": self.env_steps_lost[run], "events": self.restarts}
