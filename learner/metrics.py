"""The learner's Prometheus exporter: every ``dmsac_*`` metric of specs/observability.md.

One registry of its own (never the process-global one), bounded label values
initialised to 0 at start-up, and one table (``UPDATE_STATS_METRICS``) that maps
each ``UpdateStats`` field to exactly one metric. Actor-side figures arrive
with the fragments and are exported here, so a job has one scrape target.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from pydantic import Field

from learner.types import (
    CONTEXT_FALLBACK_REASONS,
    REJECTED_TRANSITION_REASONS,
    STATS,
    Fragment,
    UpdateStats,
    config_section,
    text_matching,
)
from learner.weights import WEIGHT_REJECT_REASONS

log = logging.getLogger(__name__)
Address = text_matching(r"\S+", "must be an address without spaces, such as 0.0.0.0 or 127.0.0.1")

NETWORKS = ("policy", "q")
"""Values of the ``network`` label."""
NAN_SOURCES = ("loss", "grad", "q", "params", "weights")
"""Values of the ``source`` label of ``dmsac_nan_events_total``."""
TARGETS_FILE_NAME = "prometheus_targets.json"
"""The file_sd target file the learner writes into its run directory."""
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@config_section
class MetricsConfig:
    """The learner's Prometheus endpoint, and its TensorBoard scalars."""

    enabled: bool = True
    """Serve ``/metrics`` over HTTP from the learner."""
    port: int = Field(9400, ge=0, le=65535)
    """TCP port of the endpoint; 0 picks a free port (the chosen one is logged and written to the file_sd file)."""
    bind_address: Address = "0.0.0.0"
    """Address the endpoint listens on: ``0.0.0.0`` for every interface, ``127.0.0.1`` for this machine only."""
    tensorboard: bool = True
    """Write TensorBoard scalars (``train/q_mean``, ``safety/rollbacks``, ``rollout/episode_return`` …) to
    ``<train.run_dir>/tensorboard/``; ``make tensorboard RUN_DIR=…`` shows them."""
    tensorboard_every_updates: int = Field(500, ge=1)
    """Learner updates between TensorBoard points (each the latest block's statistics, as the gauges hold them)."""


@dataclass(frozen=True)
class MetricSpec:
    """One row of the metrics table of specs/observability.md."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(label name, its bounded values); empty values: set at run time (build_info only)."""


def _net(name: str, kind: str, help_: str) -> MetricSpec:
    return MetricSpec(name, kind, help_, (("network", NETWORKS),))


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dmsac_policy_grad_norm", "gauge", "Policy gradient global norm before clipping."),
    MetricSpec("dmsac_q_grad_norm", "gauge", "Critic gradient global norm before clipping."),
    MetricSpec("dmsac_grad_clip_norm", "gauge", "The configured gradient clip limit."),
    _net("dmsac_grad_clipped_total", "counter", "Updates whose gradient norm exceeded the clip limit."),
    MetricSpec("dmsac_q_mean", "gauge", "Mean Q on the last sampled batch (scaled reward units)."),
    MetricSpec("dmsac_q_std", "gauge", "Standard deviation of Q on the last sampled batch (scaled reward units)."),
    MetricSpec("dmsac_alpha", "gauge", "Entropy temperature."),
    MetricSpec("dmsac_policy_loss", "gauge", "Policy loss of the last update."),
    MetricSpec("dmsac_q_loss", "gauge", "Critic loss of the last update."),
    MetricSpec("dmsac_reward_scale", "gauge", "Reward scale in force."),
    _net("dmsac_learning_rate", "gauge", "Learning rate in force."),
    MetricSpec("dmsac_env_steps_total", "counter", "Environment steps collected (all actors)."),
    MetricSpec("dmsac_learner_updates_total", "counter", "SAC updates performed."),
    MetricSpec("dmsac_episode_return", "gauge", "Mean unscaled return of the episodes in the recent window."),
    MetricSpec("dmsac_nan_events_total", "counter", "Non-finite detections.", (("source", NAN_SOURCES),)),
    MetricSpec("dmsac_rollbacks_total", "counter", "Rollbacks to the last good state."),
    MetricSpec(
        "dmsac_context_fallbacks_total", "counter", "Contexts replaced by zeros.", (("reason", CONTEXT_FALLBACK_REASONS),)
    ),
    MetricSpec(
        "dmsac_transitions_rejected_total",
        "counter",
        "Transitions dropped before replay.",
        (("reason", REJECTED_TRANSITION_REASONS),),
    ),
    MetricSpec(
        "dmsac_fragments_duplicate_total", "counter", "Fragments ignored as already ingested (same actor, incarnation, seq)."
    ),
    MetricSpec("dmsac_weights_version", "gauge", "Version of the last broadcast."),
    MetricSpec(
        "dmsac_weights_rejected_total", "counter", "Broadcasts refused by the weight gate.", (("reason", WEIGHT_REJECT_REASONS),)
    ),
    MetricSpec("dmsac_policy_lag_versions", "gauge", "Versions the newest fragment's policy was behind."),
    MetricSpec("dmsac_checkpoint_step", "gauge", "Step of the last written checkpoint."),
    MetricSpec("dmsac_last_good_checkpoint_step", "gauge", "Step of the checkpoint last_good names."),
    MetricSpec(
        "dmsac_checkpoint_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful checkpoint (the exporter's start until the first one).",
    ),
    MetricSpec("dmsac_actors_alive", "gauge", "Rollout actors alive."),
    MetricSpec("dmsac_actor_restarts_total", "counter", "Rollout actor restarts."),
    MetricSpec(
        "dmsac_learner_restarts_total", "counter", "Learners that died and were replaced from last_good (carried on)."
    ),
    MetricSpec("dmsac_replay_size", "gauge", "Transitions held in the replay buffer."),
    MetricSpec("dmsac_build_info", "gauge", "Always 1; labels name the code version and the run.", (("version", ()), ("run", ()))),
)
"""Every exported metric, in the order of the spec's table."""


@dataclass(frozen=True)
class StatMetric:
    """Where one ``UpdateStats`` field goes: ``set`` a gauge or ``inc`` a counter, with fixed labels."""

    metric: str
    op: str
    labels: tuple[tuple[str, str], ...] = ()


UPDATE_STATS_METRICS: dict[str, StatMetric] = {
    name: StatMetric(spec.metric, "set" if spec.kind == "gauge" else "inc", spec.labels) for name, spec in STATS.items()
}
"""Where each ``UpdateStats`` field goes, read off the statistics table (``learner.types.STATS``)."""


class MetricsPortInUseError(RuntimeError):
    """The configured metrics port is taken; the message names the port and the config key."""


def _package_version() -> str:
    try:
        return metadata.version("dmsac")
    except metadata.PackageNotFoundError:
        return "unknown"


def mean_return(returns: Iterable[float]) -> float:
    """Mean of the recent window's episode returns; NaN for an empty window."""
    values = list(returns)
    return math.fsum(values) / len(values) if values else math.nan


class MetricsExporter:
    """Owns a private ``CollectorRegistry`` holding every metric of ``METRICS``."""

    def __init__(self, config: MetricsConfig | None = None, run: str = "", version: str | None = None) -> None:
        self.config = config or MetricsConfig()
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Gauge | Counter] = {spec.name: self._create(spec) for spec in METRICS}
        self._server = None
        # The staleness clock of DmsacCheckpointStale starts with the exporter.
        self.gauge("dmsac_checkpoint_last_success_timestamp_seconds").set(time.time())
        self.set_build_info(version if version is not None else _package_version(), run)

    def _create(self, spec: MetricSpec) -> Gauge | Counter:
        cls = Gauge if spec.kind == "gauge" else Counter
        names = [label for label, _ in spec.labels]
        metric = cls(spec.name, spec.help, names, registry=self.registry)
        bounded = [values for _, values in spec.labels]
        if names and all(bounded):
            for combo in _product(bounded):
                metric.labels(*combo)  # pre-initialise every bounded series to 0
        return metric

    # -- access ---------------------------------------------------------------

    def gauge(self, name: str) -> Gauge:
        metric = self._metrics[name]
        assert isinstance(metric, Gauge), name
        return metric

    def counter(self, name: str) -> Counter:
        metric = self._metrics[name]
        assert isinstance(metric, Counter), name
        return metric

    def _labelled(self, name: str, **labels: str) -> Gauge | Counter:
        spec = next(s for s in METRICS if s.name == name)
        for label, value in labels.items():
            allowed = dict(spec.labels)[label]
            if value not in allowed:
                raise ValueError(f"{name}: {label}={value!r} is not one of {allowed}")
        return self._metrics[name].labels(**labels) if labels else self._metrics[name]

    def exposition(self) -> bytes:
        """The text exposition a scrape would return."""
        return generate_latest(self.registry)

    # -- learner figures --------------------------------------------------------

    def record_update_stats(self, stats: UpdateStats) -> None:
        """Export one block's ``UpdateStats`` through ``UPDATE_STATS_METRICS``."""
        for f in fields(stats):
            target = UPDATE_STATS_METRICS[f.name]
            metric = self._labelled(target.metric, **dict(target.labels))
            value = float(getattr(stats, f.name))
            if target.op == "set":
                metric.set(value)  # a NaN passes through: the NaN alert tests x != x
            elif value:
                metric.inc(value)

    def set_in_force(self, reward_scale: float, learning_rates: Mapping[str, float], clip_norm: float) -> None:
        """Reward scale, per-network learning rates and clip limit currently applied."""
        self.gauge("dmsac_reward_scale").set(reward_scale)
        for network, lr in learning_rates.items():
            self._labelled("dmsac_learning_rate", network=network).set(lr)
        self.gauge("dmsac_grad_clip_norm").set(clip_norm)

    def nan_event(self, source: str, count: int = 1) -> None:
        """A non-finite detection outside the update (``params`` before a broadcast/commit, ``weights`` at the gate)."""
        self._labelled("dmsac_nan_events_total", source=source).inc(count)

    def rollback(self) -> None:
        self.counter("dmsac_rollbacks_total").inc()

    def set_weights_version(self, version: int) -> None:
        self.gauge("dmsac_weights_version").set(version)

    def weights_rejected(self, reason: str) -> None:
        self._labelled("dmsac_weights_rejected_total", reason=reason).inc()

    def set_checkpoint(self, step: int, timestamp: float | None = None) -> None:
        """A checkpoint was written successfully at ``step``."""
        self.gauge("dmsac_checkpoint_step").set(step)
        self.gauge("dmsac_checkpoint_last_success_timestamp_seconds").set(time.time() if timestamp is None else timestamp)

    def set_last_good(self, step: int) -> None:
        self.gauge("dmsac_last_good_checkpoint_step").set(step)

    def set_replay_size(self, size: int) -> None:
        self.gauge("dmsac_replay_size").set(size)

    def set_policy_lag(self, versions: int) -> None:
        self.gauge("dmsac_policy_lag_versions").set(versions)

    def set_build_info(self, version: str, run: str) -> None:
        """One ``dmsac_build_info`` series: the previous one is removed."""
        info = self._metrics["dmsac_build_info"]
        info.clear()
        info.labels(version=version, run=run).set(1)

    # -- actor-side figures -------------------------------------------------------

    def record_fragment(self, fragment: Fragment, learner_version: int | None = None) -> None:
        """Env steps, context fallbacks and rejected transitions of one fragment (and the policy lag)."""
        self.counter("dmsac_env_steps_total").inc(fragment.env_steps)
        for reason, count in fragment.context_fallbacks.items():
            if count:
                self._labelled("dmsac_context_fallbacks_total", reason=reason).inc(count)
        for reason, count in fragment.rejected.items():
            if count:
                self._labelled("dmsac_transitions_rejected_total", reason=reason).inc(count)
        if learner_version is not None:
            self.set_policy_lag(max(0, learner_version - fragment.weights_version))

    def fragment_duplicate(self) -> None:
        self.counter("dmsac_fragments_duplicate_total").inc()

    def set_episode_return(self, window: Iterable[float]) -> None:
        """Mean return of the recent window; an empty window leaves the gauge as it was."""
        value = mean_return(window)
        if not math.isnan(value):
            self.gauge("dmsac_episode_return").set(value)

    def set_actors(self, alive: int) -> None:
        self.gauge("dmsac_actors_alive").set(alive)

    def actor_restarted(self, count: int = 1) -> None:
        self.counter("dmsac_actor_restarts_total").inc(count)

    def learner_restarted(self, total: int) -> None:
        """A new learner's counter starts at the run's total so far, not at 0 (Prometheus sees no reset to undo)."""
        exported = self.registry.get_sample_value("dmsac_learner_restarts_total") or 0.0
        self.counter("dmsac_learner_restarts_total").inc(max(0.0, total - exported))

    # -- serving ------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Serve ``/metrics``; returns the bound (address, port), the real one when ``port`` is 0.

        The composition root calls this only when ``config.enabled``; it then
        writes the file_sd file with ``write_file_sd(run_dir / TARGETS_FILE_NAME,
        target_host(address, node_ip), port, labels)``.
        """
        host, port = self.config.bind_address, self.config.port
        try:
            server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise MetricsPortInUseError(
                    f"metrics port {port} on {host} is already in use: set metrics.port to a free port "
                    "(or 0 for any free port), or stop the process holding it"
                ) from err
            raise
        self._server = server
        bound = (host, int(server.server_port))
        log.info("serving Prometheus metrics on http://%s:%d/metrics", *bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _product(groups: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    combos: list[tuple[str, ...]] = [()]
    for values in groups:
        combos = [c + (v,) for c in combos for v in values]
    return combos


def target_host(bind_address: str, fallback: str = "127.0.0.1") -> str:
    """The host a scraper should use: ``fallback`` (e.g. the node IP) when bound to every interface."""
    return fallback if bind_address in ("0.0.0.0", "::", "") else bind_address


def file_sd_document(host: str, port: int, labels: Mapping[str, str] | None = None) -> list[dict]:
    """A Prometheus file_sd target list naming ``host:port``."""
    labels = dict(labels or {})
    for key, value in labels.items():
        if not _LABEL_NAME.match(key) or key.startswith("__"):
            raise ValueError(f"file_sd label name {key!r} is not a valid Prometheus label")
        if not isinstance(value, str):
            raise ValueError(f"file_sd label {key!r} must be a string, got {value!r}")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [{"targets": [address], "labels": labels}]


def write_file_sd(path: str | Path, host: str, port: int, labels: Mapping[str, str] | None = None) -> Path:
    """Write the file_sd target file atomically (Prometheus watches it and may read it at any moment)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(file_sd_document(host, port, labels), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote Prometheus file_sd targets %s:%d to %s", host, port, path)
    return path
