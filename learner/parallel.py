"""Several independent runs trained by one learner process (``train.parallel_runs``).

Each run is a whole ``LearnerService`` (its own SAC, replay, guard and rollback, checkpoints and metrics); what they
share is the device and, on CUDA, one graph per update: a replay advances every run that has updates due, each on
a branch of its own. At batch 256 an update is bound by kernel launches and latency, not arithmetic, so side-by-side
branches cost little more than one. Runs share no tensor and no generator: each one's updates are those it would
make alone (tested).
"""

from __future__ import annotations

from learner.graph import GraphedBlocks
from learner.learner import block_result
from learner.sac import update_blocks
from learner.service import LearnerService
from learner.types import VersionedWeights


class JointTrainer:
    """Runs the updates due of several services in lockstep blocks; what one run still owes after that, it runs
    alone (``LearnerService.train``)."""

    def __init__(self, services: list[LearnerService]) -> None:
        self.services = services
        first = services[0].learner
        self.graphed = first.device.type == "cuda" and first.config.fast_path != "off"
        self.compile_math = first.config.fast_path == "auto"
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
            snapshots = [learner.snapshot() for learner in learners]
            replays = [learner.replay for learner in learners]
            if self.graphed:
                results = self.graph_for(together).update_blocks(replays, count)
            else:
                results = update_blocks([learner.sac for learner in learners], replays, count)
            for k, (vector, indices), snapshot in zip(together, results, snapshots, strict=True):
                services[k].after_block(block_result(vector, indices, count), snapshot)
        return [service.train() for service in services]

    def graph_for(self, together: tuple[int, ...]) -> GraphedBlocks:
        if together not in self.graphs:
            sacs = [self.services[k].learner.sac for k in together]
            self.graphs[together] = GraphedBlocks(sacs, compile_math=self.compile_math)
        return self.graphs[together]
