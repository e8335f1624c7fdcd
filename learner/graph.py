"""The fast path on a GPU: ``RunStack.sampled_step`` captured once in a CUDA graph and replayed for every update.

A wrapper around the one SAC step (``learner/stack.py``), not a second SAC. The learning rate, reward scale
and replay size are device tensors and a rollback restores state in place, so none of
them re-captures; ``compile_math`` runs the step's pure maths through ``torch.compile``. Several runs
(``train.parallel_runs``) share one graph: runs of the same shapes one stack, stacks of different shapes a branch each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from learner.replay import ReplayBuffer
from learner.stack import MATH, RunStack, update_blocks

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before a capture (the state is restored afterwards)
_COMPILED: dict[str, Callable] = {}


def compiled_math() -> dict[str, Callable]:
    """``MATH`` through ``torch.compile``; built once per process, shared by every learner."""
    if not _COMPILED:
        _COMPILED.update({k: torch.compile(f, dynamic=False, fullgraph=True) for k, f in MATH.items()})
    return _COMPILED


class GraphedBlocks:
    """``update_blocks`` of one or more run stacks, each update of all of them one replay of one CUDA graph (captured
    on first use). Several stacks' steps (runs of different shapes, ``train.parallel_runs``) are captured on a stream
    each: independent branches of the graph, which the GPU runs side by side."""

    def __init__(self, stacks: RunStack | list[RunStack], compile_math: bool = False) -> None:
        self.stacks = [stacks] if isinstance(stacks, RunStack) else list(stacks)
        for stack in self.stacks:
            if stack.device.type != "cuda":
                raise ValueError(f"CUDA graphs need a CUDA device, not {stack.device}")
        self.device = self.stacks[0].device
        self.compile_math = compile_math
        self.graph: torch.cuda.CUDAGraph | None = None
        self.bound: list | None = None
        self.captures = 0
        """Graph captures so far (a learning-rate, reward-scale or replay-size change must not add one)."""

    def update_block(self, replay: ReplayBuffer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One run's block (``SAC.update_block``'s result)."""
        return self.update_blocks([[replay]], count)[0]

    def update_blocks(self, replays: list[list[ReplayBuffer]], count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``update_blocks`` of the stacks, ``replays[s]`` the replays of stack ``s``'s runs."""
        stacks = self.stacks
        if any(run.grad_hook is not None for stack in stacks for run in stack.runs):
            return update_blocks(stacks, replays, count)
        for stack in stacks:
            if count > stack.rows.shape[1]:
                stack.allocate_block(count)
        if self.bound != self.binding(replays):
            self.capture(replays)
        return update_blocks(stacks, replays, count, run_step=self.graph.replay)

    def binding(self, replays: list[list[ReplayBuffer]]) -> list:
        """What a captured graph reads and writes by address: the replays, the block buffers and the stacks' state
        (moved by ``RunStack.join``)."""
        return [([id(r) for r in rs], stack.rows.data_ptr(), stack.actor[0].data_ptr())
                for stack, rs in zip(self.stacks, replays, strict=True)]  # fmt: skip

    def capture(self, replays: list[list[ReplayBuffer]]) -> None:
        """Warm up on a side stream, capture one ``sampled_step`` of every stack, then put every state tensor and
        RNG back (also when the capture fails: the runs are as they were)."""
        pairs = list(zip(self.stacks, replays, strict=True))
        generators = [g for stack, rs in pairs for g in stack.generators() + [r.generator for r in rs]]
        saved, generator_states = [stack.snapshot() for stack in self.stacks], [g.get_state() for g in generators]
        try:
            graph = self._capture(pairs, generators, saved)
        finally:
            for stack, snapshot in zip(self.stacks, saved, strict=True):
                stack.restore(snapshot)
            for generator, state in zip(generators, generator_states, strict=True):
                generator.set_state(state)
        self.graph, self.bound = graph, self.binding(replays)
        self.captures += 1

    def _capture(self, pairs: list[tuple[RunStack, list[ReplayBuffer]]], generators: list,
                 saved: list[list[torch.Tensor]]) -> torch.cuda.CUDAGraph:  # fmt: skip
        main = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            for (stack, replays), snapshot in zip(pairs, saved, strict=True):
                stack.set_replay_sizes(replays)
                self._warm_up(stack, replays, snapshot)
        main.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        for stack, _ in pairs:
            stack.zero_grad()  # gradients are allocated inside the graph's pool
            stack.counter.zero_()
        with torch.cuda.graph(graph):
            if len(pairs) == 1:
                pairs[0][0].sampled_step(pairs[0][1])
            else:  # a branch per stack: forked from the capture stream and joined back into it
                capturing = torch.cuda.current_stream(self.device)
                branches = [torch.cuda.Stream(device=self.device) for _ in pairs]
                for (stack, replays), branch in zip(pairs, branches, strict=True):
                    branch.wait_stream(capturing)
                    with torch.cuda.stream(branch):
                        stack.sampled_step(replays)
                for branch in branches:
                    capturing.wait_stream(branch)
        return graph

    def _warm_up(self, stack: RunStack, replays: list[ReplayBuffer], saved: list[torch.Tensor]) -> None:
        """A few eager steps (they build the compiled kernels); if the compiled maths fail, capture the plain ones."""
        if self.compile_math:
            stack.math = compiled_math()
        for attempt in range(2):
            try:
                for _ in range(WARMUP_STEPS):
                    stack.counter.zero_()
                    stack.sampled_step(replays)
                return
            except Exception as error:
                if stack.math is MATH or attempt:
                    raise
                log.warning("torch.compile of the update maths failed, capturing them uncompiled: %s", error)
            stack.math = MATH  # outside the handler: the failed attempt's autograd graph is freed first
            stack.restore(saved)
