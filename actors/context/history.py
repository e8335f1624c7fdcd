"""The history context: each environment's last few dynamics samples, the simplest peer of the dynamics map.

``context.mode: history`` hands the policy and critics the newest ``context.history_steps`` samples
``(u, v, a, theta)`` of each environment, newest first, normalized, zeros where the episode has fewer. The
networks do the encoding (the "history as input" baseline of adaptive control by RL). Where the map
aggregates every sample of the episode onto the (u, v) grid, this sees only the last seconds, raw.
"""

from __future__ import annotations

import numpy as np

from actors.context.config import ContextConfig

THETA_SCALE = 0.1
"""Grade in rad per unit of the normalized history (a 10 % grade is about 1)."""
FEATURES = 4


def normalized_samples(samples: np.ndarray, config: ContextConfig) -> np.ndarray:
    """``[n, 4]`` ``(u, v, a, theta)`` → ``u``, ``v / v_max``, ``a / accel_scale`` (clipped at ``accel_clip``),
    ``theta / THETA_SCALE``, float32."""
    u, v, a, theta = samples.T
    accel = np.clip(a, -config.accel_clip, config.accel_clip) / config.accel_scale
    return np.stack([u, v / config.v_max, accel, theta / THETA_SCALE], axis=1).astype(np.float32)


class HistoryContext:
    """The ``ContextProvider`` of ``context.mode: history``: a ring of the newest samples per environment."""

    def __init__(self, num_envs: int, config: ContextConfig) -> None:
        self.config = config
        self.steps = config.history_steps
        self.context_dim = FEATURES * self.steps
        self._history = np.zeros((num_envs, self.steps, FEATURES), np.float32)
        self._counts = {"nan": 0, "inf": 0}

    def reset(self, env_ids: np.ndarray) -> None:
        """New episodes (new vehicles) start with an empty history."""
        self._history[np.asarray(env_ids, dtype=np.int64).reshape(-1)] = 0.0

    def observe(self, samples: np.ndarray | None, present: np.ndarray | None = None) -> None:
        """Push each environment's samples of this step (all K rows of ``[n, K, 4]`` that are present, in order);
        a sample with a non-finite value says nothing: it is left out and counted by reason."""
        if samples is None:
            return
        rows = samples[:, None, :] if samples.ndim == 2 else samples
        mask = np.ones(rows.shape[:2], bool) if present is None else np.asarray(present, bool).reshape(rows.shape[:2])
        for k in range(rows.shape[1]):
            sample = rows[:, k, :]
            finite, nan = np.isfinite(sample).all(axis=1), np.isnan(sample).any(axis=1)
            self._counts["nan"] += int((mask[:, k] & nan).sum())
            self._counts["inf"] += int((mask[:, k] & ~finite & ~nan).sum())
            take = np.flatnonzero(mask[:, k] & finite)
            if take.size:
                self._history[take, 1:] = self._history[take, :-1]
                self._history[take, 0] = normalized_samples(sample[take], self.config)

    def context(self) -> np.ndarray:
        return self._history.reshape(len(self._history), -1).copy()

    def take_fallback_counts(self) -> dict[str, int]:
        counts = {reason: n for reason, n in self._counts.items() if n}
        self._counts = {"nan": 0, "inf": 0}
        return counts
