"""Fused Adam over a shared learning-rate tensor, its state made up front, saved as copies and loaded in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learner.optim import adam_state, load_adam_state, make_adam


def one_param(values: list[float], grad: list[float], lr: float = 0.1) -> tuple[nn.Parameter, torch.optim.Adam]:
    p = nn.Parameter(torch.tensor(values))
    optimizer = make_adam([p], torch.tensor(lr))
    p.grad = torch.tensor(grad)
    return p, optimizer


def test_state_exists_before_the_first_step_and_the_lr_tensor_is_shared():
    lr = torch.tensor(1e-3)
    params = [nn.Parameter(torch.ones(2, 3)), nn.Parameter(torch.ones(3))]
    optimizer = make_adam(params, lr)
    assert optimizer.param_groups[0]["lr"] is lr
    for p in params:
        state = optimizer.state[p]
        assert float(state["step"]) == 0.0 and state["exp_avg"].shape == p.shape
        assert state["exp_avg"].abs().sum() == 0 and state["exp_avg_sq"].abs().sum() == 0


def test_two_steps_hand_computed_with_the_lr_changed_in_between():
    """Adam's bias-corrected first step moves each weight by lr (g / |g|); the second by the new lr (same g)."""
    p, optimizer = one_param([1.0, -2.0], [0.5, -4.0], lr=0.1)
    optimizer.step()
    assert p.tolist() == pytest.approx([0.9, -1.9], abs=1e-6)
    state = optimizer.state[p]
    assert state["exp_avg"].tolist() == pytest.approx([0.05, -0.4])  # (1 - 0.9) g
    assert state["exp_avg_sq"].tolist() == pytest.approx([0.00025, 0.016])  # (1 - 0.999) g^2
    optimizer.param_groups[0]["lr"].fill_(0.01)  # in place: what the NaN remedies do
    optimizer.step()
    assert p.tolist() == pytest.approx([0.89, -1.89], abs=1e-6) and float(state["step"]) == 2.0


def test_adam_state_is_a_copy_by_parameter_index():
    p, optimizer = one_param([1.0, -2.0], [0.5, -4.0])
    optimizer.step()
    saved = adam_state(optimizer)
    assert list(saved["state"]) == [0]
    saved["state"][0]["exp_avg"].fill_(7.0)
    assert optimizer.state[p]["exp_avg"].tolist() == pytest.approx([0.05, -0.4])


def test_load_adam_state_copies_in_place_and_zeroes_a_parameter_it_does_not_hold():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    optimizer = make_adam([a, b], torch.tensor(0.1))
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    optimizer.step()
    tensors = {name: optimizer.state[a][name] for name in ("step", "exp_avg", "exp_avg_sq")}
    saved = {"state": {"0": {"step": torch.tensor(5.0), "exp_avg": torch.tensor([1.0, 2.0]),
                             "exp_avg_sq": torch.tensor([3.0, 4.0])}}}  # fmt: skip
    load_adam_state(optimizer, saved)  # string keys, as a JSON round trip gives them; index 1 missing
    assert all(optimizer.state[a][name] is tensor for name, tensor in tensors.items())  # the same storage
    assert float(optimizer.state[a]["step"]) == 5.0 and optimizer.state[a]["exp_avg"].tolist() == [1.0, 2.0]
    assert float(optimizer.state[b]["step"]) == 0.0 and optimizer.state[b]["exp_avg_sq"].abs().sum() == 0
