"""The fast path on a GPU: ``SAC.sampled_step`` captured once in a CUDA graph and replayed for every update.

A wrapper around the one SAC step, not a second SAC. The learning rate, reward scale
and replay size are device tensors and a rollback restores state in place, so none of
them re-captures; ``compile_math`` runs the step's pure maths through ``torch.compile``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from learner.replay import ReplayBuffer
from learner.sac import MATH, SAC

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before a capture (the state is restored afterwards)
_COMPILED: dict[str, Callable] = {}


def compiled_math() -> dict[str, Callable]:
    """``MATH`` through ``torch.compile``; built once per process, shared by every learner."""
    if not _COMPILED:
        _COMPILED.update({k: torch.compile(f, dynamic=False, fullgraph=True) for k, f in MATH.items()})
    return _COMPILED


class GraphedBlocks:
    """``SAC.update_block`` with each ``sampled_step`` a replay of one CUDA graph (captured on first use)."""

    def __init__(self, sac: SAC, compile_math: bool = False) -> None:
        if sac.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {sac.device}")
        self.sac = sac
        self.compile_math = compile_math
        self.graph: torch.cuda.CUDAGraph | None = None
        self.bound: tuple[ReplayBuffer, torch.Tensor] | None = None
        self.captures = 0
        """Graph captures so far (a learning-rate, reward-scale or replay-size change must not add one)."""

    def update_block(self, replay: ReplayBuffer, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        sac = self.sac
        if sac.grad_hook is not None:
            return sac.update_block(replay, count)
        if count > sac.rows.shape[0]:
            sac.allocate_block(count)
        if self.bound is None or self.bound[0] is not replay or self.bound[1] is not sac.rows:
            self.capture(replay)
        return sac.update_block(replay, count, run_step=self.graph.replay)

    def capture(self, replay: ReplayBuffer) -> None:
        """Warm up on a side stream, capture one ``sampled_step``, then put every state tensor and RNG back."""
        sac, generators = self.sac, [self.sac.noise, replay.generator]
        saved, generator_states = sac.device_snapshot(), [g.get_state() for g in generators]
        sac.replay_size.fill_(max(len(replay), 1))
        side = torch.cuda.Stream(device=sac.device)
        side.wait_stream(torch.cuda.current_stream(sac.device))
        with torch.cuda.stream(side):
            self._warm_up(replay, saved)
        torch.cuda.current_stream(sac.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        for optimizer in sac.optimizers():
            optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's pool
        sac.counter.zero_()
        with torch.cuda.graph(graph):
            sac.sampled_step(replay)
        sac.restore_device_snapshot(saved)
        for generator, state in zip(generators, generator_states, strict=True):
            generator.set_state(state)
        self.graph, self.bound = graph, (replay, sac.rows)
        self.captures += 1

    def _warm_up(self, replay: ReplayBuffer, saved: dict) -> None:
        """A few eager steps (they build the compiled kernels); if the compiled maths fail, capture the plain ones."""
        if self.compile_math:
            self.sac.math = compiled_math()
        for attempt in range(2):
            try:
                for _ in range(WARMUP_STEPS):
                    self.sac.counter.zero_()
                    self.sac.sampled_step(replay)
                return
            except Exception as error:
                if self.sac.math is MATH or attempt:
                    raise
                log.warning("torch.compile of the update maths failed, capturing them uncompiled: %s", error)
            self.sac.math = MATH  # outside the handler: the failed attempt's autograd graph is freed first
            self.sac.restore_device_snapshot(saved)
