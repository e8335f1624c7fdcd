"""Map reconstruction against the vehicle environment's oracle, on vehicles the prior never saw."""

from __future__ import annotations

import numpy as np
import pytest

from actors.context.config import ContextConfig
from actors.context.encoders import PooledEncoder
from actors.context.exploration import ExploringPolicy, record_episode, rmse
from actors.context.grid import cell_centers
from actors.context.provider import DynamicsMapContext

vehicle = pytest.importorskip("actors.vehicle")
pid = pytest.importorskip("actors.vehicle.pid")

NUM_ENVS = 24
HELD_OUT_SEED = 4242  # the prior's vehicles come from default_rng(config.prior_seed)


@pytest.fixture(scope="module")
def episode():
    config = ContextConfig(mode="dynamics_map")
    vcfg = vehicle.VehicleConfig()
    u_grid, v_grid = cell_centers(config)
    prior = vehicle.population_mean_map(
        vcfg, u_grid, v_grid, num_vehicles=config.prior_vehicles, seed=config.prior_seed
    )
    env = vehicle.VehicleVectorEnv(NUM_ENVS, vcfg, seed=HELD_OUT_SEED)
    provider = DynamicsMapContext(NUM_ENVS, config, PooledEncoder(config), prior_map=prior, dt=vcfg.dt)
    policy = ExploringPolicy(pid.PIDController(NUM_ENVS), NUM_ENVS, seed=HELD_OUT_SEED + 1)
    steps = (64, 256, 1024, vcfg.episode_steps)
    record = record_episode(env, provider, policy, seed=HELD_OUT_SEED, snapshot_steps=steps)
    return prior, record, vcfg.episode_steps


def test_error_falls_as_samples_grow_and_beats_the_prior_by_30_percent(episode) -> None:
    prior, record, episode_steps = episode
    truth = record.true_maps
    prior_maps = np.broadcast_to(prior, truth.shape)
    prior_rmse = rmse(prior_maps, truth)
    whole = [rmse(s.maps, truth) for s in record.snapshots]
    assert all(a > b for a, b in zip(whole, whole[1:], strict=False)), whole
    final = record.snapshots[-1]
    assert final.step == episode_steps == 2048
    assert whole[-1] <= 0.7 * prior_rmse, (whole, prior_rmse)
    visited = final.visited
    assert 0.05 < visited.mean() < 0.5  # one episode visits a part of the plane only
    assert rmse(final.maps, truth, visited) <= 0.5 * rmse(prior_maps, truth, visited)


def test_contexts_of_the_episode_are_finite_and_tell_vehicles_apart(episode) -> None:
    _, record, _ = episode
    ctx = record.snapshots[-1].context
    assert ctx.shape == (NUM_ENVS, 32) and ctx.dtype == np.float32 and np.isfinite(ctx).all()
    # Different vehicles, different contexts: the smallest pairwise distance is well above zero.
    dist = np.linalg.norm(ctx[:, None] - ctx[None], axis=-1) + np.eye(NUM_ENVS) * 1e9
    assert dist.min() > 1e-3
