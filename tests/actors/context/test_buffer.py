"""Gravity compensation, time-decay weights and the ring buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actors.context.buffer import GRAVITY, SampleBuffer, decay_weights, gravity_compensated, is_floored


def test_gravity_compensation_on_a_known_grade() -> None:
    # Holding speed (a_meas = 0) up a 5 % grade takes a flat-ground acceleration of g sin(atan 0.05) = 0.48972 m/s^2.
    assert GRAVITY == 9.80665
    assert gravity_compensated(np.array([0.0]), np.array([math.atan(0.05)]))[0] == pytest.approx(0.48972, abs=1e-5)
    # Downhill at 3 % with 1.0 m/s^2 measured: the flat-ground acceleration is 1.0 - 9.80665 * sin(0.03).
    flat = gravity_compensated(np.array([1.0]), np.array([-0.03]))[0]
    assert flat == pytest.approx(1.0 - 0.2941554, abs=1e-6)


def test_weights_follow_max_floor_exp_decay() -> None:
    ages = np.array([0.0, 0.1, 1.0, 2.0, 4.0, 4.02, 4.1, 10.0, 100.0])
    w = decay_weights(ages, decay_rate=0.3, min_weight=0.3)
    expected = [1.0, math.exp(-0.03), math.exp(-0.3), math.exp(-0.6), math.exp(-1.2), 0.3, 0.3, 0.3, 0.3]
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-15)
    # The floor is reached at ln(1/0.3)/0.3 = 4.0132 s.
    assert is_floored(np.array([4.01, 4.02]), 0.3, 0.3).tolist() == [False, True]


def test_buffer_weights_at_rebuild_time() -> None:
    buf = SampleBuffer(num_envs=2, capacity=5, slack=2)
    for step in range(8):
        buf.add(np.full(2, 0.1), np.full(2, 5.0), np.full(2, float(step)), step, mask=np.array([True, step % 2 == 0]))
    w = buf.weights(now_step=7, dt=0.1, decay_rate=2.0, min_weight=0.5)
    # env 0 holds steps 3..7 (window of 5; the slack slots hold 1, 2 but they are out of the window).
    held0 = sorted(zip(buf.step[0][w[0] > 0], w[0][w[0] > 0], strict=True))
    assert [s for s, _ in held0] == [3, 4, 5, 6, 7]
    np.testing.assert_allclose([x for _, x in held0], [max(0.5, math.exp(-2.0 * 0.1 * (7 - s))) for s in range(3, 8)])
    # env 1 got samples at steps 0, 2, 4, 6 only: all in the window.
    assert sorted(buf.step[1][w[1] > 0].tolist()) == [0, 2, 4, 6]
    assert buf.count.tolist() == [8, 4]
    buf.clear(np.array([0]))
    assert buf.count.tolist() == [0, 4]
    assert (buf.weights(7, 0.1, 2.0, 0.5)[0] == 0).all()


def test_gather_returns_samples_in_sequence_order() -> None:
    buf = SampleBuffer(num_envs=1, capacity=3, slack=1)
    for step in range(6):
        buf.add(np.zeros(1), np.zeros(1), np.array([10.0 + step]), step)
    seq, valid, _, _, a_dyn, step = buf.gather(np.array([2]), np.array([6]))
    assert seq.tolist() == [[2, 3, 4, 5]] and valid.all()
    assert a_dyn.tolist() == [[12.0, 13.0, 14.0, 15.0]] and step.tolist() == [[2, 3, 4, 5]]
