"""The ``context`` config section: the dynamics map, its reconstruction and its encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from learner.types import require


@dataclass(frozen=True)
class ContextConfig:
    """What the policy and critics see besides the observation: a per-environment dynamics-map context."""

    mode: Literal["none", "dynamics_map"] = "none"
    """``none``: observation only; ``dynamics_map``: an encoded map a(u, v) built from the env's samples."""
    encoder: Literal["pooled", "cnn"] = "pooled"
    """``pooled``: average-pooled map and confidence, fixed projection (no training); ``cnn``: pretrained, frozen."""
    context_dim: int = 32
    """Length of the context vector appended to the observation."""
    grid_u: int = 100
    """Map cells along the command axis u in [-1, 1]."""
    grid_v: int = 100
    """Map cells along the speed axis v in [0, v_max]."""
    v_max: float = 30.0
    """Top of the speed axis in m/s; faster samples land in the last cell."""
    decay_rate: float = 0.3
    """lambda in 1/s of the sample weights max(min_weight, exp(-lambda * age))."""
    min_weight: float = 0.3
    """Floor of the sample weights: old samples never count less than this."""
    capacity: int = 2048
    """Samples kept per environment (the newest ones); cleared when the environment resets."""
    update_every: int = 10
    """Environment steps between map rebuilds (all environments of a worker in one batched call)."""
    smoothing_sigma: tuple[float, float] = (6.0, 12.0)
    """Standard deviation in cells (along u, along v) of the Gaussian of the normalized convolution."""
    split_at_zero_command: bool = False
    """Do not smooth across u = 0 (keep drive and brake regimes apart)."""
    prior_weight: float = 2.0
    """Smoothed sample weight at which data and prior count equally (confidence 0.5); less falls back to the prior."""
    accel_scale: float = 5.0
    """m/s^2 per unit of the normalized map ((map - prior) / accel_scale) that the encoders see."""
    accel_clip: float = 50.0
    """Gravity-compensated accelerations are clipped to +-accel_clip m/s^2 (a glitching sensor cannot blow up the map)."""
    standstill_speed: float = 0.5
    """Samples with |v| below this (m/s) and |a_meas| below ``standstill_accel`` are skipped: a held car says nothing of a(u, v)."""
    standstill_accel: float = 0.01
    """See ``standstill_speed`` (m/s^2); 0 keeps every sample."""
    pool_grid: tuple[int, int] = (8, 8)
    """``pooled`` encoder: cells (along u, along v) that map and confidence are average-pooled to."""
    projection_seed: int = 0
    """``pooled`` encoder: seed of its fixed orthonormal projection to ``context_dim``."""
    encoder_checkpoint: str = ""
    """``cnn`` encoder: path of the checkpoint written by ``python -m cluster.pretrain_encoder``."""
    prior_vehicles: int = 256
    """Randomized vehicles averaged into the population prior map (environments with an oracle)."""
    prior_seed: int = 1_000_003
    """Seed of the prior's vehicles (keep it apart from training and evaluation seeds)."""

    def __post_init__(self) -> None:
        require(self.context_dim >= 1, "context_dim", f"must be >= 1, got {self.context_dim}")
        require(self.grid_u >= 2, "grid_u", f"must be >= 2, got {self.grid_u}")
        require(self.grid_v >= 2, "grid_v", f"must be >= 2, got {self.grid_v}")
        require(self.v_max > 0, "v_max", f"must be > 0, got {self.v_max}")
        require(self.decay_rate >= 0, "decay_rate", f"must be >= 0, got {self.decay_rate}")
        require(0 <= self.min_weight <= 1, "min_weight", f"must be in [0, 1], got {self.min_weight}")
        require(self.capacity >= 1, "capacity", f"must be >= 1, got {self.capacity}")
        require(self.update_every >= 1, "update_every", f"must be >= 1, got {self.update_every}")
        require(min(self.smoothing_sigma) >= 0, "smoothing_sigma", f"must be >= 0, got {self.smoothing_sigma}")
        require(self.prior_weight > 0, "prior_weight", f"must be > 0, got {self.prior_weight}")
        require(self.accel_scale > 0, "accel_scale", f"must be > 0, got {self.accel_scale}")
        require(self.accel_clip > 0, "accel_clip", f"must be > 0, got {self.accel_clip}")
        require(self.standstill_speed >= 0, "standstill_speed", f"must be >= 0, got {self.standstill_speed}")
        require(self.standstill_accel >= 0, "standstill_accel", f"must be >= 0, got {self.standstill_accel}")
        pu, pv = self.pool_grid
        require(
            1 <= pu <= self.grid_u and 1 <= pv <= self.grid_v,
            "pool_grid",
            f"must be within 1..(grid_u, grid_v) = ({self.grid_u}, {self.grid_v}), got {self.pool_grid}",
        )
        require(
            self.encoder != "cnn" or self.mode != "dynamics_map" or bool(self.encoder_checkpoint),
            "encoder_checkpoint",
            "encoder cnn needs a checkpoint path (write one with python -m cluster.pretrain_encoder)",
        )
        require(self.prior_vehicles >= 1, "prior_vehicles", f"must be >= 1, got {self.prior_vehicles}")
