"""GraphedSAC computes what the eager SAC computes: eagerly on the CPU, captured in CUDA graphs on a GPU.

Tolerances: statistics rtol 1e-4 / atol 1e-5 elementwise after one update;
parameters atol 1e-5 elementwise (lr 1e-4, so a missed or doubled Adam step,
which moves every weight by ~1e-4, fails) and a relative error of the parameter
change ``|Δ_fast − Δ_eager| / |Δ_eager|`` ≤ 1e-3. The fast path evaluates the
twin critics as one batched matmul and uses fused Adam, so it agrees with the
eager path to float32 rounding, not bitwise.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner.fast_parts import MATH
from learner.fast_sac import GraphedSAC, build_sac
from learner.replay import ReplayBuffer
from learner.sac import SAC, STAT_FIELDS, summarize_block
from learner.temperature import LearnedTemperature
from tests.learner.helpers import DIMS, random_batch, with_config

CPU = torch.device("cpu")
CONFIG = with_config(lr=1e-4, hidden_sizes=(32, 32), batch_size=16, max_grad_norm=5.0)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the graphed path captures CUDA graphs")


def pair(device: torch.device, config=CONFIG, **fast) -> tuple[SAC, GraphedSAC]:
    eager = SAC(DIMS.policy_in, DIMS.action_dim, config, device, seed=11)
    return eager, GraphedSAC(DIMS.policy_in, DIMS.action_dim, config, device, seed=11, **fast)


def flat(state: dict) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float().cpu() for t in state.values()])


def networks(sac) -> torch.Tensor:
    return torch.cat(
        [flat(sac.actor.state_dict()), flat(sac.critic.state_dict()), flat(sac.critic_target.state_dict())]
    )


def batch_on(device: torch.device, seed: int, size: int = 16) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in random_batch(size=size, seed=seed).items()}


def assert_close_run(eager: SAC, fast: GraphedSAC, before: torch.Tensor, rel: float = 1e-3, atol: float = 1e-5) -> None:
    eager_now, fast_now = networks(eager), networks(fast)
    assert torch.allclose(fast_now, eager_now, rtol=0, atol=atol)
    change = eager_now - before
    assert change.norm() > 0
    assert ((fast_now - before) - change).norm() / change.norm() <= rel
    assert float(fast.temperature.alpha()) == pytest.approx(float(eager.temperature.alpha()), rel=1e-5)


def test_same_initial_networks_and_state_keys():
    eager, fast = pair(CPU)
    assert torch.equal(networks(eager), networks(fast))
    assert set(fast.state_dict()) == set(eager.state_dict())
    assert fast.critic.state_dict().keys() == eager.critic.state_dict().keys()


def test_eager_fast_path_matches_sac_on_cpu_over_five_updates():
    eager, fast = pair(CPU)
    before = networks(eager)
    for step in range(5):
        batch = batch_on(CPU, step)
        a, b = eager.update(batch), fast.update(batch)
        assert torch.allclose(b, a, rtol=1e-4, atol=1e-5), (step, a, b)
    assert_close_run(eager, fast, before)
    assert fast.updates_done == 5


def test_checkpoints_interchange_both_ways():
    eager, fast = pair(CPU)
    for step in range(3):
        eager.update(batch_on(CPU, step))
    fast.load_state_dict(eager.state_dict())
    assert torch.equal(networks(fast), networks(eager))
    before = networks(eager)
    a, b = eager.update(batch_on(CPU, 9)), fast.update(batch_on(CPU, 9))  # moments and step restored too
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-5)
    assert_close_run(eager, fast, before)
    # and back: an eager SAC loaded from the fast path's checkpoint continues identically
    other = SAC(DIMS.policy_in, DIMS.action_dim, CONFIG, CPU, seed=0)
    other.load_state_dict(fast.state_dict())
    a, b = other.update(batch_on(CPU, 10)), fast.update(batch_on(CPU, 10))
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-5)
    assert other.actor_optimizer.state_dict()["state"][0]["step"].item() == 5.0


def test_learning_rate_and_reward_scale_are_device_tensors_shared_by_all_optimizers():
    eager, fast = pair(CPU)
    fast.set_learning_rate(3e-3)
    eager.set_learning_rate(3e-3)
    fast.reward_scale.fill_(0.5)
    eager.reward_scale.fill_(0.5)
    before = networks(eager)
    a, b = eager.update(batch_on(CPU, 1)), fast.update(batch_on(CPU, 1))
    assert fast.learning_rate() == pytest.approx(3e-3)
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-5)
    assert_close_run(eager, fast, before)
    assert isinstance(fast.temperature, LearnedTemperature)
    assert fast.temperature.optimizer.param_groups[0]["lr"] is fast.lr


def test_guard_off_leaves_flags_zero_and_other_stats_equal():
    _, guarded = pair(CPU)
    _, unguarded = pair(CPU, guard=False)
    hook = lambda n, critic: next(critic.parameters()).grad.fill_(float("nan"))  # noqa: E731
    guarded.grad_hook = hook
    unguarded.grad_hook = hook
    a, b = guarded.update(batch_on(CPU, 2)), unguarded.update(batch_on(CPU, 2))
    assert a[STAT_FIELDS.index("nonfinite_grad")].item() == 1.0  # the hook reaches the stacked gradient
    assert b[9:].tolist() == [0.0, 0.0, 0.0]


def test_summarize_block_matches_eager_accumulation():
    keep = torch.tensor([f in ("policy_clipped", "q_clipped") or f.startswith("nonfinite") for f in STAT_FIELDS])
    rows = torch.tensor([[1.0] * 12, [2.0] * 12, [3.0] * 12]) * ~keep  # gauges 1, 2, 3; no counts
    rows[:, 7] = torch.tensor([1.0, 0.0, 1.0])  # policy_clipped twice
    rows[1, 10] = 1.0  # nonfinite_grad on the second update
    rows[0, 2] = float("inf")  # a non-finite gauge early in the block stays visible
    out = summarize_block(rows, keep)
    acc = torch.zeros(12)
    for row in rows:
        acc = acc * keep.float() + row
    assert torch.equal(out[:12].isnan(), acc.isnan())
    finite = ~acc.isnan()
    assert torch.equal(out[:12][finite], acc[finite])
    assert out[2].isnan() and out[0].item() == 3.0 and out[7].item() == 2.0 and out[10].item() == 1.0
    assert out[12].item() == 1.0  # the first flagged update
    assert summarize_block(rows[[0, 2]], keep)[12].item() == -1.0


def replay_with_data(device: torch.device, size: int = 200) -> ReplayBuffer:
    replay = ReplayBuffer(1000, DIMS.obs_dim, DIMS.context_dim, DIMS.action_dim, device, seed=5)
    replay.add(batch_on(device, 42, size=size))
    return replay


def check_update_block(device: torch.device) -> GraphedSAC:
    """update_block's indices are in range and its statistics are those of eager updates on the same rows."""
    eager, fast = pair(device)
    replay = replay_with_data(device)
    before = networks(eager)
    vector, indices = fast.update_block(replay, 4)
    assert indices.shape == (4, CONFIG.batch_size)
    assert int(indices.min()) >= 0 and int(indices.max()) < len(replay)
    assert len(set(indices.reshape(-1).tolist())) > CONFIG.batch_size  # not one repeated row
    acc = torch.zeros(len(STAT_FIELDS), device=device)
    for index in indices:
        acc = acc * eager.keep + eager.update(replay.gather(index))
    assert torch.allclose(vector[:-1], acc, rtol=1e-4, atol=1e-5)
    assert vector[-1].item() == -1.0
    assert_close_run(eager, fast, before)
    return fast


def test_update_block_samples_on_device_and_matches_eager_on_cpu():
    check_update_block(CPU)


def test_build_sac_picks_eager_on_cpu_and_when_off():
    assert type(build_sac(DIMS.policy_in, DIMS.action_dim, CONFIG, CPU, 0)) is SAC
    for mode in ("off", "graph"):
        config = dataclasses.replace(CONFIG, fast_path=mode)
        assert type(build_sac(DIMS.policy_in, DIMS.action_dim, config, CPU, 0)) is SAC


# -- on the GPU: the captured graphs ---------------------------------------------------------------
@pytest.mark.gpu
@gpu
def test_graphed_update_matches_eager_on_cuda():
    cuda = torch.device("cuda")
    eager, fast = pair(cuda)
    assert fast.use_graph
    before = networks(eager)
    a, b = eager.update(batch_on(cuda, 0)), fast.update(batch_on(cuda, 0))
    assert fast.captures == 1
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-5), (a, b)
    assert_close_run(eager, fast, before)
    for step in range(1, 10):  # several updates stay close
        a, b = eager.update(batch_on(cuda, step)), fast.update(batch_on(cuda, step))
        assert torch.allclose(b, a, rtol=1e-3, atol=1e-4), (step, a, b)
    assert_close_run(eager, fast, before)
    assert fast.captures == 1


@pytest.mark.gpu
@gpu
def test_learning_rate_change_takes_effect_without_recapture_on_cuda():
    cuda = torch.device("cuda")
    eager, fast = pair(cuda)
    eager.update(batch_on(cuda, 0))
    fast.update(batch_on(cuda, 0))
    for step, (lr, scale) in enumerate(((2e-3, 0.3), (0.0, 2.0)), start=1):
        for sac in (eager, fast):
            sac.set_learning_rate(lr)
            sac.reward_scale.fill_(scale)
        before, actor_before = networks(eager), flat(fast.actor.state_dict())
        a, b = eager.update(batch_on(cuda, step)), fast.update(batch_on(cuda, step))
        assert torch.allclose(b, a, rtol=1e-4, atol=1e-5)
        moved = (flat(fast.actor.state_dict()) - actor_before).abs().max().item()
        if lr == 0.0:  # a zero learning rate freezes the online networks inside the graph
            assert moved == 0.0
        else:  # Adam moves some weight by about lr, far beyond what the old lr 1e-4 allows
            assert moved > 1e-3
            assert_close_run(eager, fast, before, atol=lr / 10)
    assert fast.captures == 1


@pytest.mark.gpu
@gpu
def test_update_block_in_one_graph_matches_eager_on_cuda():
    fast = check_update_block(torch.device("cuda"))
    assert fast.captures == 1


@pytest.mark.gpu
@gpu
def test_restore_keeps_graph_valid_on_cuda():
    cuda = torch.device("cuda")
    _, fast = pair(cuda)
    snapshot = fast.device_snapshot()
    first = fast.update(batch_on(cuda, 3))
    fast.restore_device_snapshot(snapshot)
    again = fast.update(batch_on(cuda, 3))  # same state, same noise → same update through the same graph
    assert torch.allclose(first, again, rtol=1e-6, atol=1e-7)
    assert fast.updates_done == 1
    assert fast.captures == 1


@pytest.mark.gpu
@pytest.mark.slow
@gpu
def test_compiled_maths_in_the_graph_match_eager_on_cuda():
    cuda = torch.device("cuda")
    eager, fast = pair(cuda, compile_math=True)
    before = networks(eager)
    for step in range(5):
        a, b = eager.update(batch_on(cuda, step)), fast.update(batch_on(cuda, step))
        assert torch.allclose(b, a, rtol=1e-4, atol=1e-5), (step, a, b)
    assert fast._math is not MATH  # compiled, no fallback
    assert_close_run(eager, fast, before)


@pytest.mark.gpu
@gpu
def test_failing_compile_falls_back_to_plain_maths_on_cuda():
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    cuda = torch.device("cuda")
    eager, fast = pair(cuda)
    fast._math = dict(MATH, policy_head=broken)
    before = networks(eager)
    a, b = eager.update(batch_on(cuda, 0)), fast.update(batch_on(cuda, 0))
    assert fast._math is MATH and fast.captures == 1
    assert torch.allclose(b, a, rtol=1e-4, atol=1e-5)
    assert_close_run(eager, fast, before)


@pytest.mark.gpu
@gpu
def test_learner_on_cuda_trains_in_the_graph_and_its_guard_finds_a_poisoned_block():
    from learner.config import ReplayConfig
    from learner.learner import Learner

    config = dataclasses.replace(CONFIG, fast_path="graph", block_updates=5)
    learner = Learner(DIMS, config, ReplayConfig(capacity=1000), torch.device("cuda"), seed=3)
    assert isinstance(learner.sac, GraphedSAC)
    learner.replay.add(batch_on(torch.device("cuda"), 1, size=200))
    clean = learner.update_block(5)
    assert clean.first_bad_index is None and learner.sac.updates_done == 5 and learner.sac.captures == 1
    assert clean.stats.nonfinite_loss == clean.stats.nonfinite_grad == clean.stats.nonfinite_q == 0
    snapshot = learner.snapshot()
    learner.replay.storage["reward"].fill_(float("nan"))  # every batch from now on is poisoned
    poisoned = learner.update_block(5)
    assert poisoned.first_bad_index == 0
    assert poisoned.stats.nonfinite_loss == 1  # the first bad update counted once, not five times
    learner.restore(snapshot)
    assert learner.parameters_finite() and learner.sac.updates_done == 5 and learner.sac.captures == 1
