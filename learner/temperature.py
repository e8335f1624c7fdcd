"""Entropy temperature strategies: fixed, or learned toward a target entropy."""

from __future__ import annotations

import math

import torch

from learner.losses import temperature_loss
from learner.optim import adam_state, load_adam_state, make_adam


class FixedTemperature:
    optimizer = None

    def __init__(self, alpha: float, device: torch.device) -> None:
        self._alpha = torch.tensor(alpha, device=device)

    def alpha(self) -> torch.Tensor:
        return self._alpha

    def update(self, log_prob: torch.Tensor) -> None:
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

    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def update(self, log_prob: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        temperature_loss(self.log_alpha, log_prob, self.target_entropy).backward()
        self.optimizer.step()

    def parameters(self) -> list[torch.Tensor]:
        return [self.log_alpha]

    def state_dict(self) -> dict:
        return {"log_alpha": self.log_alpha.detach().clone(), "optimizer": adam_state(self.optimizer)}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        load_adam_state(self.optimizer, state["optimizer"])


Temperature = FixedTemperature | LearnedTemperature
"""Either strategy: ``alpha()`` (a 0-d device tensor), ``update(log_prob)``, ``parameters()`` and ``optimizer``
(None when fixed), ``state_dict()`` / ``load_state_dict()``."""


def make_temperature(
    kind: str, initial_alpha: float, action_dim: int, target_entropy_scale: float, lr: torch.Tensor
) -> Temperature:
    if kind == "fixed":
        return FixedTemperature(initial_alpha, lr.device)
    return LearnedTemperature(initial_alpha, -target_entropy_scale * action_dim, lr)
