"""Several independent runs trained by one learner process (``train.parallel_runs``).

Each run is a whole ``LearnerService`` (its own SAC, replay, guard and rollback, checkpoints and metrics). Runs of the
same shapes and update constants (``learner.stack.StackSpec``: seeds, learning rates, reward scales and initial
temperatures may differ) are joined into one ``RunStack``: their updates are one step of stacked weights, batched
products for all of them, so at batch 256, where an update is bound by kernel launches, K runs cost little more than
one (``bench/learner_speed.py``, variants ``parallel_*``). Stacks of different shapes are branches of one CUDA graph.
Runs share no tensor and no generator: each one's updates are those it would make alone (tested).
"""

from __future__ import annotations

import logging
import time

from learner.graph import GraphedBlocks, graphed_for
from learner.learner import launched_result
from learner.replay import ReplayBuffer
from learner.safety import NonFiniteStop
from learner.service import LaunchedBlock, LearnerService
from learner.stack import RunStack, update_blocks
from learner.types import VersionedWeights

log = logging.getLogger(__name__)


class JointTrainer:
    """Runs the updates due of several services in lockstep blocks; what one run still owes after that, it runs
    alone (``LearnerService.train``)."""

    def __init__(self, services: list[LearnerService]) -> None:
        self.services = services
        first = services[0].learner
        self.graphed = first.device.type == "cuda" and first.config.fast_path != "off"
        self.fast_path = first.config.fast_path
        self.joint = True
        """False once a joint capture failed: from then on each run replays its own graph."""
        self.graphs: dict[tuple[int, ...], GraphedBlocks] = {}
        """A graph per set of runs trained together (the set changes only when a run's budget or schedule does)."""
        self.stacks: list[tuple[tuple[int, ...], RunStack]] = []
        """The joined stacks and their runs (by service index): runs of one spec, two or more."""
        groups: dict = {}
        for k, service in enumerate(services):
            groups.setdefault(service.learner.sac.stack.spec, []).append(k)
        for runs in groups.values():
            if len(runs) > 1:
                self.stacks.append((tuple(runs), RunStack.join([services[k].learner.sac.stack for k in runs])))
                ReplayBuffer.join([services[k].learner.replay for k in runs])
        self.joined = {k for members, _ in self.stacks for k in members}
        """Runs of a joined stack. What one of them trains without the others (a leftover, a run whose partners
        have stopped) is a few blocks: its own graph takes the plain maths, as does any graph with it apart from its
        stack. Compiling one (20 s) would stall the job: a capture waits for a compile in progress."""
        self.own_graphs("graph")
        log.info("%d runs in %d stacks", len(services), len(groups))

    def train(self, alone: list[bool] | None = None) -> list[VersionedWeights | None]:
        """Train every run what is due; per run, the weights to broadcast (None: not due, or refused by the gate).

        A block of ``n`` updates runs for every run that owes at least ``n``, ``n`` the least owed among them (at
        most ``learner.block_updates``), while two or more runs owe updates. As for one run alone
        (``learner.overlap_blocks``), the next joint block is launched before the previous one is read; a run whose
        read changes where its next block starts (a rollback, new rates) has its part of that block undone. What
        one run owes after that it trains alone where ``alone[k]`` (default: every run); elsewhere it waits for the
        next joint block (on Ray, while the other runs still collect: training alone would need a graph of its own,
        captured and compiled apart).
        """
        services = self.services
        in_flight = min(service.blocks_in_flight for service in services)
        running: list[dict[int, LaunchedBlock]] = []
        """Joint blocks launched and not yet read, oldest first: each run's part by service index."""
        trained = [0] * len(services)
        stop: NonFiniteStop | None = None
        started = time.perf_counter()
        while True:
            while len(running) < in_flight and not any(service.stopping for service in services):
                launched = self.launch()
                if launched is None:
                    break
                running.append(launched)
                for k, part in launched.items():
                    trained[k] += part.result.count
            if not running:
                break
            stopped = self.read(running.pop(0), running, trained)
            stop = stop or stopped  # the first
        if sum(trained):  # each run's share of the joint blocks, in its training time
            spent = time.perf_counter() - started
            for service, updates in zip(services, trained, strict=True):
                service.times.add("train", spent * updates / sum(trained))
        if stop is not None:
            raise stop
        alone = alone or [True] * len(services)
        return [service.train(max_updates=None if may else 0) for service, may in zip(services, alone, strict=True)]

    def read(self, oldest: dict[int, LaunchedBlock], running: list[dict[int, LaunchedBlock]],
             trained: list[int]) -> NonFiniteStop | None:  # fmt: skip
        """Read, record and guard each run's part of the ``oldest`` joint block. A run whose read undoes its parts
        of the blocks still ``running`` (a rollback, new rates, a stop) leaves them: they are dropped there and off
        its ``trained`` count. Returns the first stop raised (the other runs' parts are read and guarded first)."""
        stop = None
        for k, part in oldest.items():
            ahead = [later[k] for later in running if k in later]
            launched_ahead = sum(later.result.count for later in ahead)
            try:
                undone = self.services[k].finish(part, ahead)
            except NonFiniteStop as error:  # finish undid its blocks ahead before raising
                stop, undone = stop or error, launched_ahead
            if undone:
                for later in running:
                    later.pop(k, None)
                trained[k] -= undone
        return stop

    def launch(self) -> dict[int, LaunchedBlock] | None:
        """The next joint block launched (each run's part, by service index), or None while fewer than two runs
        owe updates."""
        services = self.services
        dues = [service.updates_due() for service in services]
        together = tuple(k for k, due in enumerate(dues) if due > 0)
        if len(together) < 2:
            return None
        count = min(min(dues[k] for k in together), *(services[k].schedule.block_updates for k in together))
        before = {k: services[k].learner.undo_point() for k in together}
        results = self.blocks(together, count)
        return {
            k: LaunchedBlock(*before[k], launched_result(vector, indices, count, services[k].learner.updates_done))
            for k, (vector, indices) in results.items()
        }

    def own_graphs(self, fast_path: str) -> None:
        """A new graph of ``fast_path`` for each joined run's own stack (where it has a graph: on CUDA)."""
        for learner in (self.services[k].learner for k in self.joined):
            if isinstance(learner.blocks, GraphedBlocks):
                learner.blocks = graphed_for(learner.sac.stack, fast_path)

    def stacks_for(self, together: tuple[int, ...]) -> tuple[list[tuple[int, ...]], list[RunStack]]:
        """The stacks that train ``together``: each joined stack all of whose runs are in it, and every other run's
        own stack; with the runs (service indices) of each."""
        joined = [(members, stack) for members, stack in self.stacks if set(members) <= set(together)]
        covered = {k for members, _ in joined for k in members}
        alone = [((k,), self.services[k].learner.sac.stack) for k in together if k not in covered]
        runs, stacks = zip(*(joined + alone), strict=True)
        return list(runs), list(stacks)

    def blocks(self, together: tuple[int, ...], count: int) -> dict[int, tuple]:
        """``count`` updates of each run in ``together``, by service index: one graph for all on CUDA (each run its
        own graph, one after another, if this GPU or driver refuses the joint capture), eager elsewhere."""
        runs, stacks = self.stacks_for(together)
        replays = [[self.services[k].learner.replay for k in members] for members in runs]
        order = [k for members in runs for k in members]
        if not self.graphed:
            return dict(zip(order, update_blocks(stacks, replays, count), strict=True))
        if self.joint:
            try:
                if together not in self.graphs:
                    apart = any(len(members) == 1 and members[0] in self.joined for members in runs)
                    self.graphs[together] = graphed_for(stacks, "graph" if apart else self.fast_path)
                return dict(zip(order, self.graphs[together].update_blocks(replays, count), strict=True))
            except Exception as error:  # noqa: BLE001 - any capture failure: the runs still train, alone
                self.joint = False  # a failed capture puts every run back as it was
                self.own_graphs(self.fast_path)  # each joined run's own graph trains all of it now
                log.warning("one CUDA graph for %d runs failed (%s: %s); each run replays its own graph instead",
                            len(together), type(error).__name__, error)  # fmt: skip
        learners = {k: self.services[k].learner for k in together}
        return {k: learner.blocks.update_block(learner.replay, count) for k, learner in learners.items()}


def time_to_train(owed: list[int], collecting: list[bool], patience: list[float]) -> bool:
    """When runs whose fragments arrive one by one (on Ray) should train: once every run still collecting owes
    updates (a lockstep block for all of them), or one owes more than its ``patience`` (a slow or lost fleet must
    not hold the others back for long). A single run trains whenever it owes."""
    waiting_for_none = all(due > 0 for due, more in zip(owed, collecting, strict=True) if more)
    return waiting_for_none or any(due > limit for due, limit in zip(owed, patience, strict=True))


def may_train_alone(owed: list[int], collecting: list[bool], patience: list[float]) -> list[bool]:
    """Per run, whether what it owes beyond a joint block is trained now, alone: when no other run is collecting
    (none will owe again), or it owes more than its ``patience``; otherwise the next joint block takes it."""
    others_collecting = [any(more for j, more in enumerate(collecting) if j != k) for k in range(len(owed))]
    return [not others or due > limit for due, others, limit in zip(owed, others_collecting, patience, strict=True)]
