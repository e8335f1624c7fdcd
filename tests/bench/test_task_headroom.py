"""The headroom bench's map controller: the share of the oracle's gain, and that with no samples
it drives on the population-mean prior."""

import math

import numpy as np
import pytest

from actors.context.config import ContextConfig
from actors.context.grid import cell_centers
from actors.vehicle.dynamics_map import population_mean_map
from actors.vehicle.env import VehicleVectorEnv
from bench.task_headroom import MapDriver, share, variant_config

GAINS = {"kp_accel": 0.5, "ki_accel": 0.2, "lookahead": 2, "noise_filter": 0.5}


def test_share_of_the_oracles_gain():
    assert share(-100.0, -50.0, -75.0) == pytest.approx(0.5)  # returns: half the improvement kept
    assert share(0.2, 0.1, 0.16) == pytest.approx(0.4)  # errors: lower is better, the same formula
    assert share(-100.0, -50.0, -120.0) == pytest.approx(-0.4)  # worse than the baseline
    assert math.isnan(share(0.2, 0.2, 0.1))


@pytest.mark.parametrize(("reconstruction", "ratio"), [("smoothed", 0.8), ("basis", 0.2)])
def test_the_map_controller_starts_on_the_prior_and_learns_each_vehicles_map(reconstruction, ratio):
    """No samples: the population-mean prior for every vehicle. After 200 steps of driving, where the estimate is
    confident (> 0.5) it is closer to each vehicle's true map than the prior (mean absolute error, measured:
    smoothed 0.16 against 0.37 and 0.17 against 0.22 m/s² over 4 118 and 1 189 cells; basis 0.029 against 0.37 and
    0.035 against 0.23 over 4 033 and 1 208 cells)."""
    config = variant_config(["randomization.actuation_delay=[0.0,0.3]"])
    env = VehicleVectorEnv(2, config, seed=3)
    obs = env.reset(3)
    driver = MapDriver(GAINS, reconstruction)
    driver.start(env)
    context = ContextConfig()
    u, v = cell_centers(context)
    prior = population_mean_map(config, u, v, context.prior_vehicles, context.prior_seed)
    assert np.allclose(driver.maps, prior[None], atol=1e-5)  # no samples yet: the prior for both vehicles
    for _ in range(200):
        step = env.step(driver(obs, env))
        driver.observe(step.dynamics_samples)
        obs = step.obs
    true, confident = env.true_dynamics_map(u, v), driver.provider.current_confidence() > 0.5
    for k in range(2):
        cells = confident[k]
        assert cells.sum() > 1000
        estimate_error = np.abs(driver.maps[k] - true[k])[cells].mean()
        prior_error = np.abs(prior - true[k])[cells].mean()
        assert estimate_error < ratio * prior_error
