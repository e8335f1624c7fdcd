"""The fast path on a GPU: ``SAC.sampled_step`` captured once in a CUDA graph and replayed for every update.

A wrapper around the one SAC step, not a second SAC. The learning rate, reward scale
and replay size are device tensors and a rollback restores state in place, so none of
them re-captures; ``compile_math`` runs the step's pure maths through ``torch.compile``. Several runs
(``train.parallel_runs``) share one graph, each run's step a branch of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from learner.replay import ReplayBuffer
from learner.sac import MATH, SAC, update_blocks

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before a capture (the state is restored afterwards)
_COMPILED: dict[str, Callable] = {}


def compiled_math() -> dict[str, Callable]:
    """``MATH`` through ``torch.compile``; built once per process, shared by every learner."""
    if not _COMPILED:
        _COMPILED.update({k: torch.compile(f, dynamic=False, fullgraph=True) for k, f in MATH.items()})
    return _COMPILED


class GraphedBlocks:
    """``update_blocks`` of one or more SACs (runs), each update of all of them one replay of one CUDA graph (captured
    on first use). Several runs' steps are captured on a stream each: independent branches of the graph, which the GPU
    runs side by side (``train.parallel_runs``)."""

    def __init__(self, sacs: SAC | list[SAC], compile_math: bool = False) -> None:
        self.sacs = [sacs] if isinstance(sacs, SAC) else list(sacs)
        for sac in self.sacs:
            if sac.device.type != "cuda":
                raise ValueError(f"CUDA graphs need a CUDA device, not {sac.device}")
        self.device = self.sacs[0].device
        self.compile_math = compile_math
        self.graph: torch.cuda.CUDAGraph | None = None
        self.bound: list[tuple[ReplayBuffer, torch.Tensor]] | None = None
        self.captures = 0
        """Graph captures so far (a learning-rate, reward-scale or replay-size change must not add one)."""

    def update_block(self, replay: ReplayBuffer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One run's block (``SAC.update_block``'s result)."""
        return self.update_blocks([replay], count)[0]

    def update_blocks(self, replays: list[ReplayBuffer], count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sacs = self.sacs
        if any(sac.grad_hook is not None for sac in sacs):
            return update_blocks(sacs, replays, count)
        for sac in sacs:
            if count > sac.rows.shape[0]:
                sac.allocate_block(count)
        bound = [(replay, sac.rows) for sac, replay in zip(sacs, replays, strict=True)]
        if self.bound is None or any(a[0] is not b[0] or a[1] is not b[1] for a, b in zip(self.bound, bound, strict=True)):
            self.capture(replays)
        return update_blocks(sacs, replays, count, run_step=self.graph.replay)

    def capture(self, replays: list[ReplayBuffer]) -> None:
        """Warm up on a side stream, capture one ``sampled_step`` of every run, then put every state tensor and RNG
        back (also when the capture fails: the runs are as they were)."""
        pairs = list(zip(self.sacs, replays, strict=True))
        generators = [g for sac, replay in pairs for g in (sac.noise, replay.generator)]
        saved, generator_states = [sac.device_snapshot() for sac in self.sacs], [g.get_state() for g in generators]
        try:
            graph = self._capture(pairs, generators, saved)
        finally:
            for sac, snapshot in zip(self.sacs, saved, strict=True):
                sac.restore_device_snapshot(snapshot)
            for generator, state in zip(generators, generator_states, strict=True):
                generator.set_state(state)
        self.graph, self.bound = graph, [(replay, sac.rows) for sac, replay in pairs]
        self.captures += 1

    def _capture(self, pairs: list[tuple[SAC, ReplayBuffer]], generators: list, saved: list[dict]) -> torch.cuda.CUDAGraph:
        main = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            for (sac, replay), snapshot in zip(pairs, saved, strict=True):
                sac.replay_size.fill_(max(len(replay), 1))
                self._warm_up(sac, replay, snapshot)
        main.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        for sac, _ in pairs:
            for optimizer in sac.optimizers():
                optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's pool
            sac.counter.zero_()
        with torch.cuda.graph(graph):
            if len(pairs) == 1:
                pairs[0][0].sampled_step(pairs[0][1])
            else:  # a branch per run: forked from the capture stream and joined back into it
                capturing = torch.cuda.current_stream(self.device)
                branches = [torch.cuda.Stream(device=self.device) for _ in pairs]
                for (sac, replay), branch in zip(pairs, branches, strict=True):
                    branch.wait_stream(capturing)
                    with torch.cuda.stream(branch):
                        sac.sampled_step(replay)
                for branch in branches:
                    capturing.wait_stream(branch)
        return graph

    def _warm_up(self, sac: SAC, replay: ReplayBuffer, saved: dict) -> None:
        """A few eager steps (they build the compiled kernels); if the compiled maths fail, capture the plain ones."""
        if self.compile_math:
            sac.math = compiled_math()
        for attempt in range(2):
            try:
                for _ in range(WARMUP_STEPS):
                    sac.counter.zero_()
                    sac.sampled_step(replay)
                return
            except Exception as error:
                if sac.math is MATH or attempt:
                    raise
                log.warning("torch.compile of the update maths failed, capturing them uncompiled: %s", error)
            sac.math = MATH  # outside the handler: the failed attempt's autograd graph is freed first
            sac.restore_device_snapshot(saved)
