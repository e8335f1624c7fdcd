"""The ``context`` config section: the dynamics map, its reconstruction and its encoder."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveInt

from learner.types import ConfigValueError, config_section


@config_section
class ContextConfig:
    """What the policy and critics see besides the observation: a per-environment dynamics-map context."""

    mode: Literal["none", "dynamics_map", "oracle", "history"] = "none"
    """``none``: observation only; ``dynamics_map``: an encoded map a(u, v) built from the env's samples;
    ``oracle`` (vehicle env, a study arm): the vehicle's true parameters, normalized (17 values, 18 with a randomized ``actuation_delay``; not ``context_dim``);
    ``history`` (a study arm): the last ``history_steps`` samples (u, v, a, theta), normalized (4 values each)."""
    privileged_critic: bool = False
    """Vehicle env, a study arm: the critics also see each vehicle's true parameters (the oracle context, appended
    after this mode's context), the policy does not (asymmetric actor-critic: privileged information for training)."""
    history_steps: int = Field(8, ge=1, le=256)
    """``history`` mode (and ``append_history``): dynamics samples per environment the context holds, newest first
    (zeros where the episode has fewer; the context has 4 x this many values, not ``context_dim``)."""
    append_history: bool = False
    """``dynamics_map`` or ``oracle`` mode, a study arm: the ``history`` context appended to this mode's, for the policy
    and critics (the commands and accelerations of the last steps: the state an actuation delay hides)."""
    encoder: Literal["pooled", "cnn", "basis"] = "pooled"
    """``pooled``: average-pooled map and confidence, fixed projection (no training); ``cnn``: pretrained, frozen;
    ``basis`` (vehicle env): the map's coordinates on the population's principal components (``basis_components``
    values, not ``context_dim``)."""
    reconstruction: Literal["smoothed", "basis"] = "smoothed"
    """``smoothed``: smoothed weighted cell means blended into the prior; ``basis`` (vehicle env): the population
    mean plus its principal components, weighted by a Bayesian regression of the samples (extrapolates to cells the
    vehicle has not visited as the population's vehicles do)."""
    basis_components: int = Field(16, ge=1, le=128)
    """Principal components of the population's maps (``prior_vehicles`` of them) that ``basis`` keeps."""
    basis_noise: float = Field(0.1, gt=0)
    """``basis`` reconstruction: standard deviation in m/s^2 of a sample about the vehicle's map (sensor noise,
    actuator transients, what the components miss); smaller trusts the samples more against the population prior."""
    context_dim: int = Field(32, ge=1)
    """Length of the context vector appended to the observation."""
    grid_u: int = Field(100, ge=2)
    """Map cells along the command axis u in [-1, 1]."""
    grid_v: int = Field(100, ge=2)
    """Map cells along the speed axis v in [0, v_max]."""
    v_max: float = Field(30.0, gt=0)
    """Top of the speed axis in m/s; faster samples land in the last cell."""
    decay_rate: float = Field(0.3, ge=0)
    """lambda in 1/s of the sample weights max(min_weight, exp(-lambda * age))."""
    min_weight: float = Field(0.3, ge=0, le=1)
    """Floor of the sample weights: old samples never count less than this."""
    capacity: int = Field(2048, ge=1)
    """Samples kept per environment (the newest ones); cleared when the environment resets."""
    update_every: int = Field(10, ge=1)
    """Environment steps between map rebuilds (all environments of a worker in one batched call)."""
    smoothing_sigma: tuple[NonNegativeFloat, NonNegativeFloat] = (6.0, 12.0)
    """Standard deviation in cells (along u, along v) of the Gaussian of the normalized convolution."""
    split_at_zero_command: bool = False
    """Do not smooth across u = 0 (keep drive and brake regimes apart)."""
    prior_weight: float = Field(2.0, gt=0)
    """Smoothed sample weight at which data and prior count equally (confidence 0.5); less falls back to the prior."""
    accel_scale: float = Field(5.0, gt=0)
    """m/s^2 per unit of the normalized map ((map - prior) / accel_scale) that the encoders see."""
    accel_clip: float = Field(50.0, gt=0)
    """Gravity-compensated accelerations are clipped to +-accel_clip m/s^2 (a glitching sensor cannot blow up the map)."""
    standstill_speed: float = Field(0.5, ge=0)
    """Samples with |v| below this (m/s) and |a_meas| below ``standstill_accel`` are skipped: a held car says nothing of a(u, v)."""
    standstill_accel: float = Field(0.01, ge=0)
    """See ``standstill_speed`` (m/s^2); 0 keeps every sample."""
    pool_grid: tuple[PositiveInt, PositiveInt] = (8, 8)
    """``pooled`` encoder: cells (along u, along v) that map and confidence are average-pooled to."""
    projection_seed: int = 0
    """``pooled`` encoder: seed of its fixed orthonormal projection to ``context_dim``."""
    encoder_checkpoint: str = ""
    """``cnn`` encoder: path of the checkpoint written by ``python -m cluster.pretrain_encoder``."""
    prior_vehicles: int = Field(256, ge=1)
    """Randomized vehicles averaged into the population prior map (environments with an oracle)."""
    prior_seed: int = 1_000_003
    """Seed of the prior's vehicles (keep it apart from training and evaluation seeds)."""

    def __post_init__(self) -> None:
        if self.append_history and self.mode not in ("dynamics_map", "oracle"):
            raise ConfigValueError("append_history", f"appends to a dynamics_map or oracle context, not {self.mode}")
        if self.pool_grid[0] > self.grid_u or self.pool_grid[1] > self.grid_v:
            raise ConfigValueError("pool_grid", f"must be within (grid_u, grid_v) = ({self.grid_u}, {self.grid_v}), got {self.pool_grid}")
        if self.basis_components >= self.prior_vehicles and "basis" in (self.encoder, self.reconstruction):
            raise ConfigValueError("basis_components", f"must be below prior_vehicles ({self.prior_vehicles}), got {self.basis_components}")
        if self.encoder == "cnn" and self.mode == "dynamics_map" and not self.encoder_checkpoint:
            raise ConfigValueError(
                "encoder_checkpoint", "encoder cnn needs a checkpoint path (write one with python -m cluster.pretrain_encoder)"
            )
