"""The SAC update: scaling in one place, pre-clip norms, clipping, temperature, stats."""

import math

import pytest
import torch

from learner.sac import SAC
from learner.temperature import LearnedTemperature
from tests.learner.helpers import DIMS, random_batch, with_config


def make_sac(**changes) -> SAC:
    return SAC(DIMS.policy_in, DIMS.action_dim, with_config(**changes), torch.device("cpu"), seed=7)


def params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_reward_scale_is_applied_exactly_once():
    # Raw rewards r with scale 0.01 must train exactly like rewards 0.01*r with scale 1.
    scaled = make_sac(reward_scale=0.01)
    prescaled = make_sac(reward_scale=1.0)
    raw = random_batch(seed=1, reward_scale=100.0)
    pre = dict(raw, reward=raw["reward"] * 0.01)
    for _ in range(3):
        a, b = scaled.update(raw), prescaled.update(pre)
    assert torch.allclose(params(scaled.critic), params(prescaled.critic), atol=1e-6)
    assert torch.allclose(a, b, atol=1e-5)
    # and the scale really matters: unscaled rewards give different critics
    unscaled = make_sac(reward_scale=1.0)
    for _ in range(3):
        unscaled.update(raw)
    assert not torch.allclose(params(unscaled.critic), params(scaled.critic), atol=1e-4)


def test_reported_grad_norms_are_pre_clip_global_norms():
    sac = make_sac(max_grad_norm=1e9)  # no clipping: .grad keeps the measured gradient
    stats = dict(zip(("policy_grad_norm", "q_grad_norm"), sac.update(random_batch(seed=2))[:2].tolist(), strict=True))
    critic_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in sac.critic.parameters()))
    actor_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in sac.actor.parameters()))
    assert stats["q_grad_norm"] == pytest.approx(critic_norm, rel=1e-5)
    assert stats["policy_grad_norm"] == pytest.approx(actor_norm, rel=1e-5)


def test_clipping_limits_the_applied_gradient_and_is_flagged():
    sac = make_sac(max_grad_norm=1e-3)
    vector = sac.update(random_batch(seed=3))
    q_norm, policy_clipped, q_clipped = vector[1].item(), vector[7].item(), vector[8].item()
    assert q_norm > 1e-3 and policy_clipped == 1.0 and q_clipped == 1.0
    applied = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in sac.critic.parameters()))
    assert applied == pytest.approx(1e-3, rel=1e-3)


def test_learned_alpha_lives_on_device_and_moves():
    sac = make_sac(initial_alpha=1.0, lr=1e-2)
    temperature = sac.temperature
    assert isinstance(temperature, LearnedTemperature)
    assert temperature.optimizer.param_groups[0]["params"][0] is temperature.log_alpha
    assert temperature.log_alpha.device == sac.device
    for step in range(20):
        sac.update(random_batch(seed=step))
    alpha = float(temperature.alpha())
    # a fresh tanh-Gaussian has entropy well above -action_dim: alpha must fall (lr 1e-2 × 20 steps)
    assert 0.7 < alpha < 0.95


def test_fixed_alpha_does_not_move():
    sac = make_sac(temperature="fixed", initial_alpha=0.3)
    for step in range(5):
        sac.update(random_batch(seed=step))
    assert float(sac.temperature.alpha()) == pytest.approx(0.3)


def test_polyak_targets_follow_online_critics_by_tau():
    sac = make_sac(tau=0.5)
    before_target = params(sac.critic_target).clone()
    sac.update(random_batch(seed=4))
    expected = 0.5 * before_target + 0.5 * params(sac.critic)
    assert torch.allclose(params(sac.critic_target), expected, atol=1e-6)


def test_stats_vector_reports_q_statistics_and_finite_flags():
    sac = make_sac()
    batch = random_batch(seed=5)
    with torch.no_grad():
        x = torch.cat([batch["obs"], batch["context"]], -1)
        q1, _ = sac.critic(x, batch["action"])
    vector = sac.update(batch)
    assert vector[2].item() == pytest.approx(q1.mean().item(), abs=1e-6)
    assert vector[3].item() == pytest.approx(q1.std().item(), abs=1e-6)
    assert vector[9:].tolist() == [0.0, 0.0, 0.0]


def test_nan_gradient_is_flagged():
    sac = make_sac()
    sac.grad_hook = lambda n, critic: next(critic.parameters()).grad.fill_(float("nan"))
    vector = sac.update(random_batch(seed=6))
    assert vector[10].item() == 1.0  # nonfinite_grad
