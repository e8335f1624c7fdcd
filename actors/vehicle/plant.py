"""The longitudinal plant, vectorized over vehicles: DC motor, gearbox, brake with lag, road load, creep.

The state is the vehicle speed ``v = ω r_w / N`` (one rotational state), the
armature current ``i``, the actual brake force at the wheels ``F_b`` and the
position along the road ``s``. One control step holds the command and the
grade and integrates ``substeps`` substeps of length ``h``:

- current: exact exponential update of ``L di/dt = V − R i − K ω`` with ω held
  over the substep (stable for every ``L/R``), clamped to ``[0, V/R]``; the force
  uses the exact substep mean of the exponential;
- brake: exact first-order lag toward ``T_max |u|^p`` (same mean trick);
- speed: explicit Euler on the other forces, then the brake acts as Coulomb
  friction (it removes up to ``h F_b / m_eq`` of speed and never reverses it),
  so a strong brake holds the car at rest; the standstill rule then snaps
  ``|v| < hold_speed`` to 0 while the brake command exceeds ``hold_brake``;
- position: trapezoidal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from actors.vehicle.config import PlantConfig
from actors.vehicle.params import (
    AIR_DENSITY,
    GRAVITY,
    ROLL_RAMP_SPEED,
    VehicleParams,
    drive_gain,
    emf_gain,
    equivalent_mass,
    viscous_coeff,
)


@dataclass(frozen=True)
class PlantCoeffs:
    """Per-vehicle constants of the substep update (arrays ``[n]``), derived once per vehicle."""

    inv_meq: np.ndarray
    drive_gain: np.ndarray
    emf_over_r: np.ndarray
    volt_over_r: np.ndarray
    visc: np.ndarray
    drag: np.ndarray
    roll: np.ndarray
    weight: np.ndarray
    brake_max: np.ndarray
    brake_exp: np.ndarray
    creep: np.ndarray
    cur_decay: np.ndarray
    cur_mean: np.ndarray
    brake_decay: np.ndarray
    brake_mean: np.ndarray
    wheel_radius: np.ndarray

    def put(self, index: np.ndarray, other: PlantCoeffs) -> None:
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)


def _decay_and_mean(rate_times_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``exp(-x)`` and the substep mean factor ``(1 - exp(-x)) / x`` of a first-order lag."""
    decay = np.exp(-rate_times_h)
    return decay, -np.expm1(-rate_times_h) / rate_times_h


def plant_coeffs(p: VehicleParams, h: float, cfg: PlantConfig) -> PlantCoeffs:
    """Everything the substep needs, for substep length ``h``."""
    meq = equivalent_mass(p)
    cur_decay, cur_mean = _decay_and_mean(h * p.armature_resistance / p.armature_inductance)
    brake_decay, brake_mean = _decay_and_mean(h / p.brake_lag)
    return PlantCoeffs(
        inv_meq=1.0 / meq,
        drive_gain=drive_gain(p),
        emf_over_r=emf_gain(p) / p.armature_resistance,
        volt_over_r=p.motor_voltage / p.armature_resistance,
        visc=viscous_coeff(p),
        drag=0.5 * AIR_DENSITY * p.drag_area,
        roll=p.rolling_coeff * p.mass * GRAVITY,
        weight=p.mass * GRAVITY,
        brake_max=p.brake_decel * p.mass,
        brake_exp=p.brake_exponent.copy(),
        creep=cfg.creep_accel * meq,
        cur_decay=cur_decay,
        cur_mean=cur_mean,
        brake_decay=brake_decay,
        brake_mean=brake_mean,
        wheel_radius=p.wheel_radius.copy(),
    )


@dataclass
class PlantState:
    """Speed (m/s), current (A), actual brake force at the wheels (N), position (m); arrays ``[n]``."""

    v: np.ndarray
    i: np.ndarray
    fb: np.ndarray
    s: np.ndarray

    @staticmethod
    def at_rest(n: int) -> PlantState:
        return PlantState(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))

    def put(self, index: np.ndarray, other: PlantState) -> None:
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)


@dataclass(frozen=True)
class Command:
    """One control step's command, decoded once for all substeps (arrays ``[n]``)."""

    i_supply: np.ndarray
    """``u V / R``: the current the drive voltage alone would push (0 unless u > 0)."""
    brake_force: np.ndarray
    """Commanded brake force at the wheels, ``brake_max |u|^p`` for u < 0."""
    creep: np.ndarray
    """Creep force at rest: ``creep_accel m_eq (1 − brake command)`` for u <= 0, else 0."""
    hold: np.ndarray
    """Bool: brake command above the standstill-hold threshold."""
    grade_force: np.ndarray
    """``m g sin θ`` (positive uphill), held over the control step."""


def decode_command(u: np.ndarray, sin_grade: np.ndarray, c: PlantCoeffs, cfg: PlantConfig) -> Command:
    """Split ``u in [-1, 1]`` into drive voltage, brake and creep."""
    drive = np.maximum(u, 0.0)
    brake = np.maximum(-u, 0.0)
    return Command(
        i_supply=drive * c.volt_over_r,
        brake_force=c.brake_max * brake**c.brake_exp,
        creep=np.where(u <= 0.0, c.creep * (1.0 - brake), 0.0),
        hold=brake > cfg.hold_brake,
        grade_force=c.weight * sin_grade,
    )


def creep_fade(v: np.ndarray, creep_speed: float) -> np.ndarray:
    """``1 − (v / creep_speed)^5`` for ``0 <= v <= creep_speed``; 1 backwards, 0 above."""
    x = np.minimum(np.maximum(v, 0.0) * (1.0 / creep_speed), 1.0)
    x2 = x * x
    return 1.0 - x2 * x2 * x


def road_force(v: np.ndarray, c: PlantCoeffs, grade_force: np.ndarray) -> np.ndarray:
    """Drag, rolling (ramped in below 0.1 m/s, opposing motion) and grade (N)."""
    roll = c.roll * np.minimum(np.maximum(v * (1.0 / ROLL_RAMP_SPEED), -1.0), 1.0)
    return c.drag * v * np.abs(v) + roll + grade_force


def substep(st: PlantState, cmd: Command, c: PlantCoeffs, h: float, cfg: PlantConfig) -> None:
    """Advance ``st`` by one substep of length ``h`` (in place)."""
    i_max = c.volt_over_r
    i_ss = cmd.i_supply - c.emf_over_r * st.v
    gap = st.i - i_ss
    i_mean = np.minimum(np.maximum(i_ss + gap * c.cur_mean, 0.0), i_max)
    st.i = np.minimum(np.maximum(i_ss + gap * c.cur_decay, 0.0), i_max)
    brake_gap = st.fb - cmd.brake_force
    fb_mean = cmd.brake_force + brake_gap * c.brake_mean
    st.fb = cmd.brake_force + brake_gap * c.brake_decay
    force = c.drive_gain * i_mean + cmd.creep * creep_fade(st.v, cfg.creep_speed)
    force -= c.visc * st.v + road_force(st.v, c, cmd.grade_force)
    h_over_m = h * c.inv_meq
    v_free = st.v + h_over_m * force
    v_new = np.copysign(np.maximum(np.abs(v_free) - h_over_m * fb_mean, 0.0), v_free)
    v_new[cmd.hold & (np.abs(v_new) < cfg.hold_speed)] = 0.0
    st.s = st.s + (0.5 * h) * (st.v + v_new)
    st.v = v_new


def control_step(
    st: PlantState, u: np.ndarray, sin_grade: np.ndarray, c: PlantCoeffs, dt: float, substeps: int, cfg: PlantConfig
) -> None:
    """Hold ``u`` and the grade for ``dt`` and integrate ``substeps`` substeps (in place)."""
    cmd = decode_command(u, sin_grade, c, cfg)
    h = dt / substeps
    for _ in range(substeps):
        substep(st, cmd, c, h, cfg)
