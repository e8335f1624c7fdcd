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


def test_the_basis_fit_extrapolates_better_than_the_smoothed_map_over_the_whole_grid() -> None:
    """The same episode (PID with exploration, 24 held-out vehicles) through the ``basis`` reconstruction: over the
    whole grid it is closer to the true maps than the smoothed map (measured 0.433 against 0.467 m/s^2 RMSE; the prior
    0.788), over the visited cells as close (0.278 against 0.298)."""
    from cluster.context_factory import dynamics_map_context

    vcfg = vehicle.VehicleConfig()
    records = {}
    for reconstruction in ("smoothed", "basis"):
        config = ContextConfig(mode="dynamics_map", reconstruction=reconstruction)
        env = vehicle.VehicleVectorEnv(NUM_ENVS, vcfg, seed=HELD_OUT_SEED)
        provider = dynamics_map_context(config, vcfg, NUM_ENVS, vcfg.dt)
        policy = ExploringPolicy(pid.PIDController(NUM_ENVS), NUM_ENVS, seed=HELD_OUT_SEED + 1)
        records[reconstruction] = record_episode(env, provider, policy, seed=HELD_OUT_SEED, snapshot_steps=(vcfg.episode_steps,))
    truth = records["basis"].true_maps
    smoothed, basis = (records[k].snapshots[-1] for k in ("smoothed", "basis"))
    prior = np.broadcast_to(provider.reconstruction.prior, truth.shape)  # both providers share it: the population mean
    assert rmse(basis.maps, truth) < 0.95 * rmse(smoothed.maps, truth)
    assert rmse(basis.maps, truth) < 0.6 * rmse(prior, truth)
    assert rmse(basis.maps, truth, basis.visited) < rmse(smoothed.maps, truth, smoothed.visited)
