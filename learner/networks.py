"""Policy and critic networks. All take ``[obs ‖ context]``; the context may be empty."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


_ONES: dict[tuple, torch.Tensor] = {}


def ones_column(batch: int, length: int, like: torch.Tensor) -> torch.Tensor:
    """Ones ``[batch, length, 1]`` to sum a batch of matrices' rows by a product; cached per shape, so a replayed
    CUDA graph reads the one it captured (the eager warm-up before a capture creates it)."""
    key = (batch, length, like.dtype, like.device)
    if key not in _ONES:
        _ONES[key] = torch.ones((batch, length, 1), dtype=like.dtype, device=like.device)
    return _ONES[key]


Low = tuple[torch.Tensor, torch.Tensor] | None
"""A layer's weight and bias in low precision (``learner.matmul_precision: bf16``), or None: the products in float32."""


class StackedLinear(torch.autograd.Function):
    """A batch of affine layers whose bias gradients are matrix-vector products with ones, not autograd's sums over
    the batch: on an H200 those reductions were 13.5 % of an update's kernel time (at batch 256 in TF32 and at 4 096
    in bf16); as GEMVs the step ran 8–9 % faster. Row-major: ``x`` ``[K, N, in]`` → ``x Wᵀ + b`` ``[K, N, out]``;
    feature-major: ``x`` ``[M, in, N]`` → ``W x + b`` ``[M, out, N]``. ``weight`` is ``[K, out, in]``, ``bias``
    ``[K, out]`` or None (the product alone: ``BiasReLU`` adds it). With ``low`` (their low-precision copies) the
    products run on those and ``x`` cast to their dtype, the output in that dtype, the weight and bias gradients in
    float32 (accumulated in float32, as autocast's are)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, low: Low,
                feature_major: bool) -> torch.Tensor:  # fmt: skip
        x, weight, bias = operands(x, weight, bias, low)
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
            grad_weight = float32_product(rows, x.transpose(1, 2) if ctx.feature_major else x)
        if ctx.needs_input_grad[2]:
            grad_bias = bias_gradient(rows)
        return grad_x, grad_weight, grad_bias, None, None


class BiasReLU(torch.autograd.Function):
    """``relu(y + b)`` of a layer's product ``y`` (``StackedLinear`` without its bias; row- or feature-major as
    there), its bias gradient a GEMV with ones. ``low_bias``: the bias's low-precision copy, added to a product in
    that dtype (the gradient is the float32 bias's). Eager; compiled, ``bias_relu_fused`` replaces it."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, bias: torch.Tensor, low_bias: torch.Tensor | None,
                feature_major: bool) -> torch.Tensor:  # fmt: skip
        b = bias if low_bias is None else low_bias
        out = (y + (b.unsqueeze(-1) if feature_major else b.unsqueeze(1))).relu_()
        ctx.save_for_backward(out)
        ctx.feature_major = feature_major
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (out,) = ctx.saved_tensors
        grad_y = torch.ops.aten.threshold_backward(grad, out, 0)
        grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_bias = bias_gradient(grad_y if ctx.feature_major else grad_y.transpose(1, 2))
        return grad_y, grad_bias, None, None


def bias_relu(y: torch.Tensor, bias: torch.Tensor, low_bias: torch.Tensor | None, feature_major: bool) -> torch.Tensor:
    """A hidden layer's ``relu(y + b)`` (``BiasReLU``)."""
    return BiasReLU.apply(y, bias, low_bias, feature_major)


def bias_relu_fused(y: torch.Tensor, bias: torch.Tensor, low_bias: torch.Tensor | None,
                    feature_major: bool) -> torch.Tensor:  # fmt: skip
    """``bias_relu`` in the form torch.compile fuses: the add and the ReLU one kernel, and backward their gradient
    with the bias's sum over the batch; it casts the bias itself (the cast fuses too), so ``low_bias`` is unused."""
    b = (bias.unsqueeze(-1) if feature_major else bias.unsqueeze(1)).to(y.dtype)
    return torch.relu(y + b)


def operands(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, low: Low
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """What a layer's product multiplies: with ``low``, its copies and ``x`` cast to their dtype."""
    if low is None:
        return x, weight, bias
    return x.to(low[0].dtype), low[0], None if bias is None else low[1]


def float32_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (batches of matrices) in float32: low-precision operands multiplied into a float32 result on CUDA
    (one kernel, no cast of its output after it)."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        return torch.bmm(a, b, out_dtype=torch.float32)
    return (a @ b).float()


def bias_gradient(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` ``[K, out, N]`` summed over ``N`` (in float32), as a GEMV with ones."""
    return float32_product(rows, ones_column(rows.shape[0], rows.shape[2], rows)).squeeze(-1)


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, feature_major: bool) -> torch.Tensor:
    if bias is None:
        return weight @ x if feature_major else x @ weight.transpose(1, 2)
    if feature_major:
        return torch.baddbmm(bias.unsqueeze(-1), weight, x)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def stacked_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, feature_major: bool = False, low: Low = None
) -> torch.Tensor:
    """``StackedLinear`` where a gradient is wanted, the plain product elsewhere (no autograd overhead)."""
    wants_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and wants_grad:
        return StackedLinear.apply(x, weight, bias, low, feature_major)
    return affine(*operands(x, weight, bias, low), feature_major)


def hidden_layer(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, low: Low, feature_major: bool, relu: Callable
) -> torch.Tensor:  # fmt: skip
    """``relu(x Wᵀ + b)`` (or ``relu(W x + b)``): the product, then ``relu`` (``bias_relu`` or its fused form) adds
    the bias. A bias added by the product (``torch.baddbmm``) is a strided copy of it into the output first: 12
    copies, 10 % of an update's kernel time at batch 4 096 in bf16 on an H200."""
    product = stacked_linear(x, weight, None, feature_major, low)
    return relu(product, bias, None if low is None else low[1], feature_major)


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
    mean, log_std = gaussian_parameters(out.float())
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


def stacked_mlp(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], low: list[Low] | None = None,
    relu: Callable = bias_relu,
) -> torch.Tensor:  # fmt: skip
    """``K`` MLPs side by side (one per run): ``x`` ``[K, N, in]``, ``weights[l]`` ``[K, out, in]``, ``biases[l]``
    ``[K, out]`` → ``[K, N, out]``, ReLU between layers; one batched product per layer. ``low``: each layer's
    low-precision copies (``StackedLinear``); ``relu``: how a hidden layer adds its bias and applies the ReLU."""
    low = low or [None] * len(weights)
    h = x
    for w, b, copies in zip(weights[:-1], biases[:-1], low[:-1], strict=True):
        h = hidden_layer(h, w, b, copies, False, relu)
    return stacked_linear(h, weights[-1], biases[-1], low=low[-1])


def twin_q(
    xa: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], low: list[Low] | None = None,
    relu: Callable = bias_relu,
) -> torch.Tensor:  # fmt: skip
    """The twin critics of ``K`` runs: ``xa`` ``[K, B, in]`` (``[s ‖ a]``), ``weights[l]`` ``[K, 2, out, in]``,
    ``biases[l]`` ``[K, 2, out]`` → ``Q`` ``[K, 2, B]``; ``low`` and ``relu`` as in ``stacked_mlp``.

    Feature-major (``[2K, out, B]``): the first layer is one product per run for both twins, every later one one
    batched product for all twins of all runs, each a view of the last (row-major, the twins of several runs are
    not one stride apart). ``xa`` may be a column range of the replay's rows: its transpose is a view too.
    """
    runs, batch = xa.shape[0], xa.shape[1]
    low = low or [None] * len(weights)

    def flat(copies: Low, dims: tuple[int, int]) -> Low:
        return None if copies is None else (copies[0].flatten(*dims), copies[1].flatten(*dims))

    w0, b0 = weights[0], biases[0]  # at least one hidden layer (``LearnerConfig.hidden_sizes``)
    # the first product [K, 2·out, B] as [2K, out, B]: every hidden layer's bias and ReLU then act on one shape
    product = stacked_linear(xa.transpose(1, 2), w0.flatten(1, 2), None, True, flat(low[0], (1, 2)))
    h = relu(product.view(2 * runs, w0.shape[2], batch), b0.flatten(0, 1),
             None if low[0] is None else low[0][1].flatten(0, 1), True)  # fmt: skip
    for w, b, copies in zip(weights[1:-1], biases[1:-1], low[1:-1], strict=True):
        h = hidden_layer(h, w.flatten(0, 1), b.flatten(0, 1), flat(copies, (0, 1)), True, relu)
    return stacked_linear(h, weights[-1].flatten(0, 1), biases[-1].flatten(0, 1), True, flat(low[-1], (0, 1))).view(
        runs, 2, batch)  # fmt: skip
