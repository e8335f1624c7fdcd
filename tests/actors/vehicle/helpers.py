"""A hand-set vehicle and small plant drivers shared by the vehicle tests."""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import PlantConfig, VehicleConfig
from actors.vehicle.params import VehicleParams, sample_vehicles
from actors.vehicle.plant import PlantState, control_step, plant_coeffs

RHO, G = 1.225, 9.81

HAND = dict(
    mass=2000.0, drag_area=0.6, rolling_coeff=0.01, wheel_radius=0.3, wheel_inertia=2.0, motor_voltage=400.0,
    armature_resistance=0.25, armature_inductance=1e-3, motor_constant=0.2, viscous_friction=1e-3,
    rotor_inertia=1e-3, gear_ratio=10.0, gearbox_efficiency=0.9, brake_decel=9.0, brake_exponent=1.4,
    brake_lag=0.08, speed_noise=0.1,
)  # fmt: skip
"""A mid-range car: stall current 1600 A, launch 5.16 m/s², top speed 52.19 m/s, m_eq 1821.0 kg."""


def hand_vehicle(**changes: float) -> VehicleParams:
    return VehicleParams.from_scalars(**{**HAND, **changes})


def sampled(count: int, seed: int = 0) -> VehicleParams:
    return sample_vehicles(np.random.default_rng(seed), VehicleConfig().randomization, count)


def equivalent_mass(p: VehicleParams) -> np.ndarray:
    """Written out again from the spec: m_eq = η N² J_eq / r_w², J_eq = J_m + (J_w + m r_w²)/N²."""
    n, r = p.gear_ratio, p.wheel_radius
    return p.gearbox_efficiency * n**2 * (p.rotor_inertia + (p.wheel_inertia + p.mass * r**2) / n**2) / r**2


def run(
    p: VehicleParams,
    u: float | np.ndarray,
    steps: int,
    v0: float | np.ndarray = 0.0,
    grade: float = 0.0,
    plant: PlantConfig | None = None,
    dt: float = 0.1,
    substeps: int = 5,
) -> tuple[PlantState, np.ndarray]:
    """Hold ``u`` for ``steps`` control steps from speed ``v0`` (current and brake at 0); speeds ``[steps, n]``."""
    plant = plant or PlantConfig()
    n = len(p)
    st = PlantState.at_rest(n)
    st.v = np.broadcast_to(np.asarray(v0, dtype=float), (n,)).copy()
    coeffs = plant_coeffs(p, dt / substeps, plant)
    u_arr = np.broadcast_to(np.asarray(u, dtype=float), (n,)).copy()
    sin_grade = np.full(n, np.sin(grade))
    speeds = np.empty((steps, n))
    for k in range(steps):
        control_step(st, u_arr, sin_grade, coeffs, dt, substeps, plant)
        speeds[k] = st.v
    return st, speeds
