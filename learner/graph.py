"""The fast path on a GPU: ``RunStack.sampled_step`` captured in CUDA graphs and replayed for every update: a graph of
``STEPS_PER_REPLAY`` updates for most of a block, one of a single update for the rest.

A wrapper around the one SAC step (``learner/stack.py``), not a second SAC. The learning rate, reward scale
and replay size are device tensors and a rollback restores state in place, so none of
them re-captures; ``compile_math`` runs the step's pure maths through ``torch.compile``. Several runs
(``train.parallel_runs``) share one graph: runs of the same shapes one stack, stacks of different shapes a branch each.

Compiling takes 20-25 s on an H200 (cold caches), far longer than a short job's updates: with ``compile_in_background``
the graph is captured uncompiled at once and the compiled maths are built on a worker thread, by a step of a stand-in
stack of the same shapes (no state shared with the runs); the next block after that captures again with them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import torch

from learner.replay import ReplayBuffer
from learner.stack import COMPILED_FORMS, MATH, RunStack, update_blocks

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before a capture (the state is restored afterwards)
STEPS_PER_REPLAY = 10
"""Updates in one replay of a block's graph: the GPU idles while the host launches each replay. (Before the draws
moved out of the graph, ``RunStack.draw_block``, each replay also refilled every generator's seed and offset, ~17 µs
of host time each: on an H200, 8 stacked runs at batch 256 took 470 µs per update as graphs of one update, 425 of 5
and 418 of 25.)"""
_COMPILED: dict[str, Callable] = {}
_COMPILE_LOCK = threading.Lock()
"""Held by the background compile running (one at a time: torch.compile is not thread-safe)."""
_BACKGROUND: list[Future] = []
"""Background compiles not yet finished."""
RECOMPILE_LIMIT = 64
"""Compiles torch keeps of one function (its default, 8, then runs it eagerly): ``bias_relu`` alone is compiled four
times for one stack (the policy's layers, the targets', the critics' with and without their gradients), again for
each other shape, precision and batch in the process — a bench of several, a joint job of runs of several shapes."""
BACKGROUND_SWITCH_INTERVAL_S = 1e-4
"""Python's GIL switch interval while a background compile runs (default 5 ms). The training thread gives the GIL up
at every graph replay and waits up to an interval to take it back from the compile (pure Python): at 5 ms a
Pendulum-sized run trained 739 updates/s beside the compile against 3 230 after it, on an H200."""


def compiled_math() -> dict[str, Callable]:
    """``MATH`` through ``torch.compile`` (``COMPILED_FORMS`` where given); built once per process, shared by every
    learner."""
    if not _COMPILED:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        forms = {k: COMPILED_FORMS.get(k, f) for k, f in MATH.items()}
        _COMPILED.update({k: torch.compile(f, dynamic=False, fullgraph=True) for k, f in forms.items()})
    return _COMPILED


class GraphedBlocks:
    """``update_blocks`` of one or more run stacks: ``steps_per_replay`` updates of all of them one replay of one
    CUDA graph, the rest of a block one replay each of a graph of one update (both captured on first use). Several
    stacks' steps (runs of different shapes, ``train.parallel_runs``) are captured on a stream each: independent
    branches of the graph, which the GPU runs side by side."""

    def __init__(
        self, stacks: RunStack | list[RunStack], compile_math: bool = False, compile_in_background: bool = False,
        steps_per_replay: int = STEPS_PER_REPLAY,
    ) -> None:  # fmt: skip
        self.stacks = [stacks] if isinstance(stacks, RunStack) else list(stacks)
        for stack in self.stacks:
            if stack.device.type != "cuda":
                raise ValueError(f"CUDA graphs need a CUDA device, not {stack.device}")
        self.device = self.stacks[0].device
        self.compile_math = compile_math and not compile_in_background
        """Whether the next capture uses the compiled maths (with ``compile_in_background``: once they are built)."""
        self.compile_after_capture = compile_math and compile_in_background
        """A background compile is still to start (after the first capture: the two must not overlap)."""
        self.compiling: Future | None = None
        """The background compile, until its result is taken (``take_compiled``)."""
        self.steps_per_replay = steps_per_replay
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        """Updates per replay → its graph: ``steps_per_replay`` and 1 (the rest of a block)."""
        self.bound: list | None = None
        self.captures = 0
        """Graph captures so far, each of both graphs (a learning-rate, reward-scale or replay-size change must not
        add one)."""

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
        if self.compiling is not None and self.compiling.done():
            self.take_compiled()
        if self.bound != self.binding(replays):
            self.capture(replays)
        if self.compile_after_capture:
            self.compile_after_capture, self.compiling = False, in_background(compile_for, self.stacks, replays)
        return update_blocks(stacks, replays, count, run_steps=self.replay_up_to)

    def replay_up_to(self, updates: int) -> int:
        """One replay of the graph of the most updates not past ``updates``; returns its updates."""
        steps = max(s for s in self.graphs if s <= updates)
        self.graphs[steps].replay()
        return steps

    def take_compiled(self, wait: bool = False) -> None:
        """Capture with the compiled maths from the next block on, once the background compile has built them
        (``wait``: block until it has); if it failed, the uncompiled graph stays."""
        if self.compiling is None or not (wait or self.compiling.done()):
            return
        error, self.compiling = self.compiling.exception(), None
        if error is not None:
            log.warning("torch.compile of the update maths failed in the background; the graph stays uncompiled: %s: %s",
                        type(error).__name__, error)  # fmt: skip
            return
        self.compile_math, self.bound = True, None

    def binding(self, replays: list[list[ReplayBuffer]]) -> list:
        """What a captured graph reads and writes by address: the replays, the block buffers and the stacks' state
        (moved by ``RunStack.join``)."""
        return [([id(r) for r in rs], stack.rows.data_ptr(), stack.actor[0].data_ptr())
                for stack, rs in zip(self.stacks, replays, strict=True)]  # fmt: skip

    def capture(self, replays: list[list[ReplayBuffer]]) -> None:
        """Warm up on a side stream, capture ``sampled_step``s of every stack, then put every state tensor back (also
        when the capture fails: the runs are as they were). A compile running in the background is
        waited for first (this graph's, or another's): beside a capture its steps break it, or it breaks (torch's
        inductor asserted when a capture ran beside it, on an H200 with ``capture_error_mode="thread_local"``)."""
        for future in list(_BACKGROUND):
            future.exception()
        self._capture_and_restore(replays)

    def _capture_and_restore(self, replays: list[list[ReplayBuffer]]) -> None:
        started = time.perf_counter()
        pairs = list(zip(self.stacks, replays, strict=True))
        saved = [stack.snapshot() for stack in self.stacks]
        try:
            graphs = self._capture(pairs, saved)
        finally:
            for stack, snapshot in zip(self.stacks, saved, strict=True):
                stack.restore(snapshot)
        self.graphs, self.bound = graphs, self.binding(replays)
        self.captures += 1
        log.info("captured %d run(s)' updates as CUDA graphs of %s update(s) in %.1f s (maths %s)",
                 sum(len(s.runs) for s in self.stacks), " and ".join(map(str, sorted(graphs))),
                 time.perf_counter() - started, "compiled" if self.compile_math else "uncompiled")  # fmt: skip

    def _capture(self, pairs: list[tuple[RunStack, list[ReplayBuffer]]],
                 saved: list[list[torch.Tensor]]) -> dict[int, torch.cuda.CUDAGraph]:  # fmt: skip
        main = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            for (stack, replays), snapshot in zip(pairs, saved, strict=True):
                stack.set_replay_sizes(replays)
                stack.indices.zero_()  # rows every replay has: the block's draws come after the capture
                self._warm_up(stack, replays, snapshot)
        main.wait_stream(side)
        graphs: dict[int, torch.cuda.CUDAGraph] = {}
        for steps in sorted({self.steps_per_replay, 1}):
            # one memory pool: the graphs replay one after the other and hand nothing to each other in it
            graphs[steps] = self._capture_steps(pairs, steps, pool=graphs[1].pool() if graphs else None)
        return graphs

    def _capture_steps(self, pairs: list[tuple[RunStack, list[ReplayBuffer]]], steps: int,
                       pool: tuple | None) -> torch.cuda.CUDAGraph:  # fmt: skip
        """A graph of ``steps`` updates of every stack (it draws nothing: each block's draws are made before it)."""
        graph = torch.cuda.CUDAGraph()
        for stack, _ in pairs:
            stack.zero_grad()  # gradients are allocated inside the graph's pool
            stack.counter.zero_()
        with torch.cuda.graph(graph, pool=pool):
            for _ in range(steps):
                if len(pairs) == 1:
                    pairs[0][0].sampled_step(pairs[0][1])
                    continue
                capturing = torch.cuda.current_stream(self.device)  # a branch per stack, joined back into it
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
        stack.math = compiled_math() if self.compile_math else MATH
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


def graphed_for(stacks: RunStack | list[RunStack], fast_path: str) -> GraphedBlocks:
    """The graph ``learner.fast_path`` asks for (``auto``, ``compiled`` or ``graph``)."""
    return GraphedBlocks(stacks, compile_math=fast_path in ("auto", "compiled"), compile_in_background=fast_path == "auto")


def in_background(work: Callable, *args) -> Future:
    """``work(*args)`` on a daemon thread (a job that ends mid-compile does not wait for it), one at a time."""
    future: Future = Future()
    _BACKGROUND.append(future)

    def run() -> None:
        result, error = None, None
        with _COMPILE_LOCK:
            before = sys.getswitchinterval()
            sys.setswitchinterval(min(before, BACKGROUND_SWITCH_INTERVAL_S))
            try:
                result = work(*args)
            except BaseException as raised:  # noqa: BLE001 - handed to the caller through the future
                error = raised
            finally:
                sys.setswitchinterval(before)
        _BACKGROUND.remove(future)  # before the result: whoever sees it done sees it gone
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    threading.Thread(target=run, name="dmsac-compile", daemon=True).start()
    return future


class StandIn:
    """A run or a replay for ``compile_for``: the shapes of the real one, none of its state."""

    def __init__(self, device: torch.device, rows: torch.Tensor | None = None) -> None:
        self.noise = self.generator = torch.Generator(device=device)
        self.grad_hook, self.updates_done = None, 0
        self.rows = rows

    def __len__(self) -> int:
        return 1

    def draw(self, batch_size: int, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(batch_size, dtype=torch.long, device=self.rows.device) if out is None else out.zero_()

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        return self.rows[index]


def stand_in_for(stack: RunStack, replays: list[ReplayBuffer]) -> tuple[RunStack, list[StandIn]]:
    """A stack of ``stack``'s spec and size, and replays of its replays' row width: its step hands the maths
    tensors of the shapes, dtypes and strides the real step does (so what it compiles, the real step reuses)."""
    device = stack.device
    stand_in = RunStack([StandIn(device) for _ in stack.runs], stack.spec)
    rows = [StandIn(device, torch.zeros((1, r.rows.shape[1]), dtype=r.rows.dtype, device=device)) for r in replays]
    stand_in.set_replay_sizes(rows)
    return stand_in, rows


def warm_up_device(stack: RunStack, replays: list[ReplayBuffer]) -> float:
    """One update of a stand-in of ``stack`` (``stand_in_for``) captured as a CUDA graph, replayed and dropped; returns
    its seconds. A process's first capture loads the step's kernels, cuBLAS and the graph machinery: 4.0-4.4 s of
    the Pendulum job's first training block on an H200, against under 0.1 s for each capture after it. The learner
    does this when it is built, while the rollout actors start, not in its first block."""
    started = time.perf_counter()
    stand_in, rows = stand_in_for(stack, replays)
    GraphedBlocks(stand_in, steps_per_replay=1).update_blocks([rows], 1)
    torch.cuda.synchronize(stack.device)
    seconds = time.perf_counter() - started
    log.info("warmed the GPU up (a stand-in update captured and replayed) in %.1f s", seconds)
    return seconds


def compile_for(stacks: list[RunStack], replays: list[list[ReplayBuffer]]) -> None:
    """Build the compiled maths of ``stacks``' steps (on the worker thread): a few steps of stand-in stacks of the
    same specs and sizes, on a stream of their own. The runs' tensors are only read for their shapes."""
    started = time.perf_counter()
    device = stacks[0].device
    side = torch.cuda.Stream(device=device)
    with torch.cuda.device(device), torch.cuda.stream(side):
        for stack, stack_replays in zip(stacks, replays, strict=True):
            stand_in, rows = stand_in_for(stack, stack_replays)
            stand_in.math = compiled_math()
            for _ in range(2):  # the second runs what the first compiled (no recompile: the same guards)
                stand_in.counter.zero_()
                stand_in.sampled_step(rows)
    side.synchronize()
    log.info("compiled the update maths of %d run(s) in the background in %.1f s",
             sum(len(s.runs) for s in stacks), time.perf_counter() - started)  # fmt: skip
