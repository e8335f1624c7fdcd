"""``cluster.mode: local``: one rollout worker and the learner in this process, no Ray."""

from __future__ import annotations

import math
import time

from cluster.config import Config
from cluster.factory import make_learner_service, make_worker
from cluster.runner import Stopper, done_line, format_progress, log, prepare_run_dir, summary_dict, write_summary
from learner.safety import NonFiniteStop


def run_local(config: Config, resume: str | None = None, grad_hook=None) -> dict:
    """Train until ``train.total_env_steps`` (or SIGTERM/Ctrl-C); returns and writes the final summary.

    Raises ``NonFiniteStop`` when the NaN response says stop.
    """
    run_dir = prepare_run_dir(config)
    service = make_learner_service(config, resume)
    service.learner.sac.grad_hook = grad_hook
    try:
        worker = make_worker(config)
        worker.set_weights(service.broadcast())  # actors start from the learner's policy
        history: list[tuple[int, float]] = []
        started = last_log = time.monotonic()
        log.info("local run on %s, run dir %s", service.learner.device, run_dir)
        with Stopper() as stopper:
            while service.learner.env_steps < config.train.total_env_steps and not stopper.requested:
                warming_up = service.learner.env_steps < config.train.warmup_steps
                report = service.step(worker.rollout(config.rollout.steps_per_fragment, random_actions=warming_up))
                if report.weights is not None:
                    worker.set_weights(report.weights)
                if not math.isnan(report.progress.recent_return):
                    history.append((report.progress.env_steps, report.progress.recent_return))
                if time.monotonic() - last_log >= config.train.log_every_seconds:
                    last_log = time.monotonic()
                    log.info(format_progress(report.progress))
            final_checkpoint = service.checkpoint()
    finally:  # the metrics port is free again for the next run in this process
        service.close()
    progress, wall = service.progress(), time.monotonic() - started
    log.info(done_line(progress, wall, final_checkpoint))
    summary = summary_dict(progress, wall, history)
    write_summary(run_dir, summary)
    return summary


__all__ = ["run_local", "NonFiniteStop"]
