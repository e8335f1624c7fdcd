"""Config sections validated the way a YAML file is: the error a user would see."""

from __future__ import annotations

import pytest

from cluster.config import ConfigError, build


def error_of(section: type, **values) -> ConfigError:
    """The ``ConfigError`` that ``values`` for ``section`` give (keys relative to the section)."""
    with pytest.raises(ConfigError) as err:
        build(section, values, "test.yaml")
    return err.value
