"""Vehicle parameters: drawing them (with rejection sampling) and what follows from them.

Every vehicle quantity is a numpy array over vehicles (shape ``[n]``). Forces
are expressed at the wheels and accelerations as vehicle acceleration: the
spec's shaft equation ``J_eq dω/dt = K i − b ω − (T_brake + T_road)/(η N)``
multiplied by ``η N / r_w`` reads ``m_eq a = F_drive − F_visc − F_brake − F_road``
with ``m_eq = η N² J_eq / r_w²``, ``F_drive = η N K i / r_w``,
``F_visc = η b N² v / r_w²`` and ``F_brake = T_brake / r_w``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from actors.vehicle.config import RandomizationConfig

AIR_DENSITY = 1.225
"""ρ in kg/m³."""
GRAVITY = 9.81
"""g in m/s²."""
ROLL_RAMP_SPEED = 0.1
"""Rolling resistance ramps in linearly below this speed (m/s), so it is zero at rest."""

LOG_UNIFORM = frozenset(
    {"wheel_inertia", "armature_resistance", "armature_inductance", "motor_constant", "viscous_friction", "rotor_inertia"}
)
"""Ranges drawn log-uniformly (spec table); the others are uniform."""
DRAWN_ONLY_WHEN_RANDOMIZED = frozenset({"actuation_delay"})
"""Parameters added after the spec's table: while their range is one value they take no random numbers, so every
vehicle of a given seed is the one drawn before they existed."""


def randomized(name: str, cfg: RandomizationConfig) -> bool:
    """Whether ``name`` is drawn (and shown by the oracle): every spec parameter; an added one only over a range."""
    low, high = getattr(cfg, name)
    return name not in DRAWN_ONLY_WHEN_RANDOMIZED or low != high


@dataclass(frozen=True)
class VehicleParams:
    """The drawn parameters of ``n`` vehicles (each field an array ``[n]``); names match ``RandomizationConfig``."""

    mass: np.ndarray
    drag_area: np.ndarray
    rolling_coeff: np.ndarray
    wheel_radius: np.ndarray
    wheel_inertia: np.ndarray
    motor_voltage: np.ndarray
    armature_resistance: np.ndarray
    armature_inductance: np.ndarray
    motor_constant: np.ndarray
    viscous_friction: np.ndarray
    rotor_inertia: np.ndarray
    gear_ratio: np.ndarray
    gearbox_efficiency: np.ndarray
    brake_decel: np.ndarray
    brake_exponent: np.ndarray
    brake_lag: np.ndarray
    speed_noise: np.ndarray
    actuation_delay: np.ndarray

    def __len__(self) -> int:
        return int(self.mass.shape[0])

    def take(self, index: np.ndarray) -> VehicleParams:
        """The vehicles at ``index`` (a copy)."""
        return VehicleParams(**{f.name: getattr(self, f.name)[index].copy() for f in fields(self)})

    def put(self, index: np.ndarray, other: VehicleParams) -> None:
        """Overwrite the vehicles at ``index`` with ``other`` (in place)."""
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)

    @staticmethod
    def concat(parts: list[VehicleParams]) -> VehicleParams:
        return VehicleParams(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(VehicleParams)})

    @staticmethod
    def from_scalars(**values: float) -> VehicleParams:
        """One vehicle from plain numbers (tests, examples)."""
        values = {"actuation_delay": 0.0, **values}  # added after the spec: none unless given
        return VehicleParams(**{k: np.array([float(v)]) for k, v in values.items()})


PARAM_NAMES = tuple(f.name for f in fields(VehicleParams))


def equivalent_mass(p: VehicleParams) -> np.ndarray:
    """``m_eq = η N² J_eq / r_w²`` with ``J_eq = J_m + (J_w + m r_w²)/N²`` (kg)."""
    j_eq = p.rotor_inertia + (p.wheel_inertia + p.mass * p.wheel_radius**2) / p.gear_ratio**2
    return p.gearbox_efficiency * p.gear_ratio**2 * j_eq / p.wheel_radius**2


def drive_gain(p: VehicleParams) -> np.ndarray:
    """Wheel force per ampere, ``η N K / r_w`` (N/A)."""
    return p.gearbox_efficiency * p.gear_ratio * p.motor_constant / p.wheel_radius


def emf_gain(p: VehicleParams) -> np.ndarray:
    """Back-EMF per vehicle speed, ``K N / r_w`` (V per m/s)."""
    return p.motor_constant * p.gear_ratio / p.wheel_radius


def viscous_coeff(p: VehicleParams) -> np.ndarray:
    """Viscous wheel force per vehicle speed, ``η b N² / r_w²`` (N per m/s)."""
    return p.gearbox_efficiency * p.viscous_friction * p.gear_ratio**2 / p.wheel_radius**2


def drive_force_quadratic(p: VehicleParams, u: float | np.ndarray, sin_grade: float | np.ndarray):
    """``(c0, c1, c2)`` with net steady force ``c0 − c1 v − c2 v²`` at drive ``u > 0``, ``v >= 0.1``.

    Valid while the steady current ``(u V − K N v / r_w)/R`` lies in ``[0, V/R]``,
    i.e. ``0 <= v <= u V / (K N / r_w)``; drag, full rolling and grade included.
    """
    g = drive_gain(p)
    c0 = g * u * p.motor_voltage / p.armature_resistance - p.rolling_coeff * p.mass * GRAVITY
    c0 = c0 - p.mass * GRAVITY * sin_grade
    c1 = g * emf_gain(p) / p.armature_resistance + viscous_coeff(p)
    c2 = 0.5 * AIR_DENSITY * p.drag_area
    return c0, c1, c2


def steady_speed(p: VehicleParams, u: float = 1.0, grade: float = 0.0) -> np.ndarray:
    """Speed where the steady drive force at ``u`` balances road load on ``grade`` (m/s; 0 if it cannot move)."""
    c0, c1, c2 = drive_force_quadratic(p, u, np.sin(grade))
    root = 2.0 * c0 / (c1 + np.sqrt(c1**2 + 4.0 * c2 * np.maximum(c0, 0.0)))  # stable positive root
    return np.maximum(root, 0.0)


def launch_accel(p: VehicleParams) -> np.ndarray:
    """Full-drive acceleration from rest on flat ground with full rolling resistance (m/s²)."""
    c0, _, _ = drive_force_quadratic(p, 1.0, 0.0)
    return c0 / equivalent_mass(p)


def acceptance(p: VehicleParams, cfg: RandomizationConfig) -> np.ndarray:
    """Boolean ``[n]``: the vehicle passes every rejection check."""
    stall = p.motor_voltage / p.armature_resistance
    viscous_ratio = p.viscous_friction * p.armature_resistance / p.motor_constant**2
    return (
        (stall <= cfg.max_stall_current)
        & (viscous_ratio <= cfg.max_viscous_ratio)
        & (launch_accel(p) >= cfg.min_launch_accel)
        & (steady_speed(p) >= cfg.min_top_speed)
    )


def draw_candidates(rng: np.random.Generator, cfg: RandomizationConfig, count: int) -> VehicleParams:
    """``count`` unchecked vehicles drawn from the ranges (uniform or log-uniform)."""
    values = {}
    for name in PARAM_NAMES:
        low, high = getattr(cfg, name)
        if not randomized(name, cfg):
            values[name] = np.full(count, float(low))
        elif name in LOG_UNIFORM:
            values[name] = np.exp(rng.uniform(np.log(low), np.log(high), count))
        else:
            values[name] = rng.uniform(low, high, count)
    return VehicleParams(**values)


class SamplingError(RuntimeError):
    """The ranges and checks accept too few vehicles to draw the requested number."""


def sample_vehicles(rng: np.random.Generator, cfg: RandomizationConfig, count: int) -> VehicleParams:
    """``count`` vehicles that pass ``acceptance``; at most ``cfg.max_attempts`` draws per vehicle."""
    budget = cfg.max_attempts * count
    accepted: list[VehicleParams] = []
    have = drawn = 0
    while have < count:
        batch = min(max(64, 8 * (count - have)), budget - drawn)
        if batch <= 0:
            raise SamplingError(
                f"vehicle randomization: accepted {have} of {count} vehicles in {drawn} draws "
                f"(randomization.max_attempts={cfg.max_attempts} per vehicle); widen the ranges or relax "
                "min_launch_accel, min_top_speed, max_stall_current or max_viscous_ratio"
            )
        candidates = draw_candidates(rng, cfg, batch)
        drawn += batch
        keep = np.flatnonzero(acceptance(candidates, cfg))[: count - have]
        accepted.append(candidates.take(keep))
        have += keep.size
    return VehicleParams.concat(accepted)
