"""Policy and critic networks: layer stacks, the squashed-Gaussian log-density, clamping, and the stacked twin critic."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from learner.networks import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    Actor,
    TwinCritic,
    bias_relu,
    bias_relu_fused,
    gaussian_parameters,
    hidden_layer,
    mlp,
    policy_head,
    squashed_gaussian_log_prob,
    stacked_linear,
)
from learner.stack import low_precision_copies

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def test_mlp_is_linear_relu_pairs_ending_in_a_linear_layer():
    net = mlp(3, (4, 5), 2)
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [(3, 4), (4, 5), (5, 2)]
    assert sum(p.numel() for p in net.parameters()) == (3 * 4 + 4) + (4 * 5 + 5) + (5 * 2 + 2)


def test_squashed_log_prob_at_the_origin_is_the_standard_normal_density():
    """x = mean = 0, std 1: log N(0; 0, 1) = -log(2 pi) / 2, and tanh' (0) = 1 adds nothing."""
    zero = torch.zeros(1)
    assert squashed_gaussian_log_prob(zero, zero, zero).item() == pytest.approx(-HALF_LOG_2PI, abs=1e-7)


def test_squashed_log_prob_matches_the_naive_formula_and_sums_over_action_dims():
    x, mean, log_std = torch.tensor([0.7, -1.3]), torch.tensor([0.2, -1.0]), torch.tensor([-0.5, 0.3])
    naive = torch.distributions.Normal(mean, log_std.exp()).log_prob(x) - torch.log(1 - torch.tanh(x) ** 2)
    assert squashed_gaussian_log_prob(x, mean, log_std).item() == pytest.approx(naive.sum().item(), abs=1e-5)


def test_squashed_log_prob_stays_finite_where_tanh_saturates():
    """x = 20: 1 - tanh(x)^2 is 0 in float32 (the naive log is -inf); 2 (log 2 - x - softplus(-2x)) = -38.614."""
    x = torch.tensor([20.0])
    assert torch.isinf(torch.log(1 - torch.tanh(x) ** 2)).all()
    expected = -HALF_LOG_2PI - 2 * (math.log(2.0) - 20.0)
    assert squashed_gaussian_log_prob(x, x, torch.zeros(1)).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_parameters_split_the_output_and_clamp_the_log_std():
    mean, log_std = gaussian_parameters(torch.tensor([[1.0, 2.0, -10.0, 10.0], [0.0, 0.0, -1.0, 0.5]]))
    assert mean.tolist() == [[1.0, 2.0], [0.0, 0.0]]
    assert log_std.tolist() == [[LOG_STD_MIN, LOG_STD_MAX], [-1.0, 0.5]] and (LOG_STD_MIN, LOG_STD_MAX) == (-5.0, 2.0)


def test_policy_head_with_zero_noise_acts_on_the_mean():
    out = torch.tensor([[0.5, math.log(0.3)]])
    action, log_prob = policy_head(out, torch.zeros(1, 1))
    assert action.item() == pytest.approx(math.tanh(0.5))
    # N(0.5; 0.5, 0.3) - log(1 - tanh(0.5)^2)
    expected = -math.log(0.3) - HALF_LOG_2PI - math.log(1 - math.tanh(0.5) ** 2)
    assert log_prob.item() == pytest.approx(expected, abs=1e-5)
    shifted, _ = policy_head(out, torch.ones(1, 1))  # one standard deviation up
    assert shifted.item() == pytest.approx(math.tanh(0.8))


def test_actor_samples_are_seeded_in_range_and_deterministic_is_the_squashed_mean():
    torch.manual_seed(0)
    actor = Actor(4, 2, (8,))
    x = torch.linspace(-3, 3, 20).reshape(5, 4)
    a, log_prob = actor.sample(x, torch.Generator().manual_seed(1))
    b, _ = actor.sample(x, torch.Generator().manual_seed(1))
    assert a.shape == (5, 2) and log_prob.shape == (5,) and a.abs().max() < 1.0
    assert torch.equal(a, b)
    assert torch.equal(actor.deterministic(x), torch.tanh(actor(x)[0]))


def test_twin_critic_equals_two_separate_mlps_built_from_its_stacked_layers():
    torch.manual_seed(0)
    critic = TwinCritic(3, 1, (6, 5))
    x, action = torch.randn(4, 3), torch.rand(4, 1)
    assert [tuple(w.shape) for w in critic.weights] == [(2, 6, 4), (2, 5, 6), (2, 1, 5)]
    assert [tuple(p.shape) for p in critic.ordered()] == [(2, 6, 4), (2, 6), (2, 5, 6), (2, 5), (2, 1, 5), (2, 1)]
    q = critic(x, action)
    assert q.shape == (2, 4)
    for network in (0, 1):
        h = torch.cat([x, action], -1)
        for layer, (w, b) in enumerate(zip(critic.weights, critic.biases, strict=True)):
            h = h @ w[network].T + b[network]
            h = torch.relu(h) if layer < 2 else h
        assert torch.allclose(q[network], h.squeeze(-1), atol=1e-6)
    assert not torch.equal(critic.weights[0][0], critic.weights[0][1])  # two independent initialisations


def test_low_precision_copies_are_each_tensors_cast_held_in_one_buffer():
    tensors = [torch.randn(2, 3, 4), torch.randn(2, 3), torch.randn(5)]
    copies = low_precision_copies(tensors, torch.bfloat16)
    for copy, tensor in zip(copies, tensors, strict=True):
        assert copy.dtype == torch.bfloat16 and torch.equal(copy, tensor.to(torch.bfloat16))
    storages = {c.untyped_storage().data_ptr() for c in copies}
    assert len(storages) == 1 and copies[1].storage_offset() == 24 and copies[2].storage_offset() == 30


@pytest.mark.parametrize("feature_major", [False, True])
def test_a_layer_on_low_precision_copies_multiplies_in_bf16_and_hands_float32_gradients(feature_major):
    """The products on the bf16 copies (as autocast runs them); the weight and bias gradients are those products'
    in float32, for the float32 parameters; the input's gradient in its own dtype."""
    torch.manual_seed(0)
    weight, bias = torch.randn(2, 5, 3, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    x = torch.randn(2, 3, 7) if feature_major else torch.randn(2, 7, 3)
    x.requires_grad_(True)
    low = tuple(low_precision_copies([weight, bias], torch.bfloat16))
    out = stacked_linear(x, weight, bias, feature_major=feature_major, low=low)
    lx, lw, lb = (t.float() for t in (x.detach().bfloat16(), *low))  # the bf16 operands' values, multiplied exactly
    want = (lw @ lx + lb.unsqueeze(-1)) if feature_major else (lx @ lw.transpose(1, 2) + lb.unsqueeze(1))
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), want, rtol=2**-8, atol=1e-6)  # one rounding
    grad = torch.randn(out.shape).bfloat16()
    out.backward(grad)
    rows = (grad if feature_major else grad.transpose(1, 2)).float()  # [2, 5, 7]
    want_weight = rows @ (lx.transpose(1, 2) if feature_major else lx)
    assert weight.grad.dtype == bias.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert torch.allclose(weight.grad, want_weight, rtol=2**-7, atol=1e-6)
    assert torch.allclose(bias.grad, rows.sum(-1), rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("form", [bias_relu, bias_relu_fused])
def test_a_hidden_layers_bias_and_relu_and_their_gradients_are_autograds(form, feature_major):
    """``bias_relu`` (the bias gradient a GEMV) and the form torch.compile fuses, against autograd on the plain
    expression: values, the product's gradient (zero where the ReLU cut) and the bias's (its sum over the batch)."""
    torch.manual_seed(1)
    y = torch.randn(3, 5, 7) if feature_major else torch.randn(3, 7, 5)  # [M, out, N] or [K, N, out]
    bias = torch.randn(3, 5)
    grad = torch.randn(y.shape)
    expanded = (lambda b: b.unsqueeze(-1)) if feature_major else (lambda b: b.unsqueeze(1))
    y_ref, bias_ref = y.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    want = torch.relu(y_ref + expanded(bias_ref))
    want.backward(grad)
    y.requires_grad_(True), bias.requires_grad_(True)
    got = form(y, bias, None, feature_major)
    got.backward(grad)
    assert torch.equal(got, want) and torch.equal(y.grad, y_ref.grad)
    assert torch.allclose(bias.grad, bias_ref.grad, rtol=1e-6, atol=1e-6)
    assert (y.grad == 0).sum() == (want == 0).sum() > 0  # the ReLU cut somewhere, and the gradient with it


def test_a_hidden_layer_on_low_precision_copies_adds_the_low_bias_and_hands_float32_gradients():
    torch.manual_seed(2)
    weight, bias = torch.randn(2, 5, 3, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    x = torch.randn(2, 3, 7)
    low = tuple(low_precision_copies([weight, bias], torch.bfloat16))
    out = hidden_layer(x, weight, bias, low, True, bias_relu)
    product = (low[0].float() @ x.bfloat16().float()).bfloat16()  # the bf16 product, then the bf16 bias
    want = torch.relu(product + low[1].unsqueeze(-1))
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), want.float(), rtol=2**-7, atol=1e-2)
    out.float().sum().backward()
    assert weight.grad.dtype == bias.grad.dtype == torch.float32
    assert torch.equal(bias.grad, (out > 0).float().sum(-1))  # ones through the ReLU's gate, summed exactly


def test_the_maths_take_bf16_network_outputs_and_compute_in_float32():
    """``learner.matmul_precision: bf16`` hands the networks' outputs over uncast (a cast after each product was 7
    copy kernels per update at batch 4 096 on an H200): the head, the losses and the statistics compute in float32,
    exactly as on the same values cast first."""
    from learner.losses import actor_loss, critic_loss, soft_q_target
    from learner.stack import stats_vector

    g = torch.Generator().manual_seed(4)
    out, noise = torch.randn(5, 12, generator=g).bfloat16(), torch.randn(5, 6, generator=g)
    q, target = torch.randn(3, 2, 8, generator=g).bfloat16(), torch.randn(3, 8, generator=g)
    log_prob, alpha = torch.randn(3, 8, generator=g), torch.full((3, 1), 0.2)
    pairs = [
        (policy_head(out, noise), policy_head(out.float(), noise)),
        ((critic_loss(q, target),), (critic_loss(q.float(), target),)),
        ((actor_loss(alpha, log_prob, q),), (actor_loss(alpha, log_prob, q.float()),)),
        ((soft_q_target(target, torch.zeros(3, 8), 0.9, q, log_prob, alpha),),
         (soft_q_target(target, torch.zeros(3, 8), 0.9, q.float(), log_prob, alpha),)),
    ]  # fmt: skip
    norms = [torch.ones(3)] * 4  # gradient norms and the losses
    pairs.append(((stats_vector(q[:, 0], *norms, alpha.squeeze(-1), 5.0, True),),
                  (stats_vector(q[:, 0].float(), *norms, alpha.squeeze(-1), 5.0, True),)))  # fmt: skip
    for got, want in pairs:
        for a, b in zip(got, want, strict=True):
            assert a.dtype == torch.float32 and torch.equal(a, b)
    std_bf16 = q[:, 0].std(dim=-1).float()  # what the statistics would read computed in bf16
    assert not torch.equal(stats_vector(q[:, 0], *norms, alpha.squeeze(-1), 5.0, True)[:, 3], std_bf16)
