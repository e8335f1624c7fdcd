"""Settings of the vehicle environment: randomization ranges, profiles, reward weights.

Defaults are the spec's table (``specs/vehicle-env.md``). Every range is a
``(low, high)`` pair; which ranges are drawn log-uniformly is fixed by the
physics (see ``actors.vehicle.params.LOG_UNIFORM``), not by config.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveFloat

from learner.types import ConfigValueError, config_section


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"low {pair[0]} must be <= high {pair[1]}")
    return pair


Range = Annotated[tuple[PositiveFloat, PositiveFloat], AfterValidator(_ordered)]
"""A ``(low, high)`` range of a positive parameter."""
EfficiencyRange = Annotated[tuple[PositiveFloat, Annotated[float, Field(le=1)]], AfterValidator(_ordered)]
ExponentRange = Annotated[tuple[Annotated[float, Field(ge=1)], float], AfterValidator(_ordered)]
DelayRange = Annotated[tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]], AfterValidator(_ordered)]


@config_section
class RandomizationConfig:
    """Per-episode parameter ranges (spec table) and the rejection-sampling checks."""

    mass: Range = (1500.0, 6000.0)
    """Vehicle mass m in kg (uniform)."""
    drag_area: Range = (0.2, 0.8)
    """Drag area CdA in m² (uniform)."""
    rolling_coeff: Range = (0.007, 0.015)
    """Rolling-resistance coefficient C_rr (uniform)."""
    wheel_radius: Range = (0.26, 0.38)
    """Wheel radius r_w in m (uniform)."""
    wheel_inertia: Range = (0.5, 5.0)
    """Wheel inertia J_w in kg·m² (log-uniform)."""
    motor_voltage: Range = (200.0, 800.0)
    """Motor supply voltage V_max in V (uniform)."""
    armature_resistance: Range = (0.02, 0.6)
    """Armature resistance R in Ω (log-uniform)."""
    armature_inductance: Range = (1e-4, 1e-2)
    """Armature inductance L in H (log-uniform)."""
    motor_constant: Range = (0.05, 0.4)
    """Motor constant K in N·m/A (= V·s/rad) (log-uniform)."""
    viscous_friction: Range = (1e-6, 5e-3)
    """Motor viscous friction b in N·m·s (log-uniform)."""
    rotor_inertia: Range = (1e-4, 1e-2)
    """Rotor inertia J_m in kg·m² (log-uniform)."""
    gear_ratio: Range = (4.0, 20.0)
    """Gear ratio N (uniform)."""
    gearbox_efficiency: EfficiencyRange = (0.85, 0.98)
    """Gearbox efficiency η (uniform)."""
    brake_decel: Range = (8.0, 11.0)
    """Maximum brake deceleration in m/s²; the brake's full torque is ``brake_decel · r_w · m`` (uniform)."""
    brake_exponent: ExponentRange = (1.0, 1.8)
    """Brake map exponent p: commanded torque ``T_max |u|^p`` (uniform)."""
    brake_lag: Range = (0.04, 0.12)
    """Brake first-order lag time constant τ_br in s (uniform)."""
    speed_noise: Range = (0.02, 0.2)
    """Standard deviation σ of the speed-sensor noise in m/s (uniform)."""
    actuation_delay: DelayRange = (0.0, 0.0)
    """Drive-by-wire latency in s (uniform, rounded to whole control steps): the plant applies the command given that
    long ago. Not in the spec's table and off by default; a task option where feedback must be gentle and knowing the
    vehicle pays. A range of one value draws no random numbers, so every other parameter is drawn as without it."""
    min_launch_accel: float = Field(2.5, ge=0)
    """Reject vehicles whose full-drive acceleration from rest on flat ground is below this (m/s²)."""
    min_top_speed: float = Field(20.0, ge=0)
    """Reject vehicles whose steady full-drive speed on flat ground is below this (m/s)."""
    max_stall_current: float = Field(2000.0, gt=0)
    """Reject vehicles whose stall current V_max/R exceeds this (A)."""
    max_viscous_ratio: float = Field(0.1, gt=0)
    """Reject vehicles whose viscous torque at no-load speed exceeds this fraction of stall torque (b·R/K²)."""
    max_attempts: int = Field(1000, ge=1)
    """Candidate draws allowed per vehicle before sampling fails with an error."""


@config_section
class ReferenceConfig:
    """Random target speeds and the feasibility filter that turns them into the reference."""

    p_change: float = Field(0.01, ge=0, le=1)
    """Probability per control step that the target speed changes."""
    p_zero_stop: float = Field(0.15, ge=0, le=1)
    """Probability that a new target is a stop (zero), held until the next change."""
    v_max_sample: float = Field(30.0, gt=0)
    """Non-zero targets are uniform in ``[0, min(v_max_sample, cap)]`` (m/s)."""
    safety_fraction: float = Field(0.8, gt=0, le=1)
    """Fraction of this vehicle's capability (top speed uphill, acceleration, braking) the reference may use."""
    natural_freq: float = Field(0.8, gt=0)
    """Natural frequency of the critically damped second-order reference filter (rad/s)."""
    accel_max: float = Field(2.0, gt=0)
    """Comfort cap on the reference acceleration (m/s²), below the vehicle-derived limit."""
    decel_max: float = Field(3.0, gt=0)
    """Comfort cap on the reference deceleration (m/s²), below the vehicle-derived limit."""
    jerk_max: float = Field(2.0, gt=0)
    """Comfort cap on the reference jerk (m/s³), below the vehicle-derived limit."""
    stop_snap: float = Field(0.02, ge=0)
    """With a zero target, a reference below this speed (m/s) snaps to exactly zero (a real stop); 0.02 keeps the snap's jerk near ``jerk_max`` at dt = 0.1."""


@config_section
class GradeConfig:
    """Road grade: an Ornstein–Uhlenbeck process over distance, clipped."""

    correlation_length: float = Field(300.0, gt=0)
    """OU correlation length in m: ``corr(θ(s), θ(s+d)) = exp(-d / length)``."""
    std: float = Field(0.03, ge=0)
    """Stationary standard deviation of the grade in rad (0 gives a flat road)."""
    clip: float = Field(0.08, ge=0, lt=1.5)
    """Grade is clipped to ``±clip`` rad."""
    spacing: float = Field(5.0, gt=0)
    """Distance between precomputed grade points in m (linear interpolation between them)."""
    max_distance: float = 20000.0
    """Road length precomputed per episode in m; beyond it the grade holds its last value."""
    pitch_noise: float = Field(0.002, ge=0)
    """Standard deviation of the pitch sensor in rad."""

    def __post_init__(self) -> None:
        if self.max_distance < 2 * self.spacing:
            raise ConfigValueError("max_distance", f"must cover at least two grade points (2 x spacing = {2 * self.spacing})")


@config_section
class PlantConfig:
    """Fixed behaviours of the plant: creep and standstill hold."""

    creep_accel: float = Field(0.5, ge=0)
    """Creep drive at ``u <= 0`` and rest, as an acceleration of the equivalent mass (m/s²)."""
    creep_speed: float = Field(1.5, gt=0)
    """Creep fades as ``1 - (v / creep_speed)^5`` and vanishes above this speed (m/s)."""
    hold_brake: float = Field(0.1, ge=0, lt=1)
    """Standstill hold engages when the brake command exceeds this ..."""
    hold_speed: float = Field(0.3, ge=0)
    """... and |v| is below this speed (m/s): the car is held at v = 0."""


@config_section
class RewardConfig:
    """Weights of the per-step reward terms (all active) and the clip."""

    w_track: float = Field(1.0, ge=0)
    """Weight of (v - v_ref)²."""
    w_action: float = Field(0.5, ge=0)
    """Weight of |u|."""
    w_brake: float = Field(1e-4, ge=0)
    """Weight of the actual brake torque |T_brake| (N·m at the wheels)."""
    w_jerk: float = Field(0.1, ge=0)
    """Weight of |jerk| (m/s³, from step accelerations)."""
    w_smooth: float = Field(15.0, ge=0)
    """Weight of |u_t - u_{t-1}|."""
    w_neg_speed: float = Field(10.0, ge=0)
    """Weight of max(0, -v) (rolling backwards)."""
    w_stop: float = Field(0.25, ge=0)
    """Weight of |v|·[v_ref = 0] + [v_ref = 0 and u > 0]."""
    clip: float = Field(1e4, gt=0)
    """Each step's reward is clipped to ``±clip``."""


@config_section
class PIDGains:
    """Gains of the PID baseline (``actors/vehicle/pid.py``): ``cluster.evaluate --baseline pid`` and the PID under
    ``action: residual_pid``. The defaults come from a grid search over kp, ki, lookahead and k_accel on 32
    randomized vehicles of the default task for the best return (``bench/task_headroom.py`` repeats it for a
    changed task)."""

    kp: float = Field(0.25, ge=0)
    """Proportional gain on the speed error (per m/s)."""
    ki: float = Field(0.1, ge=0)
    """Integral gain (per m)."""
    kd: float = Field(0.0, ge=0)
    """Derivative gain on the error (per m/s²)."""
    k_accel: float = Field(0.12, ge=0)
    """Feed-forward on the previewed reference acceleration (per m/s²)."""
    k_pitch: float = Field(1.0, ge=0)
    """Feed-forward on the measured pitch (per rad)."""
    lookahead: int = Field(2, ge=0)
    """Preview steps ahead the error is taken against."""
    noise_filter: float = Field(0.5, gt=0, le=1)
    """Weight of a new speed measurement in the exponential filter (1: no filtering)."""
    hold_brake: float = Field(-0.3, ge=-1, le=0)
    """Command at a stop (reference zero now and ahead, car below ``hold_speed``)."""
    hold_speed: float = Field(0.5, ge=0)
    """Speed (m/s) below which a stopped reference means hold."""


@config_section
class MapControlGains:
    """Gains of the map controller (``actors/vehicle/map_control.py``), the base under ``action: residual_map``: feedback
    in acceleration units, the command from the inverse of the vehicle's acceleration map. The defaults are
    ``bench/task_headroom.py``'s grid search on the true maps (its ``oracle``) for the agile task with an actuation
    delay (kp_accel, ki_accel, lookahead, noise_filter; best return)."""

    kp_accel: float = Field(0.25, ge=0)
    """Wanted acceleration per m/s of speed error (1/s)."""
    ki_accel: float = Field(0.0, ge=0)
    """Wanted acceleration per m of integrated error (1/s²)."""
    lookahead: int = Field(1, ge=0)
    """Preview steps ahead the error is taken against."""
    noise_filter: float = Field(0.5, gt=0, le=1)
    """Weight of a new speed measurement in the exponential filter (1: no filtering)."""
    hold_brake: float = Field(-0.3, ge=-1, le=0)
    """Largest command at a stop (reference zero now and ahead, car below ``hold_speed``)."""
    hold_speed: float = Field(0.5, ge=0)
    """Speed (m/s) below which a stopped reference means hold."""


@config_section
class VehicleConfig:
    """The randomized electric-vehicle speed-tracking environment."""

    episode_steps: int = Field(2048, ge=1)
    """Control steps per episode (ends by truncation only)."""
    dt: float = Field(0.1, gt=0)
    """Control step in s."""
    substeps: int = Field(5, ge=1)
    """Plant integration substeps per control step."""
    preview_steps: int = Field(30, ge=1)
    """Reference preview in the observation: ``v_ref[t … t+preview_steps-1]``."""
    action: Literal["direct", "residual_pid", "residual_map"] = "direct"
    """``direct``: the action is the command u; ``residual_pid``: a correction the env adds to the shipped PID's
    command, ``u = clip(u_pid + residual_scale · a, -1, 1)``; ``residual_map``: the same on the map controller's
    command, which inverts the vehicle's acceleration map as the run's context knows it: the true map with
    ``context.mode: oracle``, the online estimate with ``dynamics_map`` (no other mode) (actors/vehicle/residual.py)."""
    residual_scale: float = Field(0.5, gt=0, le=2)
    """With a residual action: how far the agent's correction in [-1, 1] may move the base controller's command."""
    pid: PIDGains = field(default_factory=PIDGains)
    """The PID baseline's gains (evaluation baseline and ``residual_pid``)."""
    map_control: MapControlGains = field(default_factory=MapControlGains)
    """The map controller's gains (``residual_map``)."""
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    """Parameter ranges and rejection-sampling checks."""
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    """Reference speed profile generator."""
    grade: GradeConfig = field(default_factory=GradeConfig)
    """Road grade process."""
    plant: PlantConfig = field(default_factory=PlantConfig)
    """Creep and standstill hold."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward weights."""

    @property
    def observation_dim(self) -> int:
        """``[v_meas, v_meas_prev, u_prev, θ_meas]`` plus the preview."""
        return 4 + self.preview_steps
