"""``cluster.mode: local``: one rollout worker and the learner in this process, no Ray.

``steps`` is the in-process loop itself, a generator of one ``Step`` per fragment:
``run_local`` drives it (progress lines, the run record, the final checkpoint) and
the benchmarks drive the same loop with their own bookkeeping (``bench/inprocess.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from actors.worker import RolloutWorker
from cluster.config import Config
from cluster.factory import make_learner_service, make_worker
from cluster.runner import RunRecord, Stopper, format_progress, log, prepare_run_dir, recorded
from learner.safety import NonFiniteStop
from learner.service import LearnerService, StepReport
from learner.types import Fragment


@dataclass(frozen=True)
class Step:
    """One turn of the in-process loop."""

    fragment: Fragment
    report: StepReport
    random_actions: bool
    """The fragment was collected during the warm-up (uniform random actions)."""
    rollout_seconds: float
    learner_seconds: float


def steps(config: Config, service: LearnerService, worker: RolloutWorker, stop: Callable[[], bool]) -> Iterator[Step]:
    """Collect a fragment, let the service ingest and train what is due, hand new weights to the worker; until the
    step budget is spent or ``stop()``. Errors of the service (``NonFiniteStop``) end the loop where they happen."""
    while service.learner.env_steps < config.train.total_env_steps and not stop():
        warming_up = service.learner.env_steps < config.train.warmup_steps
        started = time.monotonic()
        fragment = worker.rollout(config.rollout.steps_per_fragment, random_actions=warming_up)
        collected = time.monotonic()
        report = service.step(fragment)
        if report.weights is not None:
            worker.set_weights(report.weights)
        yield Step(fragment, report, warming_up, collected - started, time.monotonic() - collected)


def start_worker(config: Config, service: LearnerService) -> RolloutWorker:
    """The worker, on the learner's policy; a resumed run's seed stream is the step it resumes from (new episodes)."""
    worker = make_worker(config, seed_stream=service.learner.env_steps)
    worker.set_weights(service.broadcast())
    return worker


def run_local(config: Config, resume: str | None = None, grad_hook=None, stopper: Stopper | None = None) -> dict:
    """Train until the step budget is spent (or SIGTERM/Ctrl-C); returns and writes the final summary.

    Raises ``NonFiniteStop`` when the NaN response says stop, ``SecondSignal`` on a second
    signal; ``final_stats.json`` is written on those ways out too, with their exit codes.
    """
    run_dir = prepare_run_dir(config)
    record: RunRecord | None = None

    def latest() -> RunRecord | None:  # the service's own counters, whatever ended the run
        if record is not None:
            record.update(service.progress())
        return record

    with recorded(run_dir, latest):
        service = make_learner_service(config, resume)
        try:
            record = RunRecord(run_dir, service.progress())
            service.learner.sac.grad_hook = grad_hook
            stopper = stopper or Stopper()
            stopper.on_request = service.request_stop  # only sets a flag: safe inside the signal handler
            with stopper:
                worker = start_worker(config, service)
                log.info("local run on %s, run dir %s", service.learner.device, run_dir)
                last_log = time.monotonic()
                for step in steps(config, service, worker, lambda: stopper.requested):
                    record.update(step.report.progress)
                    if time.monotonic() - last_log >= config.train.log_every_seconds:
                        last_log = time.monotonic()
                        log.info(format_progress(step.report.progress))
                final_checkpoint = service.checkpoint(announce=False)
                record.update(service.progress())
        finally:  # the metrics port is free again for the next run in this process
            service.close()
    log.info(record.done_line(final_checkpoint))
    return record.write(0)


__all__ = ["run_local", "steps", "start_worker", "Step", "NonFiniteStop"]
