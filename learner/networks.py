"""Policy and critic networks. All take ``[obs ‖ context]``; the context may be empty."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


def autocast_operands(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors cast as autocast would cast a matmul's operands (unchanged outside autocast)."""
    kind = tensors[0].device.type
    if not torch.is_autocast_enabled(kind):
        return tensors
    dtype = torch.get_autocast_dtype(kind)
    return tuple(t.to(dtype) for t in tensors)


_ONES: dict[tuple, torch.Tensor] = {}


def ones_column(batch: int, length: int, like: torch.Tensor) -> torch.Tensor:
    """Ones ``[batch, length, 1]`` to sum a batch of matrices' rows by a product; cached per shape, so a replayed
    CUDA graph reads the one it captured (the eager warm-up before a capture creates it)."""
    key = (batch, length, like.dtype, like.device)
    if key not in _ONES:
        _ONES[key] = torch.ones((batch, length, 1), dtype=like.dtype, device=like.device)
    return _ONES[key]


class StackedLinear(torch.autograd.Function):
    """A batch of affine layers whose bias gradients are matrix-vector products with ones, not autograd's sums over
    the batch: on an H200 those reductions were 13.5 % of an update's kernel time (at batch 256 in TF32 and at 4 096
    in bf16); as GEMVs the step ran 8–9 % faster. Row-major: ``x`` ``[K, N, in]`` → ``x Wᵀ + b`` ``[K, N, out]``;
    feature-major: ``x`` ``[M, in, N]`` → ``W x + b`` ``[M, out, N]``. ``weight`` is ``[K, out, in]``, ``bias``
    ``[K, out]``. Under autocast the operands are cast here, as autocast casts them, and backward reuses the casts."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, feature_major: bool) -> torch.Tensor:
        x, weight, bias = autocast_operands(x, weight, bias)
        ctx.save_for_backward(x, weight)
        ctx.feature_major = feature_major
        return affine(x, weight, bias, feature_major)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)
        rows = grad if ctx.feature_major else grad.transpose(1, 2)  # [K, out, N] either way
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = weight.transpose(1, 2) @ grad if ctx.feature_major else grad @ weight
        if ctx.needs_input_grad[1]:
            grad_weight = rows @ (x.transpose(1, 2) if ctx.feature_major else x)
        if ctx.needs_input_grad[2]:
            grad_bias = bias_gradient(rows)
        return grad_x, grad_weight, grad_bias, None


def bias_gradient(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` ``[K, out, N]`` summed over ``N``, as a GEMV with ones."""
    return (rows @ ones_column(rows.shape[0], rows.shape[2], rows)).squeeze(-1)


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, feature_major: bool) -> torch.Tensor:
    if feature_major:
        return torch.baddbmm(bias.unsqueeze(-1), weight, x)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def stacked_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, feature_major: bool = False
) -> torch.Tensor:
    """``StackedLinear`` where a gradient is wanted, the plain product elsewhere (no autograd overhead)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return StackedLinear.apply(x, weight, bias, feature_major)
    return affine(x, weight, bias, feature_major)


def mlp(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear/ReLU stack ending in a linear layer of ``out_dim``."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def squashed_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of ``tanh(pre_tanh)`` for ``pre_tanh ~ N(mean, exp(log_std))``, summed over action dims.

    Uses ``log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x))``, which stays finite
    where the naive form hits ``log(0)`` at saturation.
    """
    z = (pre_tanh - mean) / log_std.exp()
    gaussian = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    squash = 2.0 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))
    return (gaussian - squash).sum(dim=-1)


def gaussian_parameters(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy network's output ``[N, 2A]`` → mean and clamped log-std."""
    mean, log_std = out.chunk(2, dim=-1)
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def policy_head(out: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[N, 2A]`` and standard-normal noise ``[N, A]`` → a reparameterized tanh action and its log-probability."""
    mean, log_std = gaussian_parameters(out)
    pre_tanh = mean + log_std.exp() * noise
    return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy; actions lie in ``[-1, 1]``."""

    def __init__(self, in_dim: int, action_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.action_dim = action_dim
        self.net = mlp(in_dim, hidden_sizes, 2 * action_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clamped log-std of the Gaussian before the tanh."""
        return gaussian_parameters(self.net(x))

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action and its log-probability ``[B]``."""
        noise = torch.randn((x.shape[0], self.action_dim), device=x.device, dtype=x.dtype, generator=generator)
        return policy_head(self.net(x), noise)

    def deterministic(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(x)[0])


class TwinCritic(nn.Module):
    """Two Q networks ``Q(s, a)`` → ``[2, B]``: layer ``l`` holds ``weights[l]: [2, out, in]`` and ``biases[l]``
    (``twin_q`` of one run); initialised as two separate MLPs would be. SAC uses the minimum of the two."""

    def __init__(self, in_dim: int, action_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        q1, q2 = ([m for m in mlp(in_dim + action_dim, hidden_sizes, 1) if isinstance(m, nn.Linear)] for _ in range(2))
        layers = list(zip(q1, q2, strict=True))
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([a.weight.data, b.weight.data])) for a, b in layers)
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([a.bias.data, b.bias.data])) for a, b in layers)

    def ordered(self) -> list[nn.Parameter]:
        """Parameters layer by layer, weight then bias (the optimizer's and the Polyak update's order)."""
        return [p for w, b in zip(self.weights, self.biases, strict=True) for p in (w, b)]

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.joined(torch.cat([x, action], dim=-1))

    def joined(self, xa: torch.Tensor) -> torch.Tensor:
        """``Q(s, a)`` from ``[s ‖ a]``."""
        return twin_q(xa.unsqueeze(0), [w.unsqueeze(0) for w in self.weights], [b.unsqueeze(0) for b in self.biases])[0]


def stacked_mlp(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """``K`` MLPs side by side (one per run): ``x`` ``[K, N, in]``, ``weights[l]`` ``[K, out, in]``, ``biases[l]``
    ``[K, out]`` → ``[K, N, out]``, ReLU between layers; one batched product per layer."""
    h = x
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if layer:
            h = torch.relu(h)
        h = stacked_linear(h, w, b)
    return h


def twin_q(xa: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """The twin critics of ``K`` runs: ``xa`` ``[K, B, in]`` (``[s ‖ a]``), ``weights[l]`` ``[K, 2, out, in]``,
    ``biases[l]`` ``[K, 2, out]`` → ``Q`` ``[K, 2, B]``.

    Feature-major (``[2K, out, B]``): the first layer is one product per run for both twins, every later one one
    batched product for all twins of all runs, each a view of the last (row-major, the twins of several runs are
    not one stride apart). ``xa`` may be a column range of the replay's rows: its transpose is a view too.
    """
    runs, batch = xa.shape[0], xa.shape[1]
    w0, b0 = weights[0], biases[0]
    h = stacked_linear(xa.transpose(1, 2), w0.flatten(1, 2), b0.flatten(1), feature_major=True)
    h = h.view(2 * runs, w0.shape[2], batch)
    for w, b in zip(weights[1:], biases[1:], strict=True):
        h = stacked_linear(torch.relu(h), w.flatten(0, 1), b.flatten(0, 1), feature_major=True)
    return h.view(runs, 2, batch)
