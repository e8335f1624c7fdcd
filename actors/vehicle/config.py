"""Settings of the vehicle environment: randomization ranges, profiles, reward weights.

Defaults are the spec's table (``specs/vehicle-env.md``). Every range is a
``(low, high)`` pair; which ranges are drawn log-uniformly is fixed by the
physics (see ``actors.vehicle.params.LOG_UNIFORM``), not by config.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from learner.types import require

Range = tuple[float, float]


def _check_ranges(section: object, positive: bool = True) -> None:
    """Every ``tuple`` field is ``low <= high`` (and ``low > 0`` where ``positive``)."""
    for f in fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if isinstance(value, tuple):
            low, high = value
            require(low <= high, f.name, f"low {low} must be <= high {high}")
            if positive:
                require(low > 0, f.name, f"must be > 0, got low {low}")


@dataclass(frozen=True)
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
    gearbox_efficiency: Range = (0.85, 0.98)
    """Gearbox efficiency η (uniform)."""
    brake_decel: Range = (8.0, 11.0)
    """Maximum brake deceleration in m/s²; the brake's full torque is ``brake_decel · r_w · m`` (uniform)."""
    brake_exponent: Range = (1.0, 1.8)
    """Brake map exponent p: commanded torque ``T_max |u|^p`` (uniform)."""
    brake_lag: Range = (0.04, 0.12)
    """Brake first-order lag time constant τ_br in s (uniform)."""
    speed_noise: Range = (0.02, 0.2)
    """Standard deviation σ of the speed-sensor noise in m/s (uniform)."""
    min_launch_accel: float = 2.5
    """Reject vehicles whose full-drive acceleration from rest on flat ground is below this (m/s²)."""
    min_top_speed: float = 20.0
    """Reject vehicles whose steady full-drive speed on flat ground is below this (m/s)."""
    max_stall_current: float = 2000.0
    """Reject vehicles whose stall current V_max/R exceeds this (A)."""
    max_viscous_ratio: float = 0.1
    """Reject vehicles whose viscous torque at no-load speed exceeds this fraction of stall torque (b·R/K²)."""
    max_attempts: int = 1000
    """Candidate draws allowed per vehicle before sampling fails with an error."""

    def __post_init__(self) -> None:
        _check_ranges(self)
        require(self.gearbox_efficiency[1] <= 1.0, "gearbox_efficiency", "must be <= 1")
        require(self.brake_exponent[0] >= 1.0, "brake_exponent", "must be >= 1")
        require(self.min_launch_accel >= 0, "min_launch_accel", "must be >= 0")
        require(self.min_top_speed >= 0, "min_top_speed", "must be >= 0")
        require(self.max_stall_current > 0, "max_stall_current", "must be > 0")
        require(self.max_viscous_ratio > 0, "max_viscous_ratio", "must be > 0")
        require(self.max_attempts >= 1, "max_attempts", f"must be >= 1, got {self.max_attempts}")


@dataclass(frozen=True)
class ReferenceConfig:
    """Random target speeds and the feasibility filter that turns them into the reference."""

    p_change: float = 0.01
    """Probability per control step that the target speed changes."""
    p_zero_stop: float = 0.15
    """Probability that a new target is a stop (zero), held until the next change."""
    v_max_sample: float = 30.0
    """Non-zero targets are uniform in ``[0, min(v_max_sample, cap)]`` (m/s)."""
    safety_fraction: float = 0.8
    """Fraction of this vehicle's capability (top speed uphill, acceleration, braking) the reference may use."""
    natural_freq: float = 0.8
    """Natural frequency of the critically damped second-order reference filter (rad/s)."""
    accel_max: float = 2.0
    """Comfort cap on the reference acceleration (m/s²), below the vehicle-derived limit."""
    decel_max: float = 3.0
    """Comfort cap on the reference deceleration (m/s²), below the vehicle-derived limit."""
    jerk_max: float = 2.0
    """Comfort cap on the reference jerk (m/s³), below the vehicle-derived limit."""
    stop_snap: float = 0.02
    """With a zero target, a reference below this speed (m/s) snaps to exactly zero (a real stop); 0.02 keeps the snap's jerk near ``jerk_max`` at dt = 0.1."""

    def __post_init__(self) -> None:
        require(0 <= self.p_change <= 1, "p_change", f"must be in [0, 1], got {self.p_change}")
        require(0 <= self.p_zero_stop <= 1, "p_zero_stop", f"must be in [0, 1], got {self.p_zero_stop}")
        require(self.v_max_sample > 0, "v_max_sample", "must be > 0")
        require(0 < self.safety_fraction <= 1, "safety_fraction", "must be in (0, 1]")
        for key in ("natural_freq", "accel_max", "decel_max", "jerk_max"):
            require(getattr(self, key) > 0, key, "must be > 0")
        require(self.stop_snap >= 0, "stop_snap", "must be >= 0")


@dataclass(frozen=True)
class GradeConfig:
    """Road grade: an Ornstein–Uhlenbeck process over distance, clipped."""

    correlation_length: float = 300.0
    """OU correlation length in m: ``corr(θ(s), θ(s+d)) = exp(-d / length)``."""
    std: float = 0.03
    """Stationary standard deviation of the grade in rad (0 gives a flat road)."""
    clip: float = 0.08
    """Grade is clipped to ``±clip`` rad."""
    spacing: float = 5.0
    """Distance between precomputed grade points in m (linear interpolation between them)."""
    max_distance: float = 20000.0
    """Road length precomputed per episode in m; beyond it the grade holds its last value."""
    pitch_noise: float = 0.002
    """Standard deviation of the pitch sensor in rad."""

    def __post_init__(self) -> None:
        require(self.correlation_length > 0, "correlation_length", "must be > 0")
        require(self.std >= 0, "std", "must be >= 0")
        require(0 <= self.clip < 1.5, "clip", "must be in [0, 1.5) rad")
        require(self.spacing > 0, "spacing", "must be > 0")
        require(self.max_distance >= 2 * self.spacing, "max_distance", "must cover at least two grade points")
        require(self.pitch_noise >= 0, "pitch_noise", "must be >= 0")


@dataclass(frozen=True)
class PlantConfig:
    """Fixed behaviours of the plant: creep and standstill hold."""

    creep_accel: float = 0.5
    """Creep drive at ``u <= 0`` and rest, as an acceleration of the equivalent mass (m/s²)."""
    creep_speed: float = 1.5
    """Creep fades as ``1 - (v / creep_speed)^5`` and vanishes above this speed (m/s)."""
    hold_brake: float = 0.1
    """Standstill hold engages when the brake command exceeds this ..."""
    hold_speed: float = 0.3
    """... and |v| is below this speed (m/s): the car is held at v = 0."""

    def __post_init__(self) -> None:
        require(self.creep_accel >= 0, "creep_accel", "must be >= 0")
        require(self.creep_speed > 0, "creep_speed", "must be > 0")
        require(0 <= self.hold_brake < 1, "hold_brake", "must be in [0, 1)")
        require(self.hold_speed >= 0, "hold_speed", "must be >= 0")


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the per-step reward terms (all active) and the clip."""

    w_track: float = 1.0
    """Weight of (v - v_ref)²."""
    w_action: float = 0.5
    """Weight of |u|."""
    w_brake: float = 1e-4
    """Weight of the actual brake torque |T_brake| (N·m at the wheels)."""
    w_jerk: float = 0.1
    """Weight of |jerk| (m/s³, from step accelerations)."""
    w_smooth: float = 15.0
    """Weight of |u_t - u_{t-1}|."""
    w_neg_speed: float = 10.0
    """Weight of max(0, -v) (rolling backwards)."""
    w_stop: float = 0.25
    """Weight of |v|·[v_ref = 0] + [v_ref = 0 and u > 0]."""
    clip: float = 1e4
    """Each step's reward is clipped to ``±clip``."""

    def __post_init__(self) -> None:
        for f in fields(self):
            require(getattr(self, f.name) >= 0, f.name, f"must be >= 0, got {getattr(self, f.name)}")
        require(self.clip > 0, "clip", "must be > 0")


@dataclass(frozen=True)
class VehicleConfig:
    """The randomized electric-vehicle speed-tracking environment."""

    episode_steps: int = 2048
    """Control steps per episode (ends by truncation only)."""
    dt: float = 0.1
    """Control step in s."""
    substeps: int = 5
    """Plant integration substeps per control step."""
    preview_steps: int = 30
    """Reference preview in the observation: ``v_ref[t … t+preview_steps-1]``."""
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

    def __post_init__(self) -> None:
        require(self.episode_steps >= 1, "episode_steps", f"must be >= 1, got {self.episode_steps}")
        require(self.dt > 0, "dt", f"must be > 0, got {self.dt}")
        require(self.substeps >= 1, "substeps", f"must be >= 1, got {self.substeps}")
        require(self.preview_steps >= 1, "preview_steps", f"must be >= 1, got {self.preview_steps}")

    @property
    def observation_dim(self) -> int:
        """``[v_meas, v_meas_prev, u_prev, θ_meas]`` plus the preview."""
        return 4 + self.preview_steps
