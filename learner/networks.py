"""Policy and critic networks. All take ``[obs ‖ context]``; the context may be empty."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


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
    """Two Q networks ``Q(s, a)`` → ``[2, B]``: layer ``l`` holds ``weights[l]: [2, out, in]`` and ``biases[l]``,
    one batched matmul for both; initialised as two separate MLPs would be. SAC uses the minimum of the two."""

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
        """``Q(s, a)`` from ``[s ‖ a]`` (a column range of the replay's rows: no concatenation)."""
        w0, b0 = self.weights[0], self.biases[0]
        # First layer: both networks in one [B, in] x [in, 2*out] product.
        h = nn.functional.linear(xa, w0.reshape(-1, w0.shape[-1]), b0.reshape(-1))
        h = h.view(xa.shape[0], 2, w0.shape[1]).transpose(0, 1)
        for w, b in zip(self.weights[1:], self.biases[1:], strict=True):
            h = torch.baddbmm(b.unsqueeze(1), torch.relu(h), w.transpose(1, 2))
        return h.squeeze(-1)
