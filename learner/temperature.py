"""Entropy temperatures of ``K`` runs: fixed, or learned toward a target entropy."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from learner.losses import temperature_loss
from learner.optim import AdamTensors, adam_state, adam_step, load_adam_state


class Temperature:
    """``α`` of ``K`` runs (``[K]``): fixed at each run's ``initial_alpha``, or ``log α`` trained so the policy's
    entropy tracks ``target_entropy``, by Adam at the runs' learning rates."""

    def __init__(self, learned: bool, initial_alphas: torch.Tensor, target_entropy: float) -> None:
        self.learned, self.target_entropy = learned, target_entropy
        self.value = torch.empty_like(initial_alphas)
        """``log α`` when learned, else ``α``."""
        for k, alpha in enumerate(initial_alphas.tolist()):
            self.set_alpha(alpha, k)
        self.adam = AdamTensors.zeros_for([self.value]) if learned else None

    @torch.no_grad()
    def set_alpha(self, alpha: float, k: int = 0) -> None:
        """Run ``k``'s ``α`` (its ``log α`` when learned, taken in double precision)."""
        self.value[k].fill_(math.log(alpha) if self.learned else alpha)

    def alpha(self) -> torch.Tensor:
        return self.value.detach().exp() if self.learned else self.value

    def update(self, log_prob: torch.Tensor, lr: torch.Tensor, step: Callable | None = None) -> None:
        """One step of ``temperature_step`` (or ``step``, its compiled form) on the policy's ``log_prob`` ``[K, B]``."""
        if self.adam is not None:
            a = self.adam
            (step or temperature_step)(self.value, log_prob, self.target_entropy, a.exp_avgs[0], a.exp_avg_sqs[0],
                                       a.step, lr)  # fmt: skip

    def tensors(self) -> list[torch.Tensor]:
        """Its state: the value and, when learned, its Adam moments and step."""
        return [self.value, *(self.adam.tensors() if self.adam else [])]

    def state_dict(self, k: int = 0) -> dict:
        """Run ``k``'s, as a single run's checkpoint holds it."""
        if self.adam is None:
            return {"alpha": self.value[k].clone()}
        return {"log_alpha": self.value[k].detach().clone(), "optimizer": adam_state(self.adam.run(k))}

    @torch.no_grad()
    def load_state_dict(self, state: dict, k: int = 0) -> None:
        if self.adam is None:
            self.value[k].copy_(state["alpha"])
            return
        self.value[k].copy_(state["log_alpha"])
        load_adam_state(self.adam.run(k), state["optimizer"])


def temperature_step(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float, exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor, step: torch.Tensor, lr: torch.Tensor,
) -> None:  # fmt: skip
    """One Adam step of every run's ``log_alpha`` ``[K]`` on ``temperature_loss``, its gradient by ``torch.func.grad``
    (no autograd graph: ``torch.compile`` fuses the whole step into a kernel or two)."""
    grad = torch.func.grad(lambda value: temperature_loss(value, log_prob, target_entropy).sum())(log_alpha.detach())
    adam_step([log_alpha], [grad], [exp_avg], [exp_avg_sq], step, lr)


def make_temperature(
    kind: str, initial_alphas: torch.Tensor, action_dim: int, target_entropy_scale: float
) -> Temperature:
    return Temperature(kind == "learned", initial_alphas, -target_entropy_scale * action_dim)
