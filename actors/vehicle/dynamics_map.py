"""The dynamics-map oracle: a vehicle's flat-ground steady-state acceleration ``a(u, v)``.

Definition (the same forces as ``actors.vehicle.plant``, with the current and
the brake at their steady state and θ = 0)::

    F_free(u, v) = F_drive + F_creep − F_visc − F_drag − F_roll
      F_drive = η N K / r_w · clip((u⁺ V_max − K N v / r_w) / R, 0, V_max / R)   (u > 0)
      F_creep = creep_accel · m_eq · (1 − |u⁻|) · fade(v)                        (u <= 0)
      F_visc  = η b N² / r_w² · v
      F_drag  = ½ ρ CdA v |v|,   F_roll = C_rr m g · clip(v / 0.1, −1, 1)
    F_b(u)  = a_brake_max · m · |u⁻|^p                                           (u < 0)

    a(u, v) = (F_free − F_b) / m_eq                         for v > 0
            = (F_free + F_b) / m_eq                         for v < 0
            = sign(F_free) · max(|F_free| − F_b, 0) / m_eq  for v = 0 (the brake holds as static friction)

with ``m_eq = η N² (J_m + (J_w + m r_w²)/N²) / r_w²`` (the spec's shaft equation
rewritten at the wheels). At v = 0 a brake stronger than the creep gives
exactly 0. The standstill snap of the plant (|v| < 0.3 m/s with brake > 0.1
is set to 0 at the end of a substep) is a stopping rule, not a force, and is
not part of the map. On a grade θ the plant adds ``−m g sin θ / m_eq``.
"""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import PlantConfig, VehicleConfig
from actors.vehicle.params import ROLL_RAMP_SPEED, VehicleParams, sample_vehicles
from actors.vehicle.plant import creep_fade, plant_coeffs


def dynamics_map(
    params: VehicleParams, u_grid: np.ndarray, v_grid: np.ndarray, plant: PlantConfig | None = None
) -> np.ndarray:
    """``[n, len(u_grid), len(v_grid)]`` flat-ground steady-state acceleration (m/s²) of each vehicle."""
    plant = plant or PlantConfig()
    c = plant_coeffs(params, 1.0, plant)
    col = lambda x: np.asarray(x, dtype=np.float64)[:, None, None]  # noqa: E731  per-vehicle constants
    u = np.clip(np.asarray(u_grid, dtype=np.float64), -1.0, 1.0)[None, :, None]
    v = np.asarray(v_grid, dtype=np.float64)[None, None, :]
    drive, brake = np.maximum(u, 0.0), np.maximum(-u, 0.0)
    current = np.clip(drive * col(c.volt_over_r) - col(c.emf_over_r) * v, 0.0, col(c.volt_over_r))
    creep = np.where(u <= 0.0, col(c.creep) * (1.0 - brake), 0.0) * creep_fade(v, plant.creep_speed)
    road = col(c.drag) * v * np.abs(v) + col(c.roll) * np.clip(v / ROLL_RAMP_SPEED, -1.0, 1.0)
    free = col(c.drive_gain) * current + creep - col(c.visc) * v - road
    fb = col(c.brake_max) * brake ** col(c.brake_exp)
    moving = free - np.sign(v) * fb
    held = np.sign(free) * np.maximum(np.abs(free) - fb, 0.0)
    return np.where(v == 0.0, held, moving) * col(c.inv_meq)


def population_maps(
    config: VehicleConfig, u_grid: np.ndarray, v_grid: np.ndarray, num_vehicles: int = 256, seed: int = 0
) -> np.ndarray:
    """``[num_vehicles, len(u_grid), len(v_grid)]`` maps of randomized vehicles, drawn exactly as the environment draws
    them (same ranges and rejection checks) from their own generator ``default_rng(seed)``, so they never share draws
    with training."""
    params = sample_vehicles(np.random.default_rng(seed), config.randomization, num_vehicles)
    return dynamics_map(params, u_grid, v_grid, config.plant)


def population_mean_map(
    config: VehicleConfig, u_grid: np.ndarray, v_grid: np.ndarray, num_vehicles: int = 256, seed: int = 0
) -> np.ndarray:
    """``[len(u_grid), len(v_grid)]`` mean of ``population_maps``: the prior of the dynamics-map context."""
    return population_maps(config, u_grid, v_grid, num_vehicles, seed).mean(axis=0)
