"""SAC target and losses against hand computations on a 2-sample batch (twin critics stacked: ``[2, B]``)."""

import math

import pytest
import torch

from learner.losses import actor_loss, critic_loss, polyak_update, soft_q_target, temperature_loss

# Batch: raw rewards [1, -2], reward_scale 0.5, gamma 0.9, alpha 0.2.
# Sample 0 is a truncation (not terminal: bootstraps), sample 1 is terminal.
REWARD = torch.tensor([1.0, -2.0])
TERMINATED = torch.tensor([0.0, 1.0])
NEXT_Q = torch.tensor([[3.0, 4.0], [2.0, 5.0]])  # Q1', Q2'

NEXT_LOG_PROB = torch.tensor([-1.0, 0.5])
ALPHA = torch.tensor(0.2)


def test_soft_target_hand_computed():
    target = soft_q_target(REWARD * 0.5, TERMINATED, 0.9, NEXT_Q, NEXT_LOG_PROB, ALPHA)
    # 0.5 + 0.9 * (min(3, 2) - 0.2 * -1) = 0.5 + 0.9 * 2.2 = 2.48 ;  -1.0 + 0 (terminal)
    assert target.tolist() == pytest.approx([2.48, -1.0], abs=1e-6)


def test_truncation_bootstraps_termination_does_not():
    both_open = soft_q_target(REWARD, torch.zeros(2), 0.9, NEXT_Q, NEXT_LOG_PROB, ALPHA)
    both_terminal = soft_q_target(REWARD, torch.ones(2), 0.9, NEXT_Q, NEXT_LOG_PROB, ALPHA)
    assert both_terminal.tolist() == pytest.approx(REWARD.tolist())
    assert both_open[1].item() == pytest.approx(-2.0 + 0.9 * (4.0 - 0.2 * 0.5))


def test_critic_loss_hand_computed():
    target = torch.tensor([2.48, -1.0])
    q = torch.tensor([[2.0, 0.0], [3.0, -1.0]])
    # q1: (0.48^2 + 1^2)/2 = 0.6152 ; q2: (0.52^2 + 0)/2 = 0.1352
    assert critic_loss(q, target).item() == pytest.approx(0.7504, abs=1e-6)


def test_actor_loss_hand_computed():
    q = torch.tensor([[2.0, 0.0], [3.0, -1.0]])
    # (0.2*-1 - 2 + 0.2*0.5 + 1) / 2 = (-2.2 + 1.1) / 2
    assert actor_loss(ALPHA, NEXT_LOG_PROB, q).item() == pytest.approx(-0.55, abs=1e-6)


def test_temperature_loss_hand_computed_and_direction():
    log_alpha = torch.tensor(math.log(0.2), requires_grad=True)
    loss = temperature_loss(log_alpha, NEXT_LOG_PROB, target_entropy=-1.0)
    # -(log 0.2 * mean([-2, -0.5])) = -(−1.609438 * −1.25)
    assert loss.item() == pytest.approx(-2.0117974, abs=1e-6)
    loss.backward()
    # entropy (−log π ≈ 0.25) above target (−1): gradient descent lowers alpha
    assert log_alpha.grad.item() == pytest.approx(1.25)


def test_polyak_update():
    target = [torch.tensor([0.0, 10.0]), torch.tensor([[1.0]])]
    source = [torch.tensor([1.0, 0.0]), torch.tensor([[3.0]])]
    polyak_update(target, source, tau=0.005)
    assert target[0].tolist() == pytest.approx([0.005, 9.95])
    assert target[1].item() == pytest.approx(1.01)
    assert source[0].tolist() == [1.0, 0.0]
