"""The oracle context: each vehicle's true parameters, normalized. It bounds what any context can give.

A study arm, not something a real vehicle offers: ``context.mode: oracle`` (vehicle environment only)
hands the policy and critics the drawn parameters of the vehicle each environment drives, each mapped
to [-1, 1] over its randomization range (log-uniform ranges in log space): the spec's 17, and the actuation
delay when it is randomized.
"""

from __future__ import annotations

import numpy as np

from actors.vehicle.config import RandomizationConfig
from actors.vehicle.env import VehicleVectorEnv
from actors.vehicle.params import LOG_UNIFORM, PARAM_NAMES, VehicleParams, randomized


def oracle_params(ranges: RandomizationConfig) -> tuple[str, ...]:
    """The parameters the oracle shows: all but an added one that is not randomized (the spec's task keeps 17)."""
    return tuple(name for name in PARAM_NAMES if randomized(name, ranges))


def normalized_params(params: VehicleParams, ranges: RandomizationConfig) -> np.ndarray:
    """``[n, len(oracle_params(ranges))]`` float32: each parameter at -1 at the low end of its range, +1 at the high end."""
    columns = []
    for name in oracle_params(ranges):
        low, high = getattr(ranges, name)
        value = getattr(params, name)
        if name in LOG_UNIFORM:
            low, high, value = np.log(low), np.log(high), np.log(value)
        span = high - low
        columns.append(np.zeros_like(value) if span == 0 else 2.0 * (value - low) / span - 1.0)
    return np.stack(columns, axis=1).astype(np.float32)


class OracleContext:
    """The ``ContextProvider`` of ``context.mode: oracle``: reads the environment's current vehicles."""

    def __init__(self, env: VehicleVectorEnv, ranges: RandomizationConfig) -> None:
        self.env, self.ranges = env, ranges
        self.context_dim = len(oracle_params(ranges))
        self._context = np.zeros((env.num_envs, self.context_dim), np.float32)

    def reset(self, env_ids: np.ndarray) -> None:
        """The environments ``env_ids`` drive new vehicles (the env reset them): read their parameters."""
        ids = np.asarray(env_ids, dtype=np.int64).reshape(-1)
        if ids.size:
            self._context[ids] = normalized_params(self.env.true_params, self.ranges)[ids]

    def observe(self, samples: np.ndarray | None, present: np.ndarray | None = None) -> None:
        pass  # the oracle needs no data

    def context(self) -> np.ndarray:
        return self._context.copy()

    def take_fallback_counts(self) -> dict[str, int]:
        return {}
