"""Entropy temperature strategies: fixed, or learned toward a target entropy."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from learner.losses import temperature_loss
from learner.optim import AdamTensors, adam_state, adam_step, load_adam_state, make_adam


class FixedTemperature:
    optimizer = None

    def __init__(self, alpha: float, device: torch.device) -> None:
        self._alpha = torch.tensor(alpha, device=device)

    def alpha(self) -> torch.Tensor:
        return self._alpha

    def update(self, log_prob: torch.Tensor, step: Callable | None = None) -> None:
        """Nothing to learn."""

    def parameters(self) -> list[torch.Tensor]:
        return []

    def state_dict(self) -> dict:
        return {"alpha": self._alpha.clone()}

    def load_state_dict(self, state: dict) -> None:
        self._alpha.copy_(state["alpha"])


class LearnedTemperature:
    """``log α`` trained so the policy's entropy tracks ``target_entropy``, with the learner's shared ``lr`` tensor.

    Created on the learner's device before its optimizer (one built over a CPU tensor moved later kept stepping
    the stale copy, which froze alpha at 1.0)."""

    def __init__(self, initial_alpha: float, target_entropy: float, lr: torch.Tensor) -> None:
        self.log_alpha = torch.tensor(math.log(initial_alpha), device=lr.device, requires_grad=True)
        self.target_entropy = target_entropy
        self.optimizer = make_adam([self.log_alpha], lr)
        self.adam = AdamTensors.of(self.optimizer)

    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def update(self, log_prob: torch.Tensor, step: Callable | None = None) -> None:
        """One step of ``temperature_step`` (or ``step``, its compiled form)."""
        a = self.adam
        (step or temperature_step)(self.log_alpha, log_prob, self.target_entropy, a.exp_avgs[0], a.exp_avg_sqs[0],
                                   a.steps[0], a.lr)  # fmt: skip

    def parameters(self) -> list[torch.Tensor]:
        return [self.log_alpha]

    def state_dict(self) -> dict:
        return {"log_alpha": self.log_alpha.detach().clone(), "optimizer": adam_state(self.optimizer)}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        load_adam_state(self.optimizer, state["optimizer"])


def temperature_step(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float, exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor, step: torch.Tensor, lr: torch.Tensor,
) -> None:  # fmt: skip
    """One Adam step of ``log_alpha`` on ``temperature_loss``, its gradient by ``torch.func.grad`` (no autograd
    graph: ``torch.compile`` fuses the whole step into a kernel or two)."""
    grad = torch.func.grad(temperature_loss)(log_alpha.detach(), log_prob, target_entropy)
    adam_step([log_alpha], [grad], [exp_avg], [exp_avg_sq], [step], lr)


Temperature = FixedTemperature | LearnedTemperature
"""Either strategy: ``alpha()`` (a 0-d device tensor), ``update(log_prob)``, ``parameters()`` and ``optimizer``
(None when fixed), ``state_dict()`` / ``load_state_dict()``."""


def make_temperature(
    kind: str, initial_alpha: float, action_dim: int, target_entropy_scale: float, lr: torch.Tensor
) -> Temperature:
    if kind == "fixed":
        return FixedTemperature(initial_alpha, lr.device)
    return LearnedTemperature(initial_alpha, -target_entropy_scale * action_dim, lr)
