"""Adam of K runs with per-run learning-rate tensors and per-run clipping, its state made up front, a run's state
saved as copies in torch's layout and loaded in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learner.optim import AdamTensors, adam_state, adam_step, clipped_adam_step, load_adam_state


def stacked(values: list[list[float]]) -> AdamTensors:
    """One parameter of ``len(values)`` runs."""
    return AdamTensors.zeros_for([nn.Parameter(torch.tensor(values))])


def step(t: AdamTensors, grads: list[torch.Tensor], lr: list[float], max_norm: float = 100.0) -> torch.Tensor:
    return clipped_adam_step(t.params, grads, t.exp_avgs, t.exp_avg_sqs, t.step, torch.tensor(lr), max_norm)


def test_state_exists_before_the_first_step_per_run():
    params = [nn.Parameter(torch.ones(3, 2, 4)), nn.Parameter(torch.ones(3, 2))]
    t = AdamTensors.zeros_for(params)
    assert t.step.tolist() == [0.0, 0.0, 0.0] and [m.shape for m in t.exp_avgs] == [(3, 2, 4), (3, 2)]
    assert all(m.abs().sum() == 0 for m in t.exp_avgs + t.exp_avg_sqs)


def test_two_steps_hand_computed_with_the_lr_changed_in_between():
    """Adam's bias-corrected first step moves each weight by lr (g / |g|); the second by the new lr (same g)."""
    t = stacked([[1.0, -2.0]])
    lr = torch.tensor([0.1])
    adam_step(t.params, [torch.tensor([[0.5, -4.0]])], t.exp_avgs, t.exp_avg_sqs, t.step, lr)
    assert t.params[0].tolist() == [pytest.approx([0.9, -1.9], abs=1e-6)]
    assert t.exp_avgs[0].tolist() == [pytest.approx([0.05, -0.4])]  # (1 - 0.9) g
    assert t.exp_avg_sqs[0].tolist() == [pytest.approx([0.00025, 0.016])]  # (1 - 0.999) g^2
    lr.fill_(0.01)  # in place: what the NaN remedies do
    adam_step(t.params, [torch.tensor([[0.5, -4.0]])], t.exp_avgs, t.exp_avg_sqs, t.step, lr)
    assert t.params[0].tolist() == [pytest.approx([0.89, -1.89], abs=1e-6)] and t.step.tolist() == [2.0]


def test_each_run_is_clipped_to_its_own_norm_and_steps_at_its_own_rate():
    """Run 0: gradient (3, 4), norm 5, clipped to 2.5 (scale 0.5), lr 0.1; run 1: (0.3, 0.4), norm 0.5, not clipped,
    lr 0.01. Adam's first step moves each weight by its run's lr * sign(g); the clip shows in the moments only."""
    t = stacked([[1.0, 1.0], [1.0, 1.0]])
    grads = [torch.tensor([[3.0, 4.0], [0.3, 0.4]])]
    norm = step(t, grads, [0.1, 0.01], max_norm=2.5)
    assert norm.tolist() == pytest.approx([5.0, 0.5])
    assert grads[0].tolist() == [pytest.approx([1.5, 2.0], rel=1e-5), pytest.approx([0.3, 0.4], rel=1e-5)]
    assert t.params[0].tolist() == [pytest.approx([0.9, 0.9], abs=1e-6), pytest.approx([0.99, 0.99], abs=1e-6)]
    assert t.exp_avgs[0][0].tolist() == pytest.approx([0.15, 0.2], rel=1e-5)  # (1 - 0.9) * clipped g


def test_a_nan_gradient_gives_a_nan_norm_and_nan_weights_in_its_own_run_only():
    t = stacked([[1.0, -2.0], [1.0, -2.0]])
    norm = step(t, [torch.tensor([[float("nan"), 1.0], [1.0, 1.0]])], [0.1, 0.1], max_norm=5.0)
    assert torch.isnan(norm[0]) and torch.isnan(t.params[0][0]).all()
    assert float(norm[1]) == pytest.approx(2**0.5) and t.params[0][1].tolist() == pytest.approx([0.9, -2.1])


def test_the_stacked_step_equals_torch_clipping_and_adam_per_run_over_several_steps():
    torch.manual_seed(0)
    shapes, rates = [(8, 5), (8,), (2, 8)], [0.01, 0.003]
    ours = [nn.Parameter(torch.randn(2, *s)) for s in shapes]
    theirs = [[nn.Parameter(p[k].detach().clone()) for p in ours] for k in range(2)]
    t = AdamTensors.zeros_for(ours)
    references = [torch.optim.Adam(params, lr=lr) for params, lr in zip(theirs, rates, strict=True)]
    for n in range(4):
        grads = [torch.randn(2, *s) * (3.0 if n % 2 else 0.1) for s in shapes]  # clipped on odd steps only
        norms = step(t, [g.clone() for g in grads], rates, max_norm=1.0)
        for k, (params, reference) in enumerate(zip(theirs, references, strict=True)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g[k].clone()
            assert float(norms[k]) == pytest.approx(float(nn.utils.clip_grad_norm_(params, 1.0)), rel=1e-6)
            reference.step()
    for k in range(2):
        for p, q in zip(ours, theirs[k], strict=True):
            torch.testing.assert_close(p[k].detach(), q.detach(), rtol=1e-6, atol=1e-6)


def test_a_runs_state_is_a_copy_in_torchs_layout():
    t = stacked([[1.0, -2.0], [3.0, 4.0]])
    step(t, [torch.tensor([[0.5, -4.0], [1.0, 1.0]])], [0.1, 0.1])
    saved = adam_state(t.run(0))
    assert list(saved["state"]) == [0] and float(saved["state"][0]["step"]) == 1.0
    assert saved["state"][0]["exp_avg"].tolist() == pytest.approx([0.05, -0.4])
    saved["state"][0]["exp_avg"].fill_(7.0)
    assert t.exp_avgs[0][0].tolist() == pytest.approx([0.05, -0.4])


def test_load_adam_state_copies_in_place_into_one_run_and_zeroes_a_parameter_it_does_not_hold():
    t = AdamTensors.zeros_for([nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 3))])
    step(t, [torch.ones(2, 2), torch.ones(2, 3)], [0.1, 0.1])
    storage = [m.data_ptr() for m in t.exp_avgs]
    saved = {"state": {"0": {"step": torch.tensor(5.0), "exp_avg": torch.tensor([1.0, 2.0]),
                             "exp_avg_sq": torch.tensor([3.0, 4.0])}}}  # fmt: skip
    load_adam_state(t.run(1), saved)  # string keys, as a JSON round trip gives them; index 1 missing
    assert [m.data_ptr() for m in t.exp_avgs] == storage  # the same storage
    assert t.step.tolist() == [1.0, 5.0] and t.exp_avgs[0][1].tolist() == [1.0, 2.0]
    assert t.exp_avg_sqs[1][1].abs().sum() == 0 and t.exp_avg_sqs[1][0].abs().sum() > 0  # run 0 untouched
