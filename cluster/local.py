"""``cluster.mode: local``: one rollout worker and the learner in this process, no Ray."""

from __future__ import annotations

import time

from cluster.config import Config
from cluster.factory import make_learner_service, make_worker
from cluster.runner import RunRecord, Stopper, format_progress, log, prepare_run_dir, recorded
from learner.safety import NonFiniteStop


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
                final_checkpoint = train_in_process(config, service, record, stopper)
        finally:  # the metrics port is free again for the next run in this process
            service.close()
    log.info(record.done_line(final_checkpoint))
    return record.write(0)


def train_in_process(config: Config, service, record: RunRecord, stopper: Stopper):
    """The loop: one fragment per step until the budget is spent or a stop is requested; the final checkpoint."""
    # A resumed run's episodes differ from the first run's: its seed stream is the step it resumes from.
    worker = make_worker(config, seed_stream=service.learner.env_steps)
    worker.set_weights(service.broadcast())  # actors start from the learner's policy
    log.info("local run on %s, run dir %s", service.learner.device, record.run_dir)
    last_log = time.monotonic()
    while service.learner.env_steps < config.train.total_env_steps and not stopper.requested:
        warming_up = service.learner.env_steps < config.train.warmup_steps
        report = service.step(worker.rollout(config.rollout.steps_per_fragment, random_actions=warming_up))
        if report.weights is not None:
            worker.set_weights(report.weights)
        record.update(report.progress)
        if time.monotonic() - last_log >= config.train.log_every_seconds:
            last_log = time.monotonic()
            log.info(format_progress(report.progress))
    final_checkpoint = service.checkpoint(announce=False)
    record.update(service.progress())
    return final_checkpoint


__all__ = ["run_local", "NonFiniteStop"]
