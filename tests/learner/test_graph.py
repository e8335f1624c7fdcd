"""The CUDA-graph wrapper replays the one SAC step: its blocks equal the eager blocks of the same SAC.

Tolerances: statistics rtol 1e-4 / atol 1e-5 elementwise; parameters atol 1e-5 and a
relative error of the parameter change ``|Δ_graph − Δ_eager| / |Δ_eager|`` ≤ 1e-3 (lr
1e-4, so a missed or doubled Adam step, which moves every weight by ~1e-4, fails). A
graph replays the same kernels as the eager step, so the two agree to float32 rounding
(and bitwise where the kernels are deterministic).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner.graph import GraphedBlocks, warm_up_device
from learner.replay import ReplayBuffer
from learner.sac import SAC
from learner.stack import MATH, RunStack
from tests.learner.helpers import DIMS, random_batch, with_config

CONFIG = with_config(lr=1e-4, hidden_sizes=(32, 32), batch_size=16, max_grad_norm=5.0, block_updates=4)
STEPS = 3
"""Updates per replay of the tests' block graphs: a block of 4 is a replay of the 3-update graph and one of the
1-update graph, 12 four of the first."""
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the graphs capture CUDA kernels")


def pair(config=CONFIG, compile_math: bool = False) -> tuple[SAC, SAC, GraphedBlocks]:
    cuda = torch.device("cuda")
    eager, graphed = (SAC(DIMS.policy_in, DIMS.action_dim, config, cuda, seed=11) for _ in range(2))
    return eager, graphed, GraphedBlocks(graphed.stack, compile_math=compile_math, steps_per_replay=STEPS)


def replays(size: int = 200) -> tuple[ReplayBuffer, ReplayBuffer]:
    """Two replay buffers with the same rows and the same sampling seed."""
    made = []
    for _ in range(2):
        replay = ReplayBuffer(1000, DIMS.obs_dim, DIMS.context_dim, DIMS.action_dim, torch.device("cuda"), seed=5)
        replay.add({k: v.cuda() for k, v in random_batch(size=size, seed=42).items()})
        made.append(replay)
    return made[0], made[1]


def networks(sac: SAC) -> torch.Tensor:
    """Parameters, targets, optimizer moments and log α, flat."""
    return torch.cat([t.detach().reshape(-1).float().cpu() for t in sac.state_tensors()])


def assert_same_run(eager: SAC, graphed: SAC, before: torch.Tensor) -> None:
    eager_now, graphed_now = networks(eager), networks(graphed)
    assert torch.allclose(graphed_now, eager_now, rtol=0, atol=1e-5)
    change = eager_now - before
    assert change.norm() > 0 and ((graphed_now - before) - change).norm() / change.norm() <= 1e-3


def test_graphs_need_a_cuda_device():
    sac = SAC(DIMS.policy_in, DIMS.action_dim, CONFIG, torch.device("cpu"), seed=0)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        GraphedBlocks(sac.stack)


def math_calls(stack: RunStack, replays) -> list:
    """One ``sampled_step`` of ``stack`` with every maths function recording what it is handed: name, and each
    tensor's shape, dtype, strides and whether it wants a gradient (what a compiled function's guards look at)."""
    calls = []

    def described(value):
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype, value.stride(), value.requires_grad)
        if isinstance(value, list | tuple):
            return [described(v) for v in value]
        return value

    def recording(name, function):
        def record(*args):
            calls.append((name, described(list(args))))
            return function(*args)

        return record

    stack.math = {name: recording(name, function) for name, function in MATH.items()}
    stack.set_replay_sizes(replays)
    stack.sampled_step(replays)
    return calls


@pytest.mark.parametrize("runs", [1, 2])
def test_a_stand_in_hands_the_maths_what_the_real_step_does(runs):
    """``fast_path: auto`` compiles on a stand-in of the runs' stack (``compile_for``): for the real step to reuse
    what it built, every maths function must see tensors of the same shapes, dtypes, strides and gradient needs (a
    stand-in stack of one is checked against a run's own stack inside a joined one, a view of it)."""
    from learner.graph import stand_in_for

    sacs = [SAC(DIMS.policy_in, DIMS.action_dim, CONFIG, torch.device("cpu"), seed=k) for k in range(max(runs, 2))]
    joined = RunStack.join([sac.stack for sac in sacs])
    stack = joined if runs == 2 else sacs[0].stack  # the joint stack, or run 0's own (its tensors views of it)
    replays = []
    for k in range(runs):
        replay = ReplayBuffer(1000, DIMS.obs_dim, DIMS.context_dim, DIMS.action_dim, torch.device("cpu"), seed=k)
        replay.add(random_batch(size=50, seed=k))
        replays.append(replay)
    stand_in, rows = stand_in_for(stack, replays)
    real, stand = math_calls(stack, replays), math_calls(stand_in, rows)
    # 8 hidden layers, 4 first-layer inputs, 2 Adams
    assert [name for name, _ in real] == [name for name, _ in stand] and len(real) == 21
    assert real == stand


def test_background_work_runs_on_its_own_thread_one_at_a_time_and_hands_back_its_error():
    """``in_background``: the compile's thread (events, not sleeps, order the two jobs), with the GIL handed back to
    the training thread every 0.1 ms while it runs and Python's interval restored after."""
    import sys
    import threading

    from learner import graph

    first_in, release, seen = threading.Event(), threading.Event(), []
    interval = sys.getswitchinterval()

    def first() -> str:
        seen.append(("first", threading.current_thread().name, sys.getswitchinterval()))
        first_in.set()
        release.wait()
        return "built"

    def second() -> None:
        seen.append(("second", threading.current_thread().name, sys.getswitchinterval()))
        raise RuntimeError("inductor said no")

    one, two = graph.in_background(first), graph.in_background(second)
    first_in.wait()
    assert not two.done() and {one, two} <= set(graph._BACKGROUND)  # the second waits: one compile at a time
    release.set()
    assert one.result() == "built" and isinstance(two.exception(), RuntimeError)
    assert seen == [("first", "dmsac-compile", pytest.approx(1e-4)), ("second", "dmsac-compile", pytest.approx(1e-4))]
    assert one not in graph._BACKGROUND and two not in graph._BACKGROUND  # each left it before its result was set
    assert sys.getswitchinterval() == interval == 0.005  # Python's default, back once the work ended (error or not)


@pytest.mark.gpu
@gpu
def test_warming_the_gpu_up_leaves_the_run_its_replay_and_their_generators_as_they_were_on_cuda():
    eager, graphed, blocks = pair()
    eager_replay, graphed_replay = replays()
    before = networks(graphed)
    generators = [*graphed.stack.generators(), graphed_replay.generator]
    states = [g.get_state() for g in generators]
    assert warm_up_device(graphed.stack, [graphed_replay]) > 0
    assert torch.equal(networks(graphed), before) and graphed.updates_done == 0
    assert all(torch.equal(g.get_state(), state) for g, state in zip(generators, states, strict=True))
    assert len(graphed_replay) == 200 and torch.equal(graphed_replay.rows, eager_replay.rows)
    a, ia = eager.update_block(eager_replay, 4)  # and the run's own graph trains as if nothing had happened
    b, ib = blocks.update_block(graphed_replay, 4)
    assert torch.equal(ia, ib) and torch.allclose(b, a, rtol=1e-4, atol=1e-5)
    assert_same_run(eager, graphed, before)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("compile_math", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_graphed_blocks_equal_eager_blocks_on_cuda(compile_math):
    eager, graphed, blocks = pair(compile_math=compile_math)
    eager_replay, graphed_replay = replays()
    before = networks(eager)
    for _ in range(3):
        a, ia = eager.update_block(eager_replay, 4)
        b, ib = blocks.update_block(graphed_replay, 4)
        assert torch.equal(ia, ib)  # the same rows, sampled inside the graph
        assert torch.allclose(b, a, rtol=1e-4, atol=1e-5), (a, b)
    assert_same_run(eager, graphed, before)
    assert blocks.captures == 1 and graphed.updates_done == 12 and sorted(blocks.graphs) == [1, STEPS]
    assert (graphed.stack.math is not MATH) == compile_math  # compiled, no fallback


@pytest.mark.gpu
@gpu
@pytest.mark.slow
def test_a_compile_in_the_background_swaps_in_at_a_block_and_the_run_equals_eager_on_cuda():
    """``fast_path: auto``: the first block replays the plain maths while the compile runs on its thread; the first
    block after it is taken captures again with the compiled maths; every block equals the eager one."""
    eager, graphed, _ = pair()
    blocks = GraphedBlocks(graphed.stack, compile_math=True, compile_in_background=True)
    eager_replay, graphed_replay = replays()
    before = networks(eager)
    uncompiled = []
    for block in range(3):
        if block == 1:
            assert blocks.compiling is not None and blocks.captures == 1
            blocks.take_compiled(wait=True)  # here, not whenever it ends: the test fixes where the swap happens
            assert blocks.compile_math and blocks.bound is None
        a, ia = eager.update_block(eager_replay, 4)
        b, ib = blocks.update_block(graphed_replay, 4)
        uncompiled.append(graphed.stack.math is MATH)
        assert torch.equal(ia, ib)
        assert torch.allclose(b, a, rtol=1e-4, atol=1e-5), (a, b)
    assert_same_run(eager, graphed, before)
    assert uncompiled == [True, False, False] and blocks.captures == 2 and blocks.compiling is None


@pytest.mark.gpu
@gpu
def test_one_graph_for_several_runs_equals_each_run_eager_on_cuda():
    """``train.parallel_runs``: three runs, two of one width (seeds and learning rates differ) stacked, one wider its
    own stack, the stacks branches of one graph; each run's blocks equal its own eager blocks alone, and a rollback
    of one run leaves the graph and the others alone."""
    cuda = torch.device("cuda")
    configs = [CONFIG, dataclasses.replace(CONFIG, lr=3e-4), dataclasses.replace(CONFIG, hidden_sizes=(64, 64))]
    make = lambda: [SAC(DIMS.policy_in, DIMS.action_dim, c, cuda, seed=11 + k) for k, c in enumerate(configs)]  # noqa: E731
    eager, graphed = make(), make()
    eager_replays, graphed_replays = ([replays()[0] for _ in configs] for _ in range(2))
    stacks = [RunStack.join([graphed[0].stack, graphed[1].stack]), graphed[2].stack]
    blocks = GraphedBlocks(stacks, steps_per_replay=STEPS)
    graphed_replays = [graphed_replays[:2], graphed_replays[2:]]
    before = [networks(sac) for sac in eager]
    for _ in range(3):
        results = blocks.update_blocks(graphed_replays, 4)
        for sac, replay, (b, ib) in zip(eager, eager_replays, results, strict=True):
            a, ia = sac.update_block(replay, 4)
            assert torch.equal(ia, ib) and torch.allclose(b, a, rtol=1e-4, atol=1e-5), (a, b)
    for e, g, b in zip(eager, graphed, before, strict=True):
        assert_same_run(e, g, b)
    snapshot = graphed[1].device_snapshot()
    others = [networks(sac) for sac in (graphed[0], graphed[2])]
    blocks.update_blocks(graphed_replays, 4)
    graphed[1].restore_device_snapshot(snapshot)  # run 1 rolls back in place; runs 0 and 2 keep their block
    assert torch.equal(networks(graphed[1]), torch.cat([t.reshape(-1).float().cpu() for t in snapshot["tensors"]]))
    assert all(not torch.equal(networks(s), o) for s, o in zip((graphed[0], graphed[2]), others, strict=True))
    assert blocks.captures == 1 and [sac.updates_done for sac in graphed] == [16, 12, 16]


@pytest.mark.gpu
@gpu
def test_rates_replay_growth_and_restore_need_no_recapture_on_cuda():
    eager, graphed, blocks = pair()
    eager_replay, graphed_replay = replays(size=40)
    blocks.update_block(graphed_replay, 4)
    eager.update_block(eager_replay, 4)
    for sac, replay in ((eager, eager_replay), (graphed, graphed_replay)):
        sac.set_rates(2.0, 0.0)  # a zero learning rate freezes the online networks inside the graph
        replay.add({k: v.cuda() for k, v in random_batch(size=400, seed=7).items()})  # the buffer grows
    actor = [p.clone() for p in graphed.actor.parameters()]
    a, _ = eager.update_block(eager_replay, 4)
    b, indices = blocks.update_block(graphed_replay, 4)
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(x, y) for x, y in zip(actor, graphed.actor.parameters(), strict=True))
    assert int(indices.max()) >= 40  # the new rows are sampled by the same graph
    snapshot, sampling = graphed.device_snapshot(), graphed_replay.generator.get_state()
    first, _ = blocks.update_block(graphed_replay, 4)
    graphed.restore_device_snapshot(snapshot)  # a rollback: in place, the graph stays valid
    graphed_replay.generator.set_state(sampling)
    again, _ = blocks.update_block(graphed_replay, 4)
    assert torch.equal(first, again) and blocks.captures == 1 and graphed.updates_done == 12


@pytest.mark.gpu
@gpu
def test_a_failing_compile_falls_back_to_the_plain_maths_on_cuda():
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    eager, graphed, blocks = pair(compile_math=True)
    eager_replay, graphed_replay = replays()
    with pytest.MonkeyPatch.context() as patch:  # as if torch.compile failed to build the maths
        patch.setattr("learner.graph.compiled_math", lambda: dict(MATH, policy_head=broken))
        a, _ = eager.update_block(eager_replay, 4)
        b, _ = blocks.update_block(graphed_replay, 4)
    assert graphed.stack.math is MATH and blocks.captures == 1
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@gpu
def test_the_learner_trains_in_the_graph_and_its_guard_finds_a_poisoned_block_on_cuda():
    from learner.config import ReplayConfig
    from learner.learner import Learner

    config = dataclasses.replace(CONFIG, fast_path="graph", block_updates=5)
    learner = Learner(DIMS, config, ReplayConfig(capacity=1000), torch.device("cuda"), seed=3)
    assert isinstance(learner.blocks, GraphedBlocks)
    learner.replay.add({k: v.cuda() for k, v in random_batch(size=200, seed=1).items()})
    clean = learner.update_block(5)
    assert clean.first_bad_index is None and learner.updates_done == 5 and learner.blocks.captures == 1
    assert clean.stats.finite
    snapshot = learner.snapshot()
    learner.replay.storage["reward"].fill_(float("nan"))  # every batch from now on is poisoned
    poisoned = learner.update_block(5)
    assert poisoned.first_bad_index == 0
    assert poisoned.stats.nonfinite_loss == 1  # the first bad update counted once, not five times
    learner.restore(snapshot)
    assert learner.parameters_finite() and learner.updates_done == 5 and learner.blocks.captures == 1


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["high", "bf16"])
def test_lower_precision_graphs_equal_their_eager_steps_on_cuda(precision):
    config = dataclasses.replace(CONFIG, matmul_precision=precision)
    eager, graphed, blocks = pair(config)
    eager_replay, graphed_replay = replays()
    before = networks(eager)
    for _ in range(3):
        a, _ = eager.update_block(eager_replay, 4)
        b, _ = blocks.update_block(graphed_replay, 4)
        assert torch.allclose(b, a, rtol=1e-3, atol=1e-4), (a, b)
    assert_same_run(eager, graphed, before)
    assert blocks.captures == 1


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("remedy", [False, True])
def test_overlapped_graph_blocks_equal_blocks_one_at_a_time_on_cuda(remedy):
    """On the graph path the next block is already queued when a block's statistics reach the host (a pinned copy
    behind it): the run equals one block at a time (to float rounding; an Adam step more or less moves every weight
    by ~1e-4), also when a remedy's new rates undo the queued block."""
    from learner.config import ReplayConfig
    from learner.learner import Learner
    from learner.safety import RollbackToLastGood, Safety, SafetyConfig, WarningSignsConfig
    from learner.service import LearnerService, Schedule
    from tests.learner.helpers import make_fragment

    config = dataclasses.replace(CONFIG, fast_path="graph", batch_size=8, block_updates=5)
    safety = SafetyConfig(warnings=WarningSignsConfig(grad_norm_fraction=1e-6 if remedy else 1e6), on_warning="remedy",
                          warning_sustain_updates=10)  # fmt: skip
    runs = []
    for overlap in (True, False):
        learner = Learner(DIMS, config, ReplayConfig(capacity=1000), torch.device("cuda"), seed=3)
        schedule = Schedule(warmup_steps=0, update_to_data=1.0, block_updates=5, broadcast_every=5, batch_size=8)
        service = LearnerService(learner, schedule, safety=Safety(safety, RollbackToLastGood(safety)),
                                 overlap_blocks=overlap)  # fmt: skip
        blocks = [service.step(make_fragment(steps=8, envs=2, seq=seq, seed=seq)).blocks for seq in (1, 2, 3)]
        runs.append((service, blocks))
    (overlapped, blocks), (alone, alone_blocks) = runs
    assert overlapped.learner.updates_done == alone.learner.updates_done == 48
    got = torch.tensor([list(b.as_dict().values()) for step in blocks for b in step], dtype=torch.float64)
    want = torch.tensor([list(b.as_dict().values()) for step in alone_blocks for b in step], dtype=torch.float64)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-6)  # atomics may reorder sums
    assert torch.allclose(networks(overlapped.learner.sac), networks(alone.learner.sac), rtol=0, atol=1e-6)
    assert overlapped.safety.counts["warning_remedies"] == alone.safety.counts["warning_remedies"] == (2 if remedy else 0)


@pytest.mark.gpu
@gpu
@pytest.mark.slow
def test_a_joint_job_compiles_its_stack_and_a_joined_run_apart_takes_the_plain_maths_on_cuda():
    """``fast_path: auto`` with two runs of one shape: their joint graph compiles in the background; a run's own
    graph (what it trains without the other) never compiles: its capture waits for the joint compile (a capture
    beside a compile breaks one of them) and sets none off of its own."""
    from learner.config import ReplayConfig
    from learner.learner import Learner
    from learner.parallel import JointTrainer
    from learner.service import LearnerService, Schedule
    from tests.learner.helpers import make_fragment

    config = dataclasses.replace(CONFIG, fast_path="auto")
    schedule = Schedule(warmup_steps=0, update_to_data=1.0, block_updates=4, broadcast_every=4, batch_size=16)
    cuda = torch.device("cuda")
    services = [LearnerService(Learner(DIMS, config, ReplayConfig(capacity=1000), cuda, seed=k), schedule)
                for k in range(2)]  # fmt: skip
    trainer = JointTrainer(services)
    for k, service in enumerate(services):
        service.ingest(make_fragment(steps=10, envs=2, seq=1, seed=k))  # 20 updates owed each
    trainer.train()
    joint = trainer.graphs[(0, 1)]
    assert [s.learner.updates_done for s in services] == [20, 20]
    # the plain maths captured first; the compiled ones being built (or, if an earlier test built them, taken in)
    assert joint.compiling is not None or (joint.compile_math and joint.captures == 2)
    services[0].ingest(make_fragment(steps=2, envs=2, seq=2, seed=7))  # run 0 alone owes 4
    trainer.train(alone=[True, True])
    apart = services[0].learner.blocks
    assert services[0].learner.updates_done == 24 and apart.captures == 1
    assert not apart.compile_math and apart.compiling is None  # no compile of its own
    assert joint.compiling is None or joint.compiling.done()  # its capture waited for the joint compile
