"""Several independent runs trained by one learner process (``train.parallel_runs``).

Each run is a whole ``LearnerService`` (its own SAC, replay, guard and rollback, checkpoints and metrics); what they
share is the device and, on CUDA, one graph per update: a replay advances every run that has updates due, each on
a branch of its own. At batch 256 an update is bound by kernel launches and latency, not arithmetic, so side-by-side
branches should cost little more than one (``bench/learner_speed.py``, variants ``parallel_*``). Runs share no tensor
and no generator: each one's updates are those it would make alone (tested).
"""

from __future__ import annotations

import logging
import time

from learner.graph import GraphedBlocks
from learner.learner import Learner, block_result
from learner.sac import update_blocks
from learner.service import LearnerService
from learner.types import VersionedWeights

log = logging.getLogger(__name__)


class JointTrainer:
    """Runs the updates due of several services in lockstep blocks; what one run still owes after that, it runs
    alone (``LearnerService.train``)."""

    def __init__(self, services: list[LearnerService]) -> None:
        self.services = services
        first = services[0].learner
        self.graphed = first.device.type == "cuda" and first.config.fast_path != "off"
        self.compile_math = first.config.fast_path == "auto"
        self.joint = True
        """False once a joint capture failed: from then on each run replays its own graph."""
        self.graphs: dict[tuple[int, ...], GraphedBlocks] = {}
        """A graph per set of runs trained together (the set changes only when a run's budget or schedule does)."""

    def train(self) -> list[VersionedWeights | None]:
        """Train every run what is due; per run, the weights to broadcast (None: not due, or refused by the gate).

        A block of ``n`` updates runs for every run that owes at least ``n``, ``n`` the least owed among them (at
        most ``learner.block_updates``), while two or more runs owe updates.
        """
        services = self.services
        while not any(service.stopping for service in services):
            dues = [service.updates_due() for service in services]
            together = tuple(k for k, due in enumerate(dues) if due > 0)
            if len(together) < 2:
                break
            count = min(min(dues[k] for k in together), *(services[k].schedule.block_updates for k in together))
            learners = [services[k].learner for k in together]
            started = time.perf_counter()
            snapshots = [learner.snapshot() for learner in learners]
            results = self.blocks(together, learners, count)
            for k, (vector, indices), snapshot in zip(together, results, snapshots, strict=True):
                services[k].after_block(block_result(vector, indices, count, services[k].learner.updates_done), snapshot)
            share = (time.perf_counter() - started) / len(together)
            for k in together:  # each run's share of the joint block, in its training time
                services[k].times.add("train", share)
        return [service.train() for service in services]

    def blocks(self, together: tuple[int, ...], learners: list[Learner], count: int) -> list:
        """``count`` updates of each run in ``together``: one graph for all on CUDA (each run its own graph, one
        after another, if this GPU or driver refuses the joint capture), eager elsewhere."""
        replays = [learner.replay for learner in learners]
        if not self.graphed:
            return update_blocks([learner.sac for learner in learners], replays, count)
        if self.joint:
            try:
                return self.graph_for(together).update_blocks(replays, count)
            except Exception as error:  # noqa: BLE001 - any capture failure: the runs still train, alone
                self.joint = False  # a failed capture puts every run back as it was
                log.warning("one CUDA graph for %d runs failed (%s: %s); each run replays its own graph instead",
                            len(together), type(error).__name__, error)  # fmt: skip
        return [learner.blocks.update_block(learner.replay, count) for learner in learners]

    def graph_for(self, together: tuple[int, ...]) -> GraphedBlocks:
        if together not in self.graphs:
            sacs = [self.services[k].learner.sac for k in together]
            self.graphs[together] = GraphedBlocks(sacs, compile_math=self.compile_math)
        return self.graphs[together]


def time_to_train(owed: list[int], collecting: list[bool], patience: list[float]) -> bool:
    """When runs whose fragments arrive one by one (on Ray) should train: once every run still collecting owes
    updates (a lockstep block for all of them), or one owes more than its ``patience`` (a slow or lost fleet must
    not hold the others back for long). A single run trains whenever it owes."""
    waiting_for_none = all(due > 0 for due, more in zip(owed, collecting, strict=True) if more)
    return waiting_for_none or any(due > limit for due, limit in zip(owed, patience, strict=True))
