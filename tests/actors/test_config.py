"""The ``env`` and ``rollout`` sections: defaults, ranges and keys."""

from __future__ import annotations

from actors.config import EnvConfig, RolloutConfig
from actors.vehicle.config import VehicleConfig
from cluster.config import Config, build
from tests.config_errors import error_of


def test_defaults():
    config = Config()
    assert (config.env.kind, config.env.id, config.env.num_envs, config.env.kwargs) == ("gymnasium", "Pendulum-v1", 4, {})
    assert config.env.vehicle == VehicleConfig() and config.rollout.steps_per_fragment == 64


def test_ranges_name_their_key():
    assert error_of(EnvConfig, num_envs=0).key == "num_envs"
    assert error_of(EnvConfig, id="").key == "id"
    assert error_of(EnvConfig, kind="atari").message == "Input should be 'gymnasium' or 'vehicle' (got 'atari')"
    assert error_of(RolloutConfig, steps_per_fragment=0).key == "steps_per_fragment"


def test_env_kwargs_pass_through_untouched():
    """They belong to the user's environment: any keys, any YAML values."""
    env = build(Config, {"env": {"kwargs": {"g": 9.81, "render_mode": None, "nested": {"a": [1, 2]}}}}, "x.yaml").env
    assert env.kwargs == {"g": 9.81, "render_mode": None, "nested": {"a": [1, 2]}}
