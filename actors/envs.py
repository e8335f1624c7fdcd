"""The vectorized-environment interface the rollout worker steps.

Every environment (the vehicle environment, gymnasium adapters) presents
``num_envs`` copies stepped together with numpy arrays and resets finished
copies itself. ``VecStep.final_obs`` keeps the true next observation of a
finished episode; ``VecStep.obs`` is what the policy acts on next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class VecStep:
    """One step of ``num_envs`` environments."""

    obs: np.ndarray
    """``[n, obs_dim]`` observation to act on next (the reset observation where an episode ended)."""
    final_obs: np.ndarray
    """``[n, obs_dim]`` true next observation of this transition (never the reset one)."""
    reward: np.ndarray
    """``[n]`` unscaled reward."""
    terminated: np.ndarray
    """``[n]`` bool: a terminal state (no bootstrap)."""
    truncated: np.ndarray
    """``[n]`` bool: a time limit (bootstrap through it)."""
    dynamics_samples: np.ndarray | None = None
    """``[n, 4]`` ``(u, v_meas at step start, a_meas, theta_meas)``, one per environment, or ``[n, K, 4]`` with
    ``dynamics_present``; ``None`` when the env has none."""
    speed_error: np.ndarray | None = None
    """``[n]`` |v - v_ref| of this step (vehicle environment), for episode summaries."""
    dynamics_present: np.ndarray | None = None
    """``[n, K]`` bool: which of the K sample rows each environment reported (``None``: all of them)."""
    applied_action: np.ndarray | None = None
    """``[n, action_dim]`` the command the env applied (clipped; for a residual policy the PID's plus the
    correction), which comfort figures measure; ``None``: the action as given."""


def to_env_units(action: np.ndarray, env: VectorEnv) -> np.ndarray:
    """A policy's action in [-1, 1] mapped onto the environment's box ``[action_low, action_high]``."""
    return env.action_low + (action + 1.0) * 0.5 * (env.action_high - env.action_low)


class VectorEnv(Protocol):
    """``num_envs`` environments stepped together; finished ones reset themselves."""

    num_envs: int
    observation_dim: int
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray

    def reset(self, seed: int) -> np.ndarray:
        """Reset all copies from ``seed``; returns ``[n, obs_dim]``."""
        ...

    def step(self, actions: np.ndarray) -> VecStep:
        """Step all copies with ``actions`` of shape ``[n, action_dim]`` in env units."""
        ...

    def reset_envs(self, env_ids: np.ndarray) -> np.ndarray:
        """Start a new episode in copies ``env_ids`` only (e.g. after a non-finite observation); returns their rows."""
        ...
