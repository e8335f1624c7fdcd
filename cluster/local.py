"""``cluster.mode: local``: the rollout workers and the learner in this process, no Ray.

``rounds`` is the in-process loop itself, a generator of one ``Step`` per run and fragment: each run (one, or
``train.parallel_runs``) collects a fragment with its own worker and ingests it, then the runs train together
(``learner.parallel.JointTrainer``: one CUDA graph replay updates all of them). ``run_local`` drives it (progress
lines, the run records, the final checkpoints); the benchmarks drive the same loop through ``steps`` (one run) with
their own bookkeeping (``bench/inprocess.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from actors.worker import RolloutWorker
from cluster.config import Config, run_configs
from cluster.factory import make_learner_service, make_worker
from cluster.runner import (
    RunRecord,
    Stopper,
    format_progress,
    log,
    prepare_run_dirs,
    recorded,
    run_label,
    write_summary,
)
from learner.parallel import JointTrainer
from learner.safety import NonFiniteStop
from learner.service import LearnerService, StepReport
from learner.types import Fragment


@dataclass(frozen=True)
class Step:
    """One turn of the in-process loop, for one run."""

    fragment: Fragment
    report: StepReport
    random_actions: bool
    """The fragment was collected during the warm-up (uniform random actions)."""
    rollout_seconds: float
    learner_seconds: float
    """This run's learner phases in this round (``LearnerService.times``): ingestion, training (with its share of
    blocks trained jointly), broadcasts and checkpoint."""


def rounds(
    configs: list[Config], services: list[LearnerService], workers: list[RolloutWorker], stop: Callable[[], bool]
) -> Iterator[list[Step | None]]:
    """Every run with budget left collects a fragment and ingests it; the runs train what is due, together; each
    run's new weights go to its worker. One list per round (None for a run whose budget is spent), until every
    budget is spent or ``stop()``. Errors of a service (``NonFiniteStop``) end the loop where they happen."""
    trainer, budgets = JointTrainer(services), [c.train.total_env_steps for c in configs]
    while not stop():
        live = [k for k, service in enumerate(services) if service.learner.env_steps < budgets[k]]
        if not live:
            return
        collected = {}
        for k in live:
            config, service = configs[k], services[k]
            warming_up = service.learner.env_steps < config.train.warmup_steps
            started = time.monotonic()
            fragment = workers[k].rollout(config.rollout.steps_per_fragment, random_actions=warming_up)
            rollout_s, busy_before = time.monotonic() - started, service.times.busy()
            collected[k] = (fragment, warming_up, service.begin_step(fragment), rollout_s, busy_before)
        weights = [None] * len(services) if any(s.stopping for s in services) else trainer.train()
        steps: list[Step | None] = [None] * len(services)
        for k, (fragment, warming_up, accepted, rollout_s, busy_before) in collected.items():
            service = services[k]
            report = service.end_step(weights[k], accepted)
            if report.weights is not None:
                workers[k].set_weights(report.weights)
            steps[k] = Step(fragment, report, warming_up, rollout_s, service.times.busy() - busy_before)
        yield steps


def steps(config: Config, service: LearnerService, worker: RolloutWorker, stop: Callable[[], bool]) -> Iterator[Step]:
    """``rounds`` of one run: a ``Step`` per fragment."""
    for (step,) in rounds([config], [service], [worker], stop):
        yield step


def start_worker(config: Config, service: LearnerService) -> RolloutWorker:
    """The worker, on the learner's policy; a resumed run's seed stream is the step it resumes from (new episodes)."""
    worker = make_worker(config, seed_stream=service.learner.env_steps)
    worker.set_weights(service.broadcast())
    return worker


def run_local(config: Config, resume: str | None = None, grad_hook=None, stopper: Stopper | None = None) -> dict:
    """Train until every step budget is spent (or SIGTERM/Ctrl-C); returns and writes the final summary (with
    ``train.parallel_runs``: ``{"exit_code", "runs": [each run's summary]}``, each run's also in its directory).

    Raises ``NonFiniteStop`` when the NaN response says stop, ``SecondSignal`` on a second
    signal; ``final_stats.json`` is written on those ways out too, with their exit codes.
    """
    configs = run_configs(config)
    job_dir, run_dirs = prepare_run_dirs(config, configs)
    services: list[LearnerService] = []
    records: list[RunRecord] = []

    def latest(k: int) -> Callable[[], RunRecord | None]:
        def record() -> RunRecord | None:  # the service's own counters, whatever ended the run
            if k < len(records):
                records[k].update(services[k].progress())
                return records[k]
            return None

        return record

    with contextlib.ExitStack() as guards:
        if len(configs) > 1:
            guards.enter_context(recorded(job_dir, lambda: None))
        for k, run_dir in enumerate(run_dirs):
            guards.enter_context(recorded(run_dir, latest(k)))
        try:
            for run_config in configs:
                services.append(make_learner_service(run_config, resume))
            records.extend(RunRecord(run_dir, s.progress()) for run_dir, s in zip(run_dirs, services, strict=True))
            for service in services:
                service.learner.sac.grad_hook = grad_hook
            stopper = stopper or Stopper()
            stopper.on_request = lambda: [s.request_stop() for s in services]  # only sets flags: safe in a handler
            with stopper:
                workers = [start_worker(c, s) for c, s in zip(configs, services, strict=True)]
                where = f"run dir {job_dir}" if len(configs) == 1 else f"{len(configs)} runs in {job_dir}/runs/<k>"
                log.info("local run on %s, %s", services[0].learner.device, where)
                last_log = time.monotonic()
                for round_steps in rounds(configs, services, workers, lambda: stopper.requested):
                    for record, step in zip(records, round_steps, strict=True):
                        if step is not None:
                            record.update(step.report.progress)
                    if time.monotonic() - last_log >= config.train.log_every_seconds:
                        last_log = time.monotonic()
                        for k, record in enumerate(records):
                            log.info("%s%s", run_label(k, len(records)), format_progress(record.latest))
                final_checkpoints = [service.checkpoint(announce=False) for service in services]
                for record, service in zip(records, services, strict=True):
                    record.update(service.progress())
        finally:  # the metrics ports are free again for the next run in this process
            for service in services:
                service.close()
    summaries = []
    for k, (record, checkpoint) in enumerate(zip(records, final_checkpoints, strict=True)):
        log.info("%s%s", run_label(k, len(records)), record.done_line(checkpoint))
        summaries.append(record.write(0))
    if len(configs) == 1:
        return summaries[0]
    summary = {"exit_code": 0, "exit_reason": "", "runs": summaries}
    write_summary(job_dir, summary)
    return summary


__all__ = ["run_local", "rounds", "steps", "start_worker", "Step", "NonFiniteStop"]
