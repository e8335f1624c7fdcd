"""The history context (``context.mode: history``): the newest samples per environment, normalized, newest first."""

from __future__ import annotations

import numpy as np
import pytest

from actors.context.config import ContextConfig
from actors.context.history import HistoryContext
from cluster.config import ConfigError, load_config
from cluster.factory import probe_dimensions
from learner.types import ConfigValueError
from tests.conftest import ROOT

CONFIG = ContextConfig(mode="history", history_steps=2, v_max=20.0, accel_scale=4.0, accel_clip=10.0)


def sample(u: float, v: float, a: float, theta: float) -> list[float]:
    return [u, v, a, theta]


def test_the_context_is_the_newest_samples_normalized_newest_first():
    history = HistoryContext(2, CONFIG)
    assert history.context_dim == 8 and history.context().tolist() == [[0.0] * 8] * 2
    history.observe(np.array([sample(0.5, 10.0, 2.0, 0.05), sample(-1.0, 0.0, -20.0, 0.0)]))
    history.observe(np.array([sample(0.25, 4.0, -1.0, -0.1), sample(1.0, 20.0, 3.0, 0.2)]))
    # u, v / 20, clip(a, +-10) / 4, theta / 0.1; env 1's -20 m/s^2 is clipped to -10
    expected = [[0.25, 0.2, -0.25, -1.0, 0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 0.75, 2.0, -1.0, 0.0, -2.5, 0.0]]
    np.testing.assert_allclose(history.context(), expected, rtol=1e-6)
    history.observe(np.array([sample(0.0, 2.0, 0.0, 0.0), sample(0.0, 2.0, 0.0, 0.0)]))  # the oldest falls out
    np.testing.assert_allclose(history.context()[0], [0.0, 0.1, 0.0, 0.0, 0.25, 0.2, -0.25, -1.0], rtol=1e-6)
    history.reset(np.array([1]))  # a new vehicle: its history starts empty, the other keeps its own
    assert history.context()[1].tolist() == [0.0] * 8 and history.context()[0, 1] == pytest.approx(0.1)


def test_non_finite_samples_are_left_out_and_counted_and_absent_rows_skipped():
    history = HistoryContext(2, CONFIG)
    rows = np.array([[sample(0.5, 10.0, 2.0, 0.0), sample(np.nan, 1.0, 1.0, 0.0)],
                     [sample(0.1, 2.0, np.inf, 0.0), sample(0.2, 4.0, 0.0, 0.0)]])  # fmt: skip
    present = np.array([[True, True], [True, False]])  # env 1's second row was not reported
    history.observe(rows, present)
    context = history.context()
    assert np.isfinite(context).all()
    np.testing.assert_allclose(context[0], [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0])  # the NaN row left out
    assert context[1].tolist() == [0.0] * 8  # the inf row left out, the absent one skipped
    assert history.take_fallback_counts() == {"nan": 1, "inf": 1} and history.take_fallback_counts() == {}


def test_the_history_arm_is_built_from_config_and_needs_an_env_with_samples():
    vehicle = load_config(ROOT / "configs" / "vehicle.yaml", ["context.mode=history", "context.history_steps=6"])
    dims = probe_dimensions(vehicle)
    assert dims.context_dim == 24 and dims.obs_dim > 0
    pendulum = load_config(ROOT / "configs" / "smoke.yaml", ["context.mode=history"])
    with pytest.raises(ConfigValueError, match="context.mode history needs info"):
        probe_dimensions(pendulum)
    with pytest.raises(ConfigError, match="context.history_steps: must be >= 1"):
        load_config(ROOT / "configs" / "vehicle.yaml", ["context.mode=history", "context.history_steps=0"])
