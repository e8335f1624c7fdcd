"""Config sections the learner owns. Frozen, typed; every field documented.

Defaults are the seed's conservative values (the vehicle job): the incident
that started this project was cured by exactly these numbers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PositiveInt

from learner.types import config_section


@config_section
class LearnerConfig:
    """Soft Actor-Critic hyperparameters and placement."""

    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where the learner runs: ``auto`` takes a GPU when one is visible, else the CPU."""
    hidden_sizes: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)
    """Hidden layer widths of the policy and of each critic."""
    lr: float = Field(3e-5, gt=0, lt=1)
    """Adam learning rate of policy, critics and temperature (seed: 3e-5)."""
    gamma: float = Field(0.95, gt=0, lt=1)
    """Discount factor."""
    tau: float = Field(0.005, gt=0, le=1)
    """Polyak coefficient of the target critics: ``target ← (1 − tau)·target + tau·online``."""
    batch_size: int = Field(256, ge=2)
    """Transitions per update."""
    reward_scale: float = Field(0.001, gt=0)
    """Factor applied to raw rewards in the learner, and only there (seed: 0.001)."""
    max_grad_norm: float = Field(5.0, gt=0)
    """Global-norm gradient clip per network (seed: 5.0); pre-clip norms are reported."""
    temperature: Literal["learned", "fixed"] = "learned"
    """``learned``: alpha tuned toward the target entropy; ``fixed``: alpha stays ``initial_alpha``."""
    initial_alpha: float = Field(1.0, gt=0)
    """Starting entropy temperature."""
    target_entropy_scale: float = Field(1.0, ge=0)
    """Target entropy is ``-target_entropy_scale * action_dim``."""
    block_updates: int = Field(50, ge=1)
    """Updates per block: the host reads the health flags once per block."""
    overlap_blocks: bool = True
    """Launch the next block before reading the last, so the device trains while the host records and guards it; a
    block that reading the last one invalidates (a rollback, a remedy's rates) is undone: the same updates either way."""
    fast_path: Annotated[Literal["auto", "compiled", "graph", "off"], BeforeValidator(lambda v: "off" if v is False else v)] = "auto"
    """On CUDA, the SAC step replayed as CUDA graphs (of ten updates, and of one for a block's rest); ``auto``:
    training starts at once with the graph of the plain maths while ``torch.compile`` builds the compiled ones in the background (20-25 s on an
    H200), then the graph is captured again with those; ``compiled``: the compiled maths from the first update
    (training waits for the compile; the same numbers from run to run); ``graph``: never compiled; ``off``: the same
    step run eagerly (always eager off CUDA; YAML's unquoted ``off`` is read as this, not as false). A job of ``auto``
    plans its updates first: under 40 000 per run it takes ``graph`` (the compile would not pay back,
    ``cluster.factory.AUTO_COMPILE_MIN_UPDATES``)."""
    matmul_precision: Literal["highest", "high", "bf16"] = "highest"
    """Matrix products of the networks: ``highest``: fp32; ``high``: TF32 on CUDA (fp32 elsewhere); ``bf16``: the
    forward products on bfloat16 copies of the weights (all cast in one go before the critic loss, the critics again
    after their step; autocast would cast each weight at each use), weight gradients in fp32. Weights, losses,
    optimizer, targets and statistics stay fp32 in every mode."""
    broadcast_every: int = Field(100, ge=1)
    """Updates between weight broadcasts to the actors (each one passes the weight gate)."""


@config_section
class ReplayConfig:
    """The replay buffer, preallocated on the learner's device."""

    capacity: int = Field(1_000_000, ge=1)
    """Transitions held; the oldest are overwritten."""
