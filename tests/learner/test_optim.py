"""Fused Adam over a shared learning-rate tensor, its state made up front, saved as copies and loaded in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learner.optim import AdamTensors, adam_state, clipped_adam_step, load_adam_state, make_adam


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


def test_clipped_adam_step_clips_to_the_global_norm_then_takes_adams_first_step_by_hand():
    """Gradients (3, 4) and (0,): global norm 5, clipped to 2.5 (scale 0.5); Adam's first step moves each weight by
    lr * sign(g) wherever g != 0 (bias-corrected m / sqrt(v) = g / |g|), so the clip shows in the moments only."""
    a, b = nn.Parameter(torch.tensor([1.0, 1.0])), nn.Parameter(torch.tensor([2.0]))
    optimizer = make_adam([a, b], torch.tensor(0.1))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.0])
    t = AdamTensors.of(optimizer)
    norm = clipped_adam_step(t.params, [a.grad, b.grad], t.exp_avgs, t.exp_avg_sqs, t.steps, t.lr, max_norm=2.5)
    assert float(norm) == pytest.approx(5.0)
    assert a.grad.tolist() == pytest.approx([1.5, 2.0], rel=1e-5)  # clipped in place, as clip_grad_norm_ does
    assert a.tolist() == pytest.approx([0.9, 0.9], abs=1e-6) and b.tolist() == pytest.approx([2.0])
    assert optimizer.state[a]["exp_avg"].tolist() == pytest.approx([0.15, 0.2], rel=1e-5)  # (1 - 0.9) * clipped g
    assert float(optimizer.state[a]["step"]) == 1.0 and float(optimizer.state[b]["step"]) == 1.0


def test_clipped_adam_step_equals_torch_clipping_and_adam_over_several_steps():
    torch.manual_seed(0)
    shapes = [(8, 5), (8,), (2, 8)]
    ours = [nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    mine, reference = make_adam(ours, torch.tensor(0.01)), torch.optim.Adam(theirs, lr=0.01)
    t = AdamTensors.of(mine)
    for step in range(4):
        grads = [torch.randn(s) * (3.0 if step % 2 else 0.1) for s in shapes]  # clipped on odd steps only
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        norm = clipped_adam_step(t.params, [p.grad for p in ours], t.exp_avgs, t.exp_avg_sqs, t.steps, t.lr, 1.0)
        assert float(norm) == pytest.approx(float(nn.utils.clip_grad_norm_(theirs, 1.0)), rel=1e-6)
        reference.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)


def test_a_nan_gradient_gives_a_nan_norm_and_nan_weights_for_the_guard():
    p, optimizer = one_param([1.0, -2.0], [float("nan"), 1.0])
    t = AdamTensors.of(optimizer)
    norm = clipped_adam_step(t.params, [p.grad], t.exp_avgs, t.exp_avg_sqs, t.steps, t.lr, 5.0)
    assert torch.isnan(norm) and torch.isnan(p).all()
