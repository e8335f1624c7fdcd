"""The ``context`` config section: defaults, range checks, strict loading through the root config."""

from __future__ import annotations

import pytest

from actors.context.config import ContextConfig
from cluster.config import Config, ConfigError, build
from tests.config_errors import error_of


def test_defaults_match_the_spec() -> None:
    c = Config().context
    assert (c.mode, c.encoder, c.context_dim, c.grid_u, c.grid_v, c.v_max) == ("none", "pooled", 32, 100, 100, 30.0)
    assert (c.decay_rate, c.min_weight, c.capacity, c.update_every) == (0.3, 0.3, 2048, 10)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"context_dim": 0}, "context_dim"),
        ({"min_weight": 1.5}, "min_weight"),
        ({"decay_rate": -0.1}, "decay_rate"),
        ({"capacity": 0}, "capacity"),
        ({"update_every": 0}, "update_every"),
        ({"smoothing_sigma": (-1.0, 2.0)}, "smoothing_sigma[0]"),
        ({"prior_weight": 0.0}, "prior_weight"),
        ({"pool_grid": (200, 8)}, "pool_grid"),
        ({"mode": "dynamics_map", "encoder": "cnn"}, "encoder_checkpoint"),
    ],
)
def test_bad_values_name_their_key(kwargs: dict, key: str) -> None:
    assert error_of(ContextConfig, **kwargs).key == key


def test_yaml_section_is_strict() -> None:
    cfg = build(
        Config, {"context": {"mode": "dynamics_map", "smoothing_sigma": [3, 5], "decay_rate": "3e-1"}}, "x.yaml"
    )
    assert cfg.context.smoothing_sigma == (3.0, 5.0) and cfg.context.decay_rate == 0.3
    with pytest.raises(ConfigError, match="context.grid_w"):
        build(Config, {"context": {"grid_w": 3}}, "x.yaml")
    with pytest.raises(ConfigError, match="context.mode"):
        build(Config, {"context": {"mode": "maps"}}, "x.yaml")
