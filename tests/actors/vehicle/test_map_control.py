"""The map controller and ``env.vehicle.action: residual_map``: the inverse by hand and against ``np.interp``, the
command on known maps, a zero correction driving as the controller itself, and the maps each context gives it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actors.context.config import ContextConfig
from actors.context.grid import cell_centers
from actors.vehicle.config import MapControlGains, VehicleConfig
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.evaluation import evaluate_policy
from actors.vehicle.map_control import MapController, curves_at, invert_curves
from actors.vehicle.residual import (
    TRUE_MAP_U,
    TRUE_MAP_V,
    EstimatedMaps,
    MapFeedForward,
    ResidualEnv,
    TrueMaps,
)
from cluster.config import ConfigError, load_config
from cluster.evaluate import evaluate_base, evaluate_trained
from cluster.factory import make_env, make_env_and_context, make_worker, probe_dimensions
from learner.networks import Actor
from tests.conftest import ROOT

SHORT = VehicleConfig(episode_steps=40)


def test_the_inverse_is_np_interp_row_by_row():
    """Flat stretches (rounded curves), values exactly on a curve's points and values off both ends."""
    rng = np.random.default_rng(0)
    u = np.linspace(-1.0, 1.0, 9)
    curves = np.maximum.accumulate(rng.normal(size=(300, 9)).round(1), axis=1)
    on_points = curves[np.arange(100), rng.integers(0, 9, 100)]
    wanted = np.concatenate([on_points, 1.5 * rng.normal(size=180), [-9.0] * 10, [9.0] * 10])
    expected = [np.interp(w, c, u) for w, c in zip(wanted, curves, strict=True)]
    assert np.abs(invert_curves(curves, u, wanted) - expected).max() < 1e-12
    assert (curves[:, :-1] == curves[:, 1:]).sum() > 100  # the flat stretches are there


def test_curves_at_interpolates_on_a_grid_that_does_not_start_at_zero():
    """The estimated maps' grid is the context's cell centres (v from dv/2): a(u, v) = 2u + 0.1v is read exactly,
    clamped to the grid outside it."""
    u, v = cell_centers(ContextConfig(grid_u=5, grid_v=4, v_max=8.0, pool_grid=(2, 2)))  # v: 1, 3, 5, 7
    maps = np.broadcast_to(2 * u[:, None] + 0.1 * v[None, :], (3, 5, 4))
    speeds = np.array([1.0, 4.0, 6.5])
    assert np.allclose(curves_at(maps, v, speeds), 2 * u[None, :] + 0.1 * speeds[:, None])
    assert np.allclose(curves_at(maps, v, np.array([0.0, 20.0, 7.0]))[:, 0], 2 * u[0] + 0.1 * np.array([1, 7, 7]))


def test_the_command_on_known_maps_by_hand():
    """Maps a = 4u, 2u, 4u (any speed); reference 10, 10.2, 10.4 ... (2 m/s² at lookahead 1), speed 9.7 (error 0.5):
    wanted 2 + 0.25 · 0.5 = 2.125 m/s² → u = 0.53125 on the first car; the second cannot reach it (2 m/s² at u = 1):
    u = 1 and no integral. The third has a stop ahead at 0.2 m/s: wanted −0.05 → u = −0.0125, held at −0.3."""
    u_grid, v_grid = np.linspace(-1.0, 1.0, 5), np.array([0.0, 10.0, 20.0])
    maps = np.stack([k * np.repeat(u_grid[:, None], 3, axis=1) for k in (4.0, 2.0, 4.0)])
    obs = np.zeros((3, 9))
    obs[:2, 0], obs[:2, 4:] = 9.7, 10.0 + 0.2 * np.arange(5)
    obs[2, 0] = 0.2
    controller = MapController(3, MapControlGains(ki_accel=1.0), dt=0.1)
    assert controller(obs, maps, u_grid, v_grid)[:, 0] == pytest.approx([0.53125, 1.0, -0.3])
    assert controller.integral == pytest.approx([0.05, 0.0, -0.02])  # 0.5 m/s · 0.1 s; the third's error −0.2
    # the next step: the same error, the integral adds 1.0 · 0.05 m/s²
    assert controller(obs, maps, u_grid, v_grid)[0, 0] == pytest.approx(2.175 / 4)
    controller.reset(np.array([0]))
    assert controller.integral[0] == 0.0 and controller(obs, maps, u_grid, v_grid)[0, 0] == pytest.approx(0.53125)


def test_a_zero_correction_is_the_map_controller_itself_across_new_vehicles():
    """On the true maps, re-read for every new vehicle (episodes of 40 steps: two new vehicles per env in 100)."""
    env = VehicleVectorEnv(3, SHORT, seed=9)
    residual = ResidualEnv(env, 0.5, MapFeedForward(3, TrueMaps(env), MapControlGains(), SHORT.dt))
    direct, controller = VehicleVectorEnv(3, SHORT, seed=9), MapController(3, MapControlGains(), SHORT.dt)
    obs_r, obs_d = residual.reset(9), direct.reset(9)
    assert np.array_equal(obs_r, obs_d)
    maps = direct.true_dynamics_map(TRUE_MAP_U, TRUE_MAP_V)
    for t in range(100):
        a = residual.step(np.zeros((3, 1)))
        b = direct.step(controller(obs_d, maps, TRUE_MAP_U, TRUE_MAP_V))
        if b.truncated.any():
            controller.reset(np.flatnonzero(b.truncated))
            maps = direct.true_dynamics_map(TRUE_MAP_U, TRUE_MAP_V)
        assert np.array_equal(a.reward, b.reward) and np.array_equal(a.dynamics_samples, b.dynamics_samples), t
        obs_d = b.obs
    assert np.array_equal(residual.obs, obs_d)


def residual_map_config(tmp_path, *extra: str):
    return load_config(ROOT / "configs" / "vehicle.yaml", [
        f"train.run_dir={tmp_path}", "env.num_envs=3", "env.vehicle.episode_steps=60", "env.vehicle.action=residual_map",
        "context.prior_vehicles=32", *extra])  # fmt: skip


def test_the_oracle_gives_the_base_controller_the_true_maps_and_no_map_context_is_refused(tmp_path):
    oracle, _ = make_env_and_context(residual_map_config(tmp_path, "context.mode=oracle"), seed=5)
    assert isinstance(oracle.base.source, TrueMaps)
    oracle.reset(5)
    assert np.array_equal(oracle.base.source.maps(), oracle.true_dynamics_map(TRUE_MAP_U, TRUE_MAP_V))

    with pytest.raises(ConfigError, match="env.vehicle.action.*needs context.mode oracle .* or dynamics_map .*not history"):
        residual_map_config(tmp_path, "context.mode=history")


def test_the_estimated_maps_are_the_contexts_and_never_stale_or_non_finite(tmp_path):
    """The dynamics-map context's estimate; the prior for a vehicle that is new since the last rebuild, and for an
    environment whose map is not finite."""
    worker = make_worker(residual_map_config(tmp_path, "context.reconstruction=basis", "context.encoder=basis"))
    source, provider = worker.env.base.source, worker.provider
    assert isinstance(source, EstimatedMaps) and source.provider is provider
    prior = provider.reconstruction.prior.astype(np.float32)
    assert np.array_equal(source.maps(), np.broadcast_to(prior, (3, *prior.shape)))  # no samples yet
    fragment = worker.rollout(50)
    assert np.isfinite(fragment.action).all() and fragment.valid.all()
    learned = source.maps()
    assert np.abs(learned - prior).max(axis=(1, 2)).min() > 0.05  # every vehicle's map has moved off the prior
    provider.reset(np.array([1]))
    after = source.maps()
    assert np.array_equal(after[1], prior) and np.array_equal(after[[0, 2]], learned[[0, 2]])
    provider.reconstruction.poison(np.array([2]), np.nan)
    provider.rebuild()  # environment 2's map is NaN: zero context, history cleared, and its controller gets the prior
    assert provider.take_fallback_counts() == {"map_nonfinite": 1}
    assert np.array_equal(source.maps()[2], prior) and np.isfinite(source.maps()).all()
    assert np.abs(source.maps()[0] - prior).max() > 0.05 and np.abs(source.maps()[1] - prior).max() < 1e-6  # no samples


def test_residual_map_is_built_with_its_context_or_refused(tmp_path):
    config = residual_map_config(tmp_path, "context.mode=oracle")
    with pytest.raises(ValueError, match="residual_map reads the context's maps: build it with make_env_and_context"):
        make_env(config, seed=0)
    dims = probe_dimensions(config)
    assert (dims.obs_dim, dims.context_dim, dims.action_dim) == (34, 17, 1)


def test_a_checkpoint_of_a_residual_map_run_is_scored_on_its_map_controller(tmp_path):
    """``cluster.evaluate`` rebuilds the base controller: a policy whose mean action is 0.3 everywhere scores as the
    map controller on the true maps plus 0.5 · 0.3, driven directly."""
    config = residual_map_config(tmp_path, "context.mode=oracle", "learner.hidden_sizes=[16,16]")
    dims = probe_dimensions(config)
    actor = Actor(dims.policy_in, dims.action_dim, (16, 16))
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.copy_(torch.tensor([math.atanh(0.3), -5.0]))
    trained = evaluate_trained(config, actor.state_dict(), 3, seed=424242)
    env, _ = make_env_and_context(config, seed=424242)
    tanh = torch.tanh(torch.tensor([math.atanh(0.3)], dtype=torch.float32)).numpy()  # as the policy computes it
    known = env.action_low + (tanh + 1.0) * 0.5 * (env.action_high - env.action_low)
    direct = evaluate_policy(env, lambda obs: np.full((3, 1), known), 3, seed=424242, dt=config.env.vehicle.dt)
    assert trained.episode_returns == direct.episode_returns and trained.episode_errors == direct.episode_errors
    blind = evaluate_policy(make_env_and_context(config, 424242)[0], lambda obs: np.zeros((3, 1)), 3, seed=424242)
    assert blind.episode_returns != direct.episode_returns  # the correction is not lost on the way


def test_the_base_alone_is_a_zero_correction_with_the_context_reset_as_for_a_policy(tmp_path):
    """``cluster.evaluate``'s ``base`` on the estimated-map controller: exactly a trained policy whose mean action is
    0 (two episodes per env: the context is reset at the new vehicles)."""
    config = residual_map_config(tmp_path, "context.reconstruction=basis", "context.encoder=basis",
                                 "learner.hidden_sizes=[16,16]")  # fmt: skip
    dims = probe_dimensions(config)
    actor = Actor(dims.policy_in, dims.action_dim, (16, 16))
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.copy_(torch.tensor([0.0, -5.0]))
    zero_policy = evaluate_trained(config, actor.state_dict(), 6, seed=424242, num_envs=3)
    base = evaluate_base(config, 6, seed=424242, num_envs=3)
    assert base.episode_returns == zero_policy.episode_returns and base.episode_errors == zero_policy.episode_errors
    assert len(set(base.episode_returns)) == 6
