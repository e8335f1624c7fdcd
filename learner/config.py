"""Config sections the learner owns. Frozen, typed; every field documented.

Defaults are the seed's conservative values (the vehicle job): the incident
that started this project was cured by exactly these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from learner.types import require


@dataclass(frozen=True)
class LearnerConfig:
    """Soft Actor-Critic hyperparameters and placement."""

    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where the learner runs: ``auto`` takes a GPU when one is visible, else the CPU."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the policy and of each critic."""
    lr: float = 3e-5
    """Adam learning rate of policy, critics and temperature (seed: 3e-5)."""
    gamma: float = 0.95
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics: ``target ← (1 − tau)·target + tau·online``."""
    batch_size: int = 256
    """Transitions per update."""
    reward_scale: float = 0.001
    """Factor applied to raw rewards in the learner, and only there (seed: 0.001)."""
    max_grad_norm: float = 5.0
    """Global-norm gradient clip per network (seed: 5.0); pre-clip norms are reported."""
    temperature: Literal["learned", "fixed"] = "learned"
    """``learned``: alpha tuned toward the target entropy; ``fixed``: alpha stays ``initial_alpha``."""
    initial_alpha: float = 1.0
    """Starting entropy temperature."""
    target_entropy_scale: float = 1.0
    """Target entropy is ``-target_entropy_scale * action_dim``."""
    block_updates: int = 50
    """Updates per block: the host reads the health flags once per block."""
    fast_path: Literal["auto", "graph", "off"] = "auto"
    """On CUDA, ``auto``: each update one CUDA-graph replay of the SAC step with ``torch.compile``d maths; ``graph``: the graph without compile; ``off``: the same step run eagerly (always eager off CUDA)."""
    broadcast_every: int = 100
    """Updates between weight broadcasts to the actors (each one passes the weight gate)."""

    def __post_init__(self) -> None:
        require(len(self.hidden_sizes) >= 1 and min(self.hidden_sizes) > 0, "hidden_sizes", "needs at least one positive width")
        require(0 < self.lr < 1, "lr", f"must be in (0, 1), got {self.lr}")
        require(0 < self.gamma < 1, "gamma", f"must be in (0, 1), got {self.gamma}")
        require(0 < self.tau <= 1, "tau", f"must be in (0, 1], got {self.tau}")
        require(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        require(self.reward_scale > 0, "reward_scale", f"must be > 0, got {self.reward_scale}")
        require(self.max_grad_norm > 0, "max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        require(self.initial_alpha > 0, "initial_alpha", f"must be > 0, got {self.initial_alpha}")
        require(self.target_entropy_scale >= 0, "target_entropy_scale", "must be >= 0")
        require(self.block_updates >= 1, "block_updates", f"must be >= 1, got {self.block_updates}")
        require(self.broadcast_every >= 1, "broadcast_every", f"must be >= 1, got {self.broadcast_every}")


@dataclass(frozen=True)
class ReplayConfig:
    """The replay buffer, preallocated on the learner's device."""

    capacity: int = 1_000_000
    """Transitions held; the oldest are overwritten."""

    def __post_init__(self) -> None:
        require(self.capacity >= 1, "capacity", f"must be >= 1, got {self.capacity}")
