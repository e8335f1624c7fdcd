"""The dynamics-map oracle agrees with the plant it describes."""

from __future__ import annotations

import numpy as np
import pytest

from actors.vehicle import VehicleConfig, dynamics_map, population_mean_map
from actors.vehicle.config import PlantConfig
from actors.vehicle.plant import PlantState, control_step, plant_coeffs
from tests.actors.vehicle.helpers import hand_vehicle, sampled

U = np.array([-1.0, -0.5, -0.05, 0.0, 0.2, 0.6, 1.0])
V = np.array([0.0, 0.5, 1.0, 5.0, 15.0, 30.0])


def plant_accel(p, u: float, v: float, h: float = 1e-5) -> np.ndarray:
    """Acceleration over one tiny substep with current and brake already at their steady state."""
    plant = PlantConfig(hold_speed=0.0)  # the snap is a stopping rule, not part of the map
    n = len(p)
    c = plant_coeffs(p, h, plant)
    st = PlantState.at_rest(n)
    st.v[:] = v
    st.i = np.clip(max(u, 0.0) * c.volt_over_r - c.emf_over_r * v, 0.0, c.volt_over_r)
    st.fb = c.brake_max * max(-u, 0.0) ** c.brake_exp
    control_step(st, np.full(n, u), np.zeros(n), c, h, 1, plant)
    return (st.v - v) / h


def test_map_equals_the_plant_at_steady_state():
    p = sampled(8, seed=9)
    amap = dynamics_map(p, U, V)
    for iu, u in enumerate(U):
        for iv, v in enumerate(V):
            assert amap[:, iu, iv] == pytest.approx(plant_accel(p, u, v), abs=2e-3), (u, v)


def test_hand_vehicle_values():
    """m_eq 1821.0 kg; at u = 1, v = 0: (9600 − 0) / 1821.0 (rolling is ramped to 0 at rest)."""
    amap = dynamics_map(hand_vehicle(), np.array([1.0, -1.0, 0.0]), np.array([0.0, 20.0]))[0]
    assert amap[0, 0] == pytest.approx(9600 / 1821.0, rel=1e-3)
    # u = −1 at 20 m/s: brake 9·2000 = 18000 N, rolling 196.2 N, viscous 20 N, drag 0.3675·400 = 147 N
    assert amap[1, 1] == pytest.approx(-(18000 + 196.2 + 20 + 147) / 1821.0, rel=1e-3)
    assert amap[1, 0] == 0.0  # held
    assert amap[2, 0] == pytest.approx(0.5, rel=1e-9)  # creep at rest


def test_population_mean_map_is_the_mean_over_sampled_vehicles():
    cfg = VehicleConfig()
    prior = population_mean_map(cfg, U, V, num_vehicles=64, seed=3)
    assert prior.shape == (len(U), len(V))
    assert np.array_equal(prior, population_mean_map(cfg, U, V, num_vehicles=64, seed=3))
    assert np.all(np.diff(prior[:, 3:], axis=0) > 0)  # more u, more acceleration (moving)
    assert -14.0 < prior[0, 3] < -8.0  # full brake: 8–11 m/s² times m/m_eq (0.99–1.17)
