"""The exploring driver, the visited-cell mask and the episode recorder (against hand-computed maps)."""

from __future__ import annotations

import numpy as np
import pytest

from actors.context.config import ContextConfig
from actors.context.encoders import PooledEncoder
from actors.context.exploration import ExploringPolicy, record_episode, rmse, visited_cells
from actors.context.provider import DynamicsMapContext
from actors.envs import VecStep

# 4 x 3 cells: u centres -0.75, -0.25, 0.25, 0.75; v centres 1, 3, 5 (v_max 6). No smoothing, no decay:
# every sample weighs 1 at its own cell only.
CONFIG = ContextConfig(
    mode="dynamics_map", context_dim=4, grid_u=4, grid_v=3, v_max=6.0, pool_grid=(2, 3),
    smoothing_sigma=(0.0, 0.0), decay_rate=0.0, capacity=2, prior_weight=2.0,
)  # fmt: skip


def provider(num_envs: int = 2) -> DynamicsMapContext:
    return DynamicsMapContext(num_envs, CONFIG, PooledEncoder(CONFIG))


def test_rmse_over_all_cells_and_over_a_mask() -> None:
    estimate, truth = np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((2, 2))
    assert rmse(estimate, truth) == pytest.approx(np.sqrt(30 / 4))
    assert rmse(estimate, truth, np.array([[True, False], [False, True]])) == pytest.approx(np.sqrt(17 / 2))


def test_without_noise_or_bursts_the_policy_is_its_clipped_base_controller() -> None:
    policy = ExploringPolicy(lambda obs: obs[:, 0] * 2.0, 3, seed=0, noise_std=0.0, burst_prob=0.0)
    u = policy(np.array([[0.2], [-0.3], [0.9]]))
    assert u.shape == (3, 1) and u.dtype == np.float32
    assert u[:, 0].tolist() == pytest.approx([0.4, -0.6, 1.0])


def test_a_burst_holds_one_random_command_for_its_length() -> None:
    """Bursts certain and exactly 3 steps long: calls 1-3 share one command, calls 4-6 the next one."""
    policy = ExploringPolicy(lambda obs: np.zeros(2), 2, seed=1, noise_std=0.0, burst_prob=1.0, burst_steps=(3, 4))
    u = np.stack([policy(np.zeros((2, 1)))[:, 0] for _ in range(6)])
    assert (u[:3] == u[0]).all() and (u[3:] == u[3]).all()
    assert (u[0] != u[3]).all() and np.abs(u).max() <= 1.0 and np.abs(u).min() > 0.0


def test_ornstein_uhlenbeck_noise_reaches_its_stationary_spread() -> None:
    """x <- (1 - theta) x + sigma e with sigma = std sqrt(2 theta): stationary std = sigma / sqrt(1 - (1 - theta)^2).

    std 0.25, theta 0.1: 0.25 sqrt(0.2 / 0.19) = 0.2565 (over 20 000 environments after 300 steps).
    """
    policy = ExploringPolicy(lambda obs: np.zeros(20_000), 20_000, seed=2, noise_std=0.25, burst_prob=0.0)
    for _ in range(300):
        u = policy(np.zeros((20_000, 1)))
    assert policy.noise.std() == pytest.approx(0.25 * np.sqrt(0.2 / 0.19), rel=0.02)
    assert abs(policy.noise.mean()) < 0.01
    np.testing.assert_allclose(u[:, 0], np.clip(policy.noise, -1, 1).astype(np.float32))


def test_visited_cells_holds_the_samples_in_the_window_only() -> None:
    """Capacity 2: env 0's first sample left the window; env 1's standstill and NaN samples were never stored."""
    ctx = provider()
    for samples in (
        [[-0.9, 1.0, 0.5, 0.0], [0.0, 0.1, 0.0, 0.0]],  # env 0: cell (0, 0); env 1: a car at standstill
        [[0.6, 5.0, 0.5, 0.0], [np.nan, 2.0, 0.5, 0.0]],  # env 0: cell (3, 2)
        [[-0.1, 3.5, 0.5, 0.0], [0.0, 2.9, 0.5, 0.0]],  # env 0: cell (1, 1); env 1: cell (2, 1)
    ):
        ctx.observe(np.array(samples))
    visited = visited_cells(ctx)
    assert visited.shape == (2, 4, 3) and visited.sum() == 3
    assert visited[0, 3, 2] and visited[0, 1, 1] and visited[1, 2, 1] and not visited[0, 0, 0]


class ConstantCar:
    """Two environments on flat ground at 3.5 m/s: a command u > 0 gives 2 m/s^2, else -1 m/s^2."""

    num_envs = 2

    def __init__(self) -> None:
        self.seeds: list[int] = []
        self.true_params = "params"

    def reset(self, seed: int) -> np.ndarray:
        self.seeds.append(seed)
        return np.zeros((2, 1), np.float32)

    def step(self, actions: np.ndarray) -> VecStep:
        u = actions[:, 0].astype(np.float64)
        samples = np.stack([u, np.full(2, 3.5), np.where(u > 0, 2.0, -1.0), np.zeros(2)], axis=1)
        obs = np.zeros((2, 1), np.float32)
        return VecStep(obs, obs, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), dynamics_samples=samples)

    def true_dynamics_map(self, u_grid: np.ndarray, v_grid: np.ndarray) -> np.ndarray:
        return np.broadcast_to(u_grid[:, None] + v_grid[None, :], (2, len(u_grid), len(v_grid))).copy()


def test_record_episode_snapshots_the_blended_map_after_1_and_3_samples() -> None:
    """k = 2, one cell: n samples held give confidence n / (n + 2) and map n a / (n + 2) over a zero prior.

    After 3 steps the window (capacity 2) holds 2 of them: confidence 0.5, map a / 2.
    """
    env, ctx = ConstantCar(), provider()
    ctx.observe(np.array([[-0.9, 1.0, 0.5, 0.0], [-0.9, 1.0, 0.5, 0.0]]))  # forgotten by the reset
    record = record_episode(env, ctx, lambda obs: np.array([[0.5], [-0.5]]), seed=11, snapshot_steps=(1, 3))
    assert env.seeds == [11] and record.true_params == "params"
    assert record.true_maps.shape == (2, 4, 3) and record.true_maps[0, 3, 2] == 0.75 + 5.0
    first, last = record.snapshots
    assert (first.step, last.step) == (1, 3)
    cell_0, cell_1 = (0, 3, 1), (1, 1, 1)  # u 0.5 -> cell 3, u -0.5 -> cell 1; v 3.5 -> cell 1
    assert (first.maps[cell_0], first.maps[cell_1]) == (pytest.approx(2 / 3), pytest.approx(-1 / 3))
    assert (last.maps[cell_0], last.maps[cell_1]) == (pytest.approx(1.0), pytest.approx(-0.5))
    assert last.confidence[cell_0] == pytest.approx(0.5) and last.confidence.sum() == pytest.approx(1.0)
    assert np.abs(last.maps).sum() == pytest.approx(1.5)  # the prior (zero) everywhere else
    np.testing.assert_allclose(last.normalized, last.maps / CONFIG.accel_scale, atol=1e-7)
    assert [s.visited.sum() for s in record.snapshots] == [2, 2]
    assert last.context.shape == (2, 4) and np.array_equal(last.context, ctx.context())  # step 3 is the last
    assert not np.array_equal(first.context, last.context)  # each snapshot holds its own step's context
