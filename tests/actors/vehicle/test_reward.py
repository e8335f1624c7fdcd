"""Every reward term, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from actors.vehicle.config import RewardConfig
from actors.vehicle.reward import reward


def test_each_term_with_the_default_weights():
    cfg = RewardConfig()
    v = np.array([12.0, -0.5, 0.3, 0.0])
    v_ref = np.array([10.0, 0.0, 0.0, 5.0])
    u = np.array([0.5, -0.2, 0.1, 1.0])
    u_prev = np.array([0.3, -0.2, 0.0, -1.0])
    brake = np.array([0.0, 2000.0, 0.0, 0.0])
    jerk = np.array([3.0, 0.0, -2.0, 0.0])
    r = reward(v, v_ref, u, u_prev, brake, jerk, cfg)
    expected = [
        -(1.0 * 4.0 + 0.5 * 0.5 + 0.1 * 3.0 + 15 * 0.2),  # track, action, jerk, smoothness
        -(1.0 * 0.25 + 0.5 * 0.2 + 1e-4 * 2000 + 10 * 0.5 + 0.25 * 0.5),  # brake torque, rolling back, stop |v|
        -(1.0 * 0.09 + 0.5 * 0.1 + 0.1 * 2.0 + 15 * 0.1 + 0.25 * (0.3 + 1.0)),  # moving and driving at a stop
        -(1.0 * 25.0 + 0.5 * 1.0 + 15 * 2.0),
    ]
    assert r == pytest.approx(expected)


def test_clip():
    cfg = RewardConfig()
    r = reward(np.array([500.0]), np.array([0.0]), np.ones(1), np.ones(1), np.zeros(1), np.zeros(1), cfg)
    assert r[0] == -1e4
