"""The one SAC update: scaling in one place, pre-clip norms, clipping, temperature, targets, statistics by name,
blocks sampled on the device, snapshots, and state round trips."""

from __future__ import annotations

import math

import pytest
import torch

from learner.replay import ReplayBuffer, transition_rows
from learner.sac import SAC
from learner.stack import MATH, copies_of, low_precision_copies, summarize_block
from learner.types import STAT_FIELDS, UpdateStats, stat_index
from tests.learner.helpers import DIMS, random_batch, random_rows, with_config

CPU = torch.device("cpu")


def make_sac(device: torch.device = CPU, **changes) -> SAC:
    return SAC(DIMS.policy_in, DIMS.action_dim, with_config(**changes), device, seed=7)


def params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def named(vector: torch.Tensor) -> UpdateStats:
    return UpdateStats.from_vector(vector.tolist(), 1)


def test_reward_scale_is_applied_exactly_once():
    # Raw rewards r with scale 0.01 must train exactly like rewards 0.01*r with scale 1.
    scaled, prescaled = make_sac(reward_scale=0.01), make_sac(reward_scale=1.0)
    batch = random_batch(seed=1, reward_scale=100.0)
    raw, pre = transition_rows(batch), transition_rows(dict(batch, reward=batch["reward"] * 0.01))
    for _ in range(3):
        a, b = scaled.update(raw), prescaled.update(pre)
    assert torch.allclose(params(scaled.critic), params(prescaled.critic), atol=1e-6)
    assert torch.allclose(a, b, atol=1e-5)
    unscaled = make_sac(reward_scale=1.0)  # and the scale really matters
    for _ in range(3):
        unscaled.update(raw)
    assert not torch.allclose(params(unscaled.critic), params(scaled.critic), atol=1e-4)


def test_reported_grad_norms_are_pre_clip_global_norms():
    sac = make_sac(max_grad_norm=1e9)  # no clipping: .grad keeps the measured gradient
    stats = named(sac.update(random_rows(seed=2)))
    grads = sac.gradients()
    critic_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads["critic"]))
    actor_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads["actor"]))
    assert stats.q_grad_norm == pytest.approx(critic_norm, rel=1e-5)
    assert stats.policy_grad_norm == pytest.approx(actor_norm, rel=1e-5)


def test_the_aligned_step_reports_the_critic_modules_q():
    """The step pads the first layers' inputs and weights with zero columns (``learner.stack.ALIGNED_WIDTH``): the
    Q it reports is the first critic module's on the batch, unpadded (5 + 1 features), to float32 rounding."""
    sac = make_sac()
    batch = random_batch(seed=5)
    state = torch.cat([batch["obs"], batch["context"]], dim=-1)
    assert sac.stack.input_widths == (8, 8) and state.shape[1] + DIMS.action_dim == 6
    with torch.no_grad():
        q = sac.critic(state, batch["action"])[0]
    stats = named(sac.update(transition_rows(batch)))
    assert stats.q_mean == pytest.approx(float(q.mean()), rel=1e-5, abs=1e-7)
    assert stats.q_std == pytest.approx(float(q.std()), rel=1e-5, abs=1e-7)


def test_clipping_limits_the_applied_gradient_and_is_flagged():
    sac = make_sac(max_grad_norm=1e-3)
    stats = named(sac.update(random_rows(seed=3)))
    assert stats.q_grad_norm > 1e-3 and stats.policy_clipped == 1 and stats.q_clipped == 1
    applied = math.sqrt(sum(float(g.pow(2).sum()) for g in sac.gradients()["critic"]))
    assert applied == pytest.approx(1e-3, rel=1e-3)


def test_learned_alpha_moves_at_the_learning_rate():
    sac = make_sac(initial_alpha=1.0, lr=1e-2)
    assert sac.stack.temperature.learned and float(sac.alpha()) == 1.0
    for step in range(20):
        sac.update(random_rows(seed=step))
    # a fresh tanh-Gaussian has entropy well above -action_dim: alpha must fall (lr 1e-2 × 20 steps)
    assert 0.7 < float(sac.alpha()) < 0.95
    assert float(sac.stack.temperature.adam.step[0]) == 20.0


def test_fixed_alpha_does_not_move():
    sac = make_sac(temperature="fixed", initial_alpha=0.3)
    for step in range(5):
        sac.update(random_rows(seed=step))
    assert float(sac.alpha()) == pytest.approx(0.3)


def test_polyak_targets_follow_online_critics_by_tau():
    sac = make_sac(tau=0.5)
    before_target = params(sac.critic_target).clone()
    sac.update(random_rows(seed=4))
    assert torch.allclose(params(sac.critic_target), 0.5 * before_target + 0.5 * params(sac.critic), atol=1e-6)


def test_statistics_report_the_first_critics_q_and_finite_flags():
    sac = make_sac()
    batch = random_batch(seed=5)
    with torch.no_grad():
        q1 = sac.critic(torch.cat([batch["obs"], batch["context"]], -1), batch["action"])[0]
    stats = named(sac.update(transition_rows(batch)))
    assert stats.q_mean == pytest.approx(q1.mean().item(), abs=1e-6)
    assert stats.q_std == pytest.approx(q1.std().item(), abs=1e-6)
    assert stats.finite and (stats.nonfinite_loss, stats.nonfinite_grad, stats.nonfinite_q) == (0, 0, 0)


def test_nan_gradient_is_flagged_and_the_guard_off_leaves_flags_zero():
    hook = lambda n, grads: grads[0].fill_(float("nan"))  # noqa: E731
    guarded, unguarded = make_sac(), SAC(DIMS.policy_in, DIMS.action_dim, with_config(), CPU, seed=7, guard=False)
    guarded.grad_hook = unguarded.grad_hook = hook
    assert named(guarded.update(random_rows(seed=6))).nonfinite_grad == 1
    assert not named(unguarded.update(random_rows(seed=6))).nonfinite_grad


def test_learning_rate_and_reward_scale_are_device_tensors():
    sac, other = make_sac(), make_sac()
    sac.set_rates(0.5, 3e-3)
    assert sac.rates_in_force == (0.5, 3e-3)  # as given, not rounded to float32
    assert float(sac.lr) == pytest.approx(3e-3) and float(sac.reward_scale) == 0.5
    before = params(sac.actor).clone()
    sac.update(random_rows(seed=1))
    other.update(random_rows(seed=1))  # lr 1e-3: Adam's first step moves each weight by about lr
    assert (params(sac.actor) - before).abs().max() > 2e-3 > (params(other.actor) - before).abs().max()


def test_summarize_block_sums_counts_keeps_last_gauges_and_the_first_flags():
    keep = torch.tensor([name in ("policy_clipped", "q_clipped") or name.startswith("nonfinite") for name in STAT_FIELDS])
    rows = torch.tensor([[1.0] * 12, [2.0] * 12, [3.0] * 12]) * ~keep  # gauges 1, 2, 3; no counts
    rows[:, stat_index("policy_clipped")] = torch.tensor([1.0, 0.0, 1.0])
    rows[1, stat_index("nonfinite_grad")] = 1.0  # on the second update
    rows[0, stat_index("q_mean")] = float("inf")  # a non-finite gauge early in the block stays visible
    out = summarize_block(rows, keep)
    stats = UpdateStats.from_vector(out[:-1].tolist(), 3)
    assert math.isnan(stats.q_mean) and stats.policy_grad_norm == 3.0
    assert (stats.policy_clipped, stats.nonfinite_grad, stats.nonfinite_loss) == (2, 1, 0)
    assert out[-1].item() == 1.0  # the first flagged update
    assert summarize_block(rows[[0, 2]], keep)[-1].item() == -1.0


def replay_with_data(device: torch.device, size: int = 200) -> ReplayBuffer:
    replay = ReplayBuffer(1000, DIMS.obs_dim, DIMS.context_dim, DIMS.action_dim, device, seed=5)
    replay.add({k: v.to(device) for k, v in random_batch(size=size, seed=42).items()})
    return replay


def test_a_block_samples_on_the_device_and_equals_its_updates_on_the_same_rows():
    sac, again = make_sac(), make_sac()
    replay = replay_with_data(CPU)
    vector, indices = sac.update_block(replay, 4)
    assert indices.shape == (4, 8) and int(indices.min()) >= 0 and int(indices.max()) < len(replay)
    assert len(set(indices.reshape(-1).tolist())) > 8  # not one repeated row
    rows = torch.stack([again.update(replay.gather(index)) for index in indices])
    assert torch.equal(vector, summarize_block(rows, again.stack.keep))
    assert torch.equal(params(sac.critic), params(again.critic)) and sac.updates_done == again.updates_done == 4


def test_snapshot_restore_reproduces_the_same_update():
    sac = make_sac()
    snapshot = sac.device_snapshot()
    first = sac.update(random_rows(seed=3))
    after = params(sac.critic).clone()
    sac.restore_device_snapshot(snapshot)
    assert sac.updates_done == 0
    assert torch.equal(sac.update(random_rows(seed=3)), first) and torch.equal(params(sac.critic), after)


def test_copies_of_holds_bitwise_copies_in_one_buffer_per_dtype():
    tensors = [torch.randn(3, 2), torch.tensor(float("nan")), torch.arange(4), torch.tensor(-0.0), torch.randn(5)]
    copies = copies_of(tensors)
    assert all(c.dtype == t.dtype and c.shape == t.shape for c, t in zip(copies, tensors, strict=True))
    bits = [(c.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)) for c, t in zip(copies, tensors, strict=True)]
    assert all(torch.equal(c, t) for c, t in bits)  # NaN and -0.0 too
    floats = {c.untyped_storage().data_ptr() for c in copies if c.is_floating_point()}
    assert len(floats) == 1  # one buffer for the four float tensors
    tensors[0].add_(1.0)
    tensors[2].add_(1)
    assert not torch.equal(copies[0], tensors[0]) and copies[2].tolist() == [0, 1, 2, 3]  # copies, not views


def test_a_state_round_trip_continues_identically():
    sac = make_sac()
    for step in range(3):
        sac.update(random_rows(seed=step))
    other = SAC(DIMS.policy_in, DIMS.action_dim, with_config(), CPU, seed=99)
    other.load_state_dict(sac.state_dict())
    assert torch.equal(sac.update(random_rows(seed=9)), other.update(random_rows(seed=9)))
    assert torch.equal(params(sac.critic), params(other.critic)) and other.updates_done == 4


def test_bf16_matmuls_track_the_fp32_update_and_keep_fp32_state():
    exact, bf16 = make_sac(), make_sac(matmul_precision="bf16")
    before = params(exact.critic)
    assert torch.equal(before, params(bf16.critic))  # the same initial networks
    for seed in range(10):
        batch = random_rows(seed=seed)
        a, b = named(exact.update(batch)), named(bf16.update(batch))
        assert b.q_loss == pytest.approx(a.q_loss, rel=0.05) and b.policy_loss == pytest.approx(a.policy_loss, rel=0.05)
    change = params(exact.critic) - before
    drift = (params(bf16.critic) - before) - change
    assert drift.norm() / change.norm() < 0.25  # ten Adam steps (early, nearly sign steps): 15 % measured
    assert {t.dtype for t in bf16.state_tensors()} == {torch.float32}  # weights, targets, moments stay fp32
    assert not torch.equal(params(bf16.critic), params(exact.critic))  # bf16 really ran


def test_bf16_casts_the_weights_once_per_pass_and_the_policy_loss_sees_the_critics_after_their_step():
    """bf16: one cast of the policy, critics and targets before the critic loss, one of the critics after their
    Adam step (SAC's policy loss is taken on the updated critics), and no other cast of a weight."""
    sac = make_sac(matmul_precision="bf16", lr=1e-2)

    def flat(tensors) -> torch.Tensor:
        return torch.cat([t.detach().reshape(-1) for t in tensors])

    def critic() -> torch.Tensor:  # the stack's tensors (first layers aligned), layer by layer, weight then bias
        return flat(sac.stack.critic)

    critic_before = critic().clone()
    seen = []

    def recording(tensors, dtype):
        seen.append(flat(tensors).clone())
        return low_precision_copies(tensors, dtype)

    sac.stack.math = dict(MATH, low_precision_copies=recording)
    sac.update(random_rows(seed=1))
    actor, critics = len(flat(sac.stack.actor)), len(critic_before)
    assert [len(s) for s in seen] == [actor + 2 * critics, critics]
    assert torch.equal(seen[0][actor : actor + critics], critic_before)
    assert torch.equal(seen[1], critic()) and not torch.equal(seen[1], critic_before)


def test_high_precision_is_fp32_off_cuda():
    exact, high = make_sac(), make_sac(matmul_precision="high")
    batch = random_rows(seed=4)
    assert torch.equal(exact.update(batch), high.update(batch))
    assert torch.equal(params(exact.actor), params(high.actor))
