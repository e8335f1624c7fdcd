"""The ``learner`` and ``replay`` sections: the seed's values, ranges and keys."""

from __future__ import annotations

import pytest

from cluster.config import Config, build
from learner.config import LearnerConfig, ReplayConfig
from tests.config_errors import error_of


def test_defaults_are_the_seed_values():
    learner = Config().learner
    assert (learner.lr, learner.tau, learner.reward_scale, learner.max_grad_norm) == (3e-5, 0.005, 0.001, 5.0)
    assert (learner.gamma, learner.batch_size, learner.hidden_sizes) == (0.95, 256, (256, 256))
    assert Config().replay.capacity == 1_000_000


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": 1.0}, "lr"),
        ({"gamma": 1.0}, "gamma"),
        ({"tau": 0.0}, "tau"),
        ({"batch_size": 1}, "batch_size"),
        ({"reward_scale": 0.0}, "reward_scale"),
        ({"max_grad_norm": -5.0}, "max_grad_norm"),
        ({"hidden_sizes": []}, "hidden_sizes"),
        ({"hidden_sizes": [64, 0]}, "hidden_sizes[1]"),
        ({"block_updates": 0}, "block_updates"),
        ({"fast_path": "turbo"}, "fast_path"),
    ],
)
def test_bad_values_name_their_key(values: dict, key: str):
    assert error_of(LearnerConfig, **values).key == key


def test_boundaries_that_are_allowed():
    config = build(LearnerConfig, {"tau": 1, "target_entropy_scale": 0, "hidden_sizes": [8]}, "x.yaml")
    assert (config.tau, config.target_entropy_scale, config.hidden_sizes) == (1.0, 0.0, (8,))
    assert isinstance(config.tau, float)  # YAML's 1 becomes the float the field declares


def test_replay_holds_at_least_one_batch():
    assert error_of(ReplayConfig, capacity=0).key == "capacity"
    err = error_of(Config, learner={"batch_size": 64}, replay={"capacity": 63})
    assert (err.key, err.message) == ("replay.capacity", "must hold at least one batch (learner.batch_size=64)")
