"""The step's maths through torch.compile (``learner.graph.compiled_math``) on the CPU: the same updates as the eager
maths, for stacks of several shapes in one process (a bench of several, a joint job of runs of several widths)."""

from __future__ import annotations

import torch

from learner.graph import compiled_math
from learner.replay import ReplayBuffer
from learner.sac import SAC
from learner.stack import RunStack
from tests.learner.helpers import DIMS, random_batch, with_config

CPU = torch.device("cpu")


def stack_of(runs: int, batch: int) -> tuple[RunStack, list[ReplayBuffer]]:
    config = with_config(hidden_sizes=(16, 16), batch_size=batch, block_updates=2)
    sacs = [SAC(DIMS.policy_in, DIMS.action_dim, config, CPU, seed=k) for k in range(runs)]
    replays = []
    for k in range(runs):
        replay = ReplayBuffer(500, DIMS.obs_dim, DIMS.context_dim, DIMS.action_dim, CPU, seed=k)
        replay.add(random_batch(size=100, seed=k))
        replays.append(replay)
    return (RunStack.join([sac.stack for sac in sacs]) if runs > 1 else sacs[0].stack), replays


def test_compiled_maths_make_the_eager_updates_for_stacks_of_three_shapes_in_one_process():
    """Three stacks: ``bias_relu`` is compiled four times for each (policy, targets, critics with and without their
    gradients), twelve in all — past torch's default of eight compiles of one function, after which torch 2.13 raises
    (``fullgraph``) and 2.11 runs the function eagerly (on an H200 the 8-run bench ran at half its rate)."""
    for runs, batch in ((1, 8), (2, 8), (1, 16)):
        eager, eager_replays = stack_of(runs, batch)
        compiled, compiled_replays = stack_of(runs, batch)
        compiled.math = compiled_math()
        for stack, replays in ((eager, eager_replays), (compiled, compiled_replays)):
            stack.begin_block(replays, 2)
            for _ in range(2):
                stack.sampled_step(replays)
        assert torch.equal(compiled.indices[:, :2], eager.indices[:, :2])
        assert torch.allclose(compiled.rows[:, :2], eager.rows[:, :2], rtol=1e-4, atol=1e-5)
        for got, want in zip(compiled.state_tensors(), eager.state_tensors(), strict=True):
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
