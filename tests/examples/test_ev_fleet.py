"""examples/ev_fleet: a user's own environment feeding the dynamics map, end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from actors.context import DynamicsMapContext, PooledEncoder
from actors.gym_env import GymVectorEnv
from bench.context_probe import choose_alpha, fit_ridge, r2
from cluster.config import load_config
from cluster.local import run_local
from tests.conftest import ROOT
from tests.learner.helpers import SEED_TAGS, read_back

EXAMPLE = ROOT / "examples" / "ev_fleet"
ENV_ID = "fleet_env:FleetCar"


@pytest.fixture(autouse=True)
def example_on_path(monkeypatch):
    monkeypatch.setattr(sys, "path", [str(EXAMPLE), *sys.path])  # what PYTHONPATH=examples/ev_fleet does


def test_the_cars_physics_by_hand():
    from fleet_env import FleetCar

    car = FleetCar()
    car.reset(seed=0)
    car.motor_gain = 3.0
    # full drive at 10 m/s on the flat: 3 (1 - 10/35) - 0.0012 * 100
    assert car.accel(1.0, 10.0, 0.0) == pytest.approx(3.0 * (25 / 35) - 0.12)
    assert car.accel(-0.5, 10.0, 0.0) == pytest.approx(-3.0 - 0.12)  # brakes: 6 m/s² at full
    assert car.accel(-1.0, 0.0, 0.0) == 0.0  # a car at rest is held, not pushed backwards
    assert car.accel(0.0, 0.0, 0.05) == pytest.approx(-9.80665 * np.sin(0.05))


def contexts(num_cars: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """End-of-episode contexts of ``num_cars`` cars driven by random held commands, and their motor gains."""
    config = load_config(EXAMPLE / "config.yaml").context
    env = GymVectorEnv(ENV_ID, num_cars)
    provider = DynamicsMapContext(num_cars, config, PooledEncoder(config), None, env.dt)
    obs, rng = env.reset(seed), np.random.default_rng(seed)
    gains = np.array([e.unwrapped.motor_gain for e in env.envs.envs])
    command, hold = np.zeros(num_cars), np.zeros(num_cars, int)
    for _ in range(299):  # one episode but its last step (the next one resets to a new car)
        new = hold <= 0
        command = np.where(new, rng.uniform(-1, 1, num_cars), command)
        hold = np.where(new, rng.integers(5, 20, num_cars), hold - 1)
        action = np.where(obs[:, 0] * 20 > 27, -0.5, command)  # brake near the top of the map's speed axis
        step = env.step(action.reshape(-1, 1).astype(np.float32))
        provider.observe(step.dynamics_samples, step.dynamics_present)
        obs = step.obs
    provider.rebuild()
    assert provider.take_fallback_counts() == {}
    return provider.context(), gains


def test_a_ridge_probe_on_16_held_out_cars_recovers_their_motor_gain():
    """The context carries the parameter the cars differ in (48 cars to fit, 16 others to score)."""
    x_train, y_train = contexts(48, seed=1)
    x_test, y_test = contexts(16, seed=1001)
    assert np.ptp(y_test) > 1.5  # the held-out cars span the range
    alpha = choose_alpha(x_train, y_train)
    assert r2(y_test, fit_ridge(x_train, y_train, alpha)(x_test)) >= 0.7  # 0.97 measured


def test_the_example_trains_a_few_hundred_steps_with_the_map(tmp_path):
    config = load_config(EXAMPLE / "config.yaml", [
        "cluster.mode=local", f"train.run_dir={tmp_path}", "train.total_env_steps=400", "train.warmup_steps=200",
        "metrics.enabled=false", "learner.hidden_sizes=[32,32]", "learner.batch_size=64",
        "metrics.tensorboard_every_updates=50"])  # fmt: skip
    summary = run_local(config)
    assert summary["exit_code"] == 0 and summary["env_steps"] == 400 and summary["updates"] == 200  # 2 fragments
    assert sum(summary["context_fallbacks"].values()) == sum(summary["transitions_rejected"].values()) == 0
    saved = json.loads((tmp_path / "final_stats.json").read_text())
    assert saved["env_steps"] == 400
    assert set(read_back(tmp_path / "tensorboard")) >= SEED_TAGS
