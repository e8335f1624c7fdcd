"""SAC losses as small pure functions of tensors, in the stacked form the update runs (hand-checked in tests).

Twin-critic Q values arrive stacked, ``[2, B]``, and every argument may carry leading run dimensions (``[K, 2, B]``
for ``K`` runs trained side by side, ``α`` then ``[K, 1]``): a loss is then one per run. Q values may arrive in
bfloat16 (``learner.matmul_precision: bf16``); the losses are taken in float32. Nothing else computes a loss
(``torch.compile`` compiles these).
"""

from __future__ import annotations

import torch


def soft_q_target(
    scaled_reward: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float | torch.Tensor,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """``r + γ (1 − terminated) (min(Q1', Q2') − α log π(a'|s'))`` with ``next_q`` ``[..., 2, B]``.

    Only termination stops the bootstrap: a time-limit truncation is not a
    terminal state, so truncated transitions bootstrap from their true next
    observation.
    """
    soft_value = next_q.float().amin(dim=-2) - alpha * next_log_prob
    return scaled_reward + gamma * (1.0 - terminated.float()) * soft_value


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of the two critics' mean squared errors (``q`` ``[..., 2, B]``) against the same target ``[..., B]``."""
    return (q.float() - target.unsqueeze(-2)).pow(2).mean(dim=-1).sum(dim=-1)


def actor_loss(alpha: torch.Tensor, log_prob: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``E[α log π(a|s) − min(Q1, Q2)(s, a)]`` for reparameterized ``a`` (``q`` ``[..., 2, B]``)."""
    return (alpha * log_prob - q.float().amin(dim=-2)).mean(dim=-1)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``−E[log α · (log π + H_target)]``: raises α when entropy is below target (``log_alpha`` ``[...]``,
    ``log_prob`` ``[..., B]``)."""
    return -(log_alpha.unsqueeze(-1) * (log_prob.detach() + target_entropy)).mean(dim=-1)


@torch.no_grad()
def polyak_update(targets: list[torch.Tensor], sources: list[torch.Tensor], tau: float) -> None:
    """``target ← (1 − τ) target + τ source`` for every pair, in place."""
    torch._foreach_lerp_(targets, sources, tau)
