"""The actors' CPU copy of the policy (inference only)."""

from __future__ import annotations

import numpy as np
import torch

from learner.networks import Actor
from learner.types import VersionedWeights


class PolicyCopy:
    """Runs the learner's policy on a batch of ``[obs ‖ context]`` rows, on the CPU: their first ``in_dim`` values
    (a context part for the critic only comes last: ``context.privileged_critic``)."""

    def __init__(self, in_dim: int, action_dim: int, hidden_sizes: tuple[int, ...], seed: int) -> None:
        self.in_dim = in_dim
        self.network = Actor(in_dim, action_dim, hidden_sizes)
        self.network.requires_grad_(False)
        self.generator = torch.Generator().manual_seed(seed)
        self.version = 0

    def load(self, weights: VersionedWeights) -> None:
        """Swap to ``weights`` if newer; older or equal versions are ignored."""
        if weights.version <= self.version:
            return
        self.network.load_state_dict(weights.tensors)
        self.version = weights.version

    def act(self, obs: np.ndarray, context: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in ``[-1, 1]``, shape ``[n, action_dim]``."""
        rows = np.concatenate([obs, context], axis=-1)[:, : self.in_dim]
        x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        with torch.inference_mode():
            action = self.network.deterministic(x) if deterministic else self.network.sample(x, self.generator)[0]
        return action.numpy()

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.network.parameters())
