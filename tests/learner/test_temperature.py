"""Entropy temperatures of K runs: fixed stays put; learned moves each run's log alpha toward the target entropy
at the run's own lr."""

from __future__ import annotations

import math

import pytest
import torch

from learner.losses import temperature_loss
from learner.temperature import Temperature, make_temperature

LOG_PROB = torch.tensor([[-1.0, 0.5]])  # one run; entropy estimate -mean(log pi) = 0.25


def learned(alpha: float, target_entropy: float = -1.0) -> Temperature:
    return Temperature(True, torch.tensor([alpha]), target_entropy)


def test_fixed_temperature_never_moves_and_round_trips():
    fixed = Temperature(False, torch.tensor([0.3]), -1.0)
    fixed.update(LOG_PROB, torch.tensor([0.1]))
    assert float(fixed.alpha()) == pytest.approx(0.3) and fixed.adam is None
    other = Temperature(False, torch.tensor([1.0]), -1.0)
    other.load_state_dict(fixed.state_dict())
    assert float(other.alpha()) == pytest.approx(0.3)


def test_learned_alpha_falls_by_one_adam_step_when_entropy_is_above_target():
    """d loss / d log alpha = -(mean log pi + H_target) = -(-0.25 - 1) = 1.25 > 0; Adam's first step is -lr."""
    temperature = learned(0.5)
    assert float(temperature.alpha()) == pytest.approx(0.5)
    temperature.update(LOG_PROB, torch.tensor([0.1]))
    assert temperature.value.item() == pytest.approx(math.log(0.5) - 0.1, abs=1e-6)
    assert float(temperature.alpha()) == pytest.approx(0.5 * math.exp(-0.1), rel=1e-6)


def test_each_run_moves_by_its_own_gradient_sign_and_learning_rate():
    """Run 0 has entropy above target (falls by its lr 0.1), run 1 below (rises by its lr 0.01)."""
    temperature = Temperature(True, torch.tensor([0.5, 2.0]), -1.0)
    temperature.update(torch.tensor([[-1.0, 0.5], [2.0, 3.0]]), torch.tensor([0.1, 0.01]))
    assert temperature.alpha().tolist() == pytest.approx([0.5 * math.exp(-0.1), 2.0 * math.exp(0.01)], rel=1e-6)
    assert temperature.adam.step.tolist() == [1.0, 1.0]


def test_learned_state_round_trip_continues_identically():
    lr = torch.tensor([0.05])
    first = learned(1.0)
    for _ in range(3):
        first.update(LOG_PROB, lr)
    second = learned(2.0)
    second.load_state_dict(first.state_dict())
    assert second.value.item() == first.value.item()
    first.update(LOG_PROB, lr)
    second.update(LOG_PROB, lr)
    assert second.value.item() == first.value.item() and float(second.adam.step) == 4


def test_a_run_of_a_stack_saves_and_loads_its_own_slice():
    pair = Temperature(True, torch.tensor([0.5, 2.0]), -1.0)
    pair.update(torch.tensor([[-1.0, 0.5], [2.0, 3.0]]), torch.tensor([0.1, 0.01]))
    single = learned(1.0)
    single.load_state_dict(pair.state_dict(1))
    assert single.value.item() == pair.value[1].item() and float(single.adam.step) == 1.0
    pair.load_state_dict(learned(0.25).state_dict(), 0)
    assert pair.alpha().tolist() == pytest.approx([0.25, 2.0 * math.exp(0.01)], rel=1e-6)


def test_make_temperature_picks_the_kind_and_the_target_entropy():
    fixed = make_temperature("fixed", torch.tensor([0.2]), action_dim=4, target_entropy_scale=0.5)
    assert not fixed.learned and float(fixed.alpha()) == pytest.approx(0.2)
    temperature = make_temperature("learned", torch.tensor([0.2]), action_dim=4, target_entropy_scale=0.5)
    assert temperature.learned and temperature.target_entropy == -2.0
    assert temperature.tensors() == [temperature.value, *temperature.adam.tensors()]


def test_the_learned_step_equals_autograd_and_torch_adam_over_several_steps():
    """``temperature_step`` (torch.func.grad + foreach Adam, what the graph compiles) against the loss's
    backward and ``torch.optim.Adam``: the same log alpha after every step."""
    temperature = learned(0.5)
    reference = torch.tensor(math.log(0.5), requires_grad=True)
    adam = torch.optim.Adam([reference], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        log_prob = torch.randn(64, generator=generator) - 0.5
        temperature.update(log_prob.unsqueeze(0), torch.tensor([3e-3]))
        adam.zero_grad()
        temperature_loss(reference, log_prob, -1.0).sum().backward()
        adam.step()
        assert temperature.value.item() == pytest.approx(reference.item(), abs=1e-6)  # a float32 ulp or two
    assert temperature.value.item() != pytest.approx(math.log(0.5), abs=1e-3)  # it moved
