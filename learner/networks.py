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


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy; actions lie in ``[-1, 1]``."""

    def __init__(self, in_dim: int, action_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.action_dim = action_dim
        self.net = mlp(in_dim, hidden_sizes, 2 * action_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action and its log-probability ``[B]``."""
        mean, log_std = self(x)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        pre_tanh = mean + log_std.exp() * noise
        return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)

    def deterministic(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(x)[0])


class TwinCritic(nn.Module):
    """Two independent Q networks ``Q(s, a)``; SAC uses their minimum."""

    def __init__(self, in_dim: int, action_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.q1 = mlp(in_dim + action_dim, hidden_sizes, 1)
        self.q2 = mlp(in_dim + action_dim, hidden_sizes, 1)

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa = torch.cat([x, action], dim=-1)
        return self.q1(xa).squeeze(-1), self.q2(xa).squeeze(-1)
