"""``cluster.mode: local``: one rollout worker and the learner in this process, no Ray."""

from __future__ import annotations

import math
import time

from cluster.config import Config
from cluster.factory import make_learner, make_worker, probe_dimensions
from cluster.runner import format_progress, log, make_schedule, prepare_run_dir, summary_dict, write_summary
from learner.service import LearnerService


def run_local(config: Config) -> dict:
    """Train until ``train.total_env_steps``; returns (and writes) the final summary."""
    run_dir = prepare_run_dir(config)
    service = LearnerService(make_learner(config, probe_dimensions(config)), make_schedule(config), config.train.episode_window)
    worker = make_worker(config)
    history: list[tuple[int, float]] = []
    started = last_log = time.monotonic()
    log.info("local run: %s on %s, run dir %s", config.env.id if config.env.kind == "gymnasium" else "vehicle",
             service.learner.device, run_dir)
    while service.learner.env_steps < config.train.total_env_steps:
        warming_up = service.learner.env_steps < config.train.warmup_steps
        fragment = worker.rollout(config.rollout.steps_per_fragment, random_actions=warming_up)
        service.ingest(fragment)
        weights = service.train()
        if weights is not None:
            worker.set_weights(weights)
        progress = service.progress()
        if fragment.episodes and not math.isnan(progress.recent_return):
            history.append((progress.env_steps, progress.recent_return))
        if time.monotonic() - last_log >= config.train.log_every_seconds:
            last_log = time.monotonic()
            log.info(format_progress(progress))
    progress = service.progress()
    log.info("done: %s", format_progress(progress))
    summary = summary_dict(progress, time.monotonic() - started, history)
    write_summary(run_dir, summary)
    return summary
