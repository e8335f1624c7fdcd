"""The context-provider interface and the empty context."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ContextProvider(Protocol):
    """A context vector per environment, built from the environment's dynamics samples.

    The rollout worker calls, every step: ``observe(samples)`` with the step's
    samples of all environments, then ``context()`` (the context for t+1 of the
    transition just made), then ``reset(ids)`` for environments whose episode
    ended, then ``context()`` again for the next observation. ``context()`` is
    cheap: it returns cached rows; rebuilding happens in ``observe`` (every
    ``update_every`` steps, all environments in one batched call) and ``reset``.
    Non-finite maps or encodings become zero rows and are counted by reason.
    """

    context_dim: int

    def reset(self, env_ids: np.ndarray) -> None: ...

    def observe(self, samples: np.ndarray | None, present: np.ndarray | None = None) -> None:
        """The step's samples: ``[n, 4]``, or ``[n, K, 4]`` with ``present [n, K]`` (``VecStep``'s fields)."""
        ...

    def context(self) -> np.ndarray: ...

    def take_fallback_counts(self) -> dict[str, int]:
        """Fallbacks by reason since the last call (then reset to zero)."""
        ...


def policy_context_dim(provider: ContextProvider) -> int:
    """The leading context values the policy sees (all of them, unless a part is for the critic only)."""
    return getattr(provider, "policy_context_dim", provider.context_dim)


class NoContext:
    """``context.mode: none``: the policy sees the observation alone."""

    context_dim = 0

    def __init__(self, num_envs: int) -> None:
        self._empty = np.zeros((num_envs, 0), dtype=np.float32)

    def reset(self, env_ids: np.ndarray) -> None:
        pass

    def observe(self, samples: np.ndarray | None, present: np.ndarray | None = None) -> None:
        pass

    def context(self) -> np.ndarray:
        return self._empty

    def take_fallback_counts(self) -> dict[str, int]:
        return {}
