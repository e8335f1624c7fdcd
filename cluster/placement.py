"""Where a Ray job runs: joining a cluster, what each actor asks for, and actors the cluster cannot place.

Ray keeps an actor that no node can host pending without a word. The
driver watches the actors that have not answered yet (the learner until its
first weights, each rollout actor until its first fragment); when the GCS
reports a pending resource demand of exactly such an actor's shape for
``cluster.schedule_timeout_s`` in a row, the job ends with exit 3 and a
message naming what was asked for and what the cluster has. A slow start
(a runtime environment being built, a worker process starting) holds its
resources and is not a pending demand, so it never trips this.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

import ray
from ray.autoscaler.v2.sdk import get_cluster_status

from cluster.config import Config
from cluster.runner import CapacityError, LearnerStartError

log = logging.getLogger("dmsac")


def connect(config: Config) -> bool:
    """Join the configured or running cluster; with none, start a local Ray instance (laptop mode).

    Returns whether this call connected (then the run disconnects at its end; a caller's connection stays).
    """
    if ray.is_initialized():
        return False
    extra = {"_node_ip_address": config.cluster.node_ip_address} if config.cluster.node_ip_address else {}
    if config.cluster.address not in ("", "local"):
        ray.init(address=config.cluster.address, **extra)
        return True
    running = running_cluster_address() if config.cluster.address == "" else None
    if running:
        ray.init(address=running, **extra)
        log.info("joined the running Ray cluster at %s", running)
        return True
    # Enough logical CPUs for every actor (each run's rollout actors and the one learner): a 2-core laptop still
    # runs the whole job.
    cpus = max(os.cpu_count() or 1, config.cluster.num_actors * config.train.parallel_runs + 1)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, **extra)
    log.info("started a local Ray instance with %d CPUs", cpus)
    return True


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
    """A GPU (``cluster.learner_gpu_fraction`` of one) for the learner when asked for (auto/cuda) and the cluster
    has one; else a CPU."""
    resources = ray.cluster_resources()
    options: dict = {"num_cpus": 1}
    if config.learner.device != "cpu" and resources.get("GPU", 0) >= 1:
        options["num_gpus"] = config.cluster.learner_gpu_fraction
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


def resource_shape(options: dict) -> dict[str, float]:
    """The resource bundle Ray schedules for actor ``options`` (``num_cpus``, ``num_gpus``, ``resources``)."""
    shape = {"CPU": float(options.get("num_cpus", 1))}
    if options.get("num_gpus"):
        shape["GPU"] = float(options["num_gpus"])
    shape.update({name: float(amount) for name, amount in options.get("resources", {}).items()})
    return {name: amount for name, amount in shape.items() if amount > 0}


def pending_demands() -> list[dict[str, float]]:
    """Resource bundles of tasks and actors the GCS reports as waiting for resources (empty when it cannot tell)."""
    try:
        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception as err:  # an older GCS without the autoscaler state service: no detection, no false alarm
        log.debug("cluster status unavailable: %s", err)
        return []
    demands = status.resource_demands.ray_task_actor_demand
    return [dict(request.bundle) for demand in demands for request in demand.bundles_by_count]


def _resources(values: dict) -> str:
    shown = {k: v for k, v in sorted(values.items()) if k in ("CPU", "GPU") or not k.startswith(("node:", "memory", "object"))}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}"


Shape = tuple[tuple[str, float], ...]


def _key(shape: dict[str, float]) -> Shape:
    return tuple(sorted(shape.items()))


class SchedulingWatch:
    """Finds resource shapes that awaited actors ask for and the GCS has reported pending for ``timeout_s`` in a row.

    The GCS reports demands by shape, not by actor: when the learner and the rollout
    actors ask for the same shape, the message names every actor of that shape not started yet.
    """

    def __init__(
        self,
        timeout_s: float,
        setting: str = "cluster.schedule_timeout_s",
        demands: Callable[[], list[dict[str, float]]] = pending_demands,
        every_s: float = 2.0,
        cluster: Callable[[], tuple[dict, dict]] = lambda: (ray.cluster_resources(), ray.available_resources()),
    ) -> None:
        self.timeout_s = timeout_s
        self.setting = setting
        """The config key of ``timeout_s``, for the message."""
        self.demands = demands
        self.cluster = cluster
        self.every_s = every_s
        self.pending_since: dict[Shape, float] = {}
        self._checked_at = -float("inf")

    def stuck(self, awaited: dict[str, dict[str, float]]) -> dict[Shape, list[str]]:
        """``awaited``: actor name → resource shape, for the actors not started yet. Returns stuck shape → names."""
        now = time.monotonic()
        if now - self._checked_at < self.every_s:
            return {}
        self._checked_at = now
        by_shape: dict[Shape, list[str]] = {}
        for name, shape in awaited.items():
            by_shape.setdefault(_key(shape), []).append(name)
        pending = {_key(demand) for demand in self.demands()} & set(by_shape) if by_shape else set()
        self.pending_since = {shape: self.pending_since.get(shape, now) for shape in pending}
        for shape, since in self.pending_since.items():
            if since == now:
                log.warning("%s: waiting for resources %s that no node has free", ", ".join(by_shape[shape]),
                            _resources(dict(shape)))  # fmt: skip
        return {shape: by_shape[shape] for shape, since in self.pending_since.items() if now - since >= self.timeout_s}

    def check(self, awaited: dict[str, dict[str, float]], what_it_needs: str) -> None:
        """Raise ``CapacityError`` for the first stuck shape (``capacity_error``)."""
        for shape, names in self.stuck(awaited).items():
            raise self.capacity_error(names, dict(shape), what_it_needs)

    def capacity_error(self, names: list[str], shape: dict[str, float], what_it_needs: str) -> CapacityError:
        """Exit 3's message: what is pending, who is not started, what the cluster has, what the job needs."""
        total, free = self.cluster()
        return CapacityError(
            f"the cluster cannot give the job what it needs: Ray has kept requests for {_resources(shape)} pending "
            f"for over {self.timeout_s:g} s ({self.setting}); not started yet: {', '.join(names)}; "
            f"the cluster has {_resources(total)} in all, {_resources(free)} free; {what_it_needs}"
        )
