"""Entropy temperature: fixed stays put; learned moves log alpha toward the target entropy with the shared lr."""

from __future__ import annotations

import math

import pytest
import torch

from learner.losses import temperature_loss
from learner.temperature import FixedTemperature, LearnedTemperature, make_temperature

CPU = torch.device("cpu")
LOG_PROB = torch.tensor([-1.0, 0.5])  # entropy estimate -mean(log pi) = 0.25


def test_fixed_temperature_never_moves_and_round_trips():
    fixed = FixedTemperature(0.3, CPU)
    fixed.update(LOG_PROB)
    assert float(fixed.alpha()) == pytest.approx(0.3) and fixed.parameters() == [] and fixed.optimizer is None
    other = FixedTemperature(1.0, CPU)
    other.load_state_dict(fixed.state_dict())
    assert float(other.alpha()) == pytest.approx(0.3)


def test_learned_alpha_falls_by_one_adam_step_when_entropy_is_above_target():
    """d loss / d log alpha = -(mean log pi + H_target) = -(-0.25 - 1) = 1.25 > 0; Adam's first step is -lr."""
    learned = LearnedTemperature(0.5, target_entropy=-1.0, lr=torch.tensor(0.1))
    assert float(learned.alpha()) == pytest.approx(0.5)
    learned.update(LOG_PROB)
    assert learned.log_alpha.item() == pytest.approx(math.log(0.5) - 0.1, abs=1e-6)
    assert float(learned.alpha()) == pytest.approx(0.5 * math.exp(-0.1), rel=1e-6)


def test_learned_alpha_rises_when_entropy_is_below_target():
    learned = LearnedTemperature(0.5, target_entropy=-1.0, lr=torch.tensor(0.1))
    learned.update(torch.tensor([2.0, 3.0]))  # entropy -2.5 < -1
    assert float(learned.alpha()) == pytest.approx(0.5 * math.exp(0.1), rel=1e-6)


def test_learned_state_round_trip_continues_identically():
    first = LearnedTemperature(1.0, -1.0, torch.tensor(0.05))
    for _ in range(3):
        first.update(LOG_PROB)
    second = LearnedTemperature(2.0, -1.0, torch.tensor(0.05))
    second.load_state_dict(first.state_dict())
    assert second.log_alpha.item() == first.log_alpha.item()
    first.update(LOG_PROB)
    second.update(LOG_PROB)
    assert second.log_alpha.item() == first.log_alpha.item()
    assert float(second.optimizer.state[second.log_alpha]["step"]) == 4


def test_make_temperature_picks_the_kind_and_the_target_entropy():
    lr = torch.tensor(1e-3)
    fixed = make_temperature("fixed", 0.2, action_dim=4, target_entropy_scale=0.5, lr=lr)
    assert isinstance(fixed, FixedTemperature) and float(fixed.alpha()) == pytest.approx(0.2)
    learned = make_temperature("learned", 0.2, action_dim=4, target_entropy_scale=0.5, lr=lr)
    assert isinstance(learned, LearnedTemperature) and learned.target_entropy == -2.0
    assert learned.optimizer.param_groups[0]["lr"] is lr and learned.parameters() == [learned.log_alpha]


def test_the_learned_step_equals_autograd_and_torch_adam_over_several_steps():
    """``temperature_step`` (torch.func.grad + functional Adam, what the graph compiles) against the loss's
    backward and ``torch.optim.Adam``: the same log alpha after every step."""
    learned = LearnedTemperature(0.5, target_entropy=-1.0, lr=torch.tensor(3e-3))
    reference = torch.tensor(math.log(0.5), requires_grad=True)
    adam = torch.optim.Adam([reference], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        log_prob = torch.randn(64, generator=generator) - 0.5
        learned.update(log_prob)
        adam.zero_grad()
        temperature_loss(reference, log_prob, -1.0).backward()
        adam.step()
        assert learned.log_alpha.item() == pytest.approx(reference.item(), abs=1e-7)
    assert learned.log_alpha.item() != pytest.approx(math.log(0.5), abs=1e-3)  # it moved
