"""Per-environment ring buffers of gravity-compensated dynamics samples, vectorized over environments."""

from __future__ import annotations

import numpy as np

GRAVITY = 9.80665
"""Standard gravity in m/s^2."""


def gravity_compensated(accel: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Flat-ground acceleration ``a + g sin(theta)``: uphill (theta > 0) slows the car by ``g sin(theta)``."""
    return np.asarray(accel, dtype=np.float64) + GRAVITY * np.sin(np.asarray(theta, dtype=np.float64))


def decay_weights(age_s: np.ndarray, decay_rate: float, min_weight: float) -> np.ndarray:
    """Sample weights ``max(min_weight, exp(-decay_rate * age))`` for ages in seconds."""
    return np.maximum(min_weight, np.exp(-decay_rate * np.asarray(age_s, dtype=np.float64)))


def is_floored(age_s: np.ndarray, decay_rate: float, min_weight: float) -> np.ndarray:
    """True where a sample's weight has reached the floor ``min_weight`` (same arithmetic as ``decay_weights``)."""
    return np.exp(-decay_rate * np.asarray(age_s, dtype=np.float64)) <= min_weight


def seq_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(seq [n, K], valid [n, K])``: ``lo <= seq < hi`` per row, padded to the longest row."""
    k = int(np.max(hi - lo, initial=0))
    seq = lo[:, None] + np.arange(k)[None, :]
    return seq, seq < hi[:, None]


class SampleBuffer:
    """The newest ``capacity`` samples ``(u, v, a_dyn, step)`` of each of ``num_envs`` environments.

    Samples of one environment carry sequence numbers 0, 1, ... since its last
    clear; sample ``seq`` lives in slot ``seq % slots``. ``slack`` extra slots keep
    samples that just left the window readable until the next rebuild, so an
    incremental reconstruction can take them out again.
    """

    def __init__(self, num_envs: int, capacity: int, slack: int = 0) -> None:
        if num_envs < 1 or capacity < 1 or slack < 0:
            raise ValueError(f"need num_envs >= 1, capacity >= 1, slack >= 0; got {num_envs}, {capacity}, {slack}")
        self.num_envs = num_envs
        self.capacity = capacity
        self.slots = capacity + slack
        self.data = np.zeros((num_envs, self.slots, 4))
        """``[n, slots, 4]`` columns ``(u, v, a_dyn, step)`` (steps are exact in float64)."""
        self.count = np.zeros(num_envs, dtype=np.int64)
        """Samples added to each environment since its last clear (the next sequence number)."""
        self._rows = np.arange(num_envs)

    u = property(lambda self: self.data[..., 0], doc="``[n, slots]`` commands.")
    v = property(lambda self: self.data[..., 1], doc="``[n, slots]`` measured speeds at step start.")
    a_dyn = property(lambda self: self.data[..., 2], doc="``[n, slots]`` gravity-compensated accelerations.")
    step = property(lambda self: self.data[..., 3], doc="``[n, slots]`` time stamps (observe-call index).")

    def add(self, u: np.ndarray, v: np.ndarray, a_dyn: np.ndarray, step: int, mask: np.ndarray | None = None) -> None:
        """Append one sample to every environment where ``mask`` (default: all) is true."""
        rows = self._rows if mask is None else self._rows[mask]
        slot = self.count[rows] % self.slots
        columns = [np.asarray(u)[rows], np.asarray(v)[rows], np.asarray(a_dyn)[rows], np.full(rows.size, float(step))]
        self.data[rows, slot] = np.stack(columns, axis=1)
        self.count[rows] += 1

    def clear(self, env_ids: np.ndarray) -> None:
        """Forget every sample of ``env_ids`` (a new vehicle)."""
        self.count[np.asarray(env_ids, dtype=np.int64)] = 0

    def window_start(self) -> np.ndarray:
        """``[n]`` sequence number of each environment's oldest sample in the window."""
        return np.maximum(self.count - self.capacity, 0)

    def take(self, seq: np.ndarray) -> np.ndarray:
        """``[n, K, 4]`` samples with sequence numbers ``seq [n, K]`` (which must still be held)."""
        return self.data[self._rows[:, None], seq % self.slots]

    def gather(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
        """Samples with ``lo <= seq < hi`` per environment, padded to a common length.

        Returns ``(seq, valid, u, v, a_dyn, step)``, each ``[n, K]``; padding has
        ``valid`` false. The range must still be held (``hi - lo <= slots``).
        """
        seq, valid = seq_range(lo, hi)
        got = self.take(seq)
        return seq, valid, got[..., 0], got[..., 1], got[..., 2], got[..., 3]

    def weights(self, now_step: int, dt: float, decay_rate: float, min_weight: float) -> np.ndarray:
        """``[n, slots]`` weight of each slot's sample at ``now_step`` (0 for empty slots and samples out of the window)."""
        age_s = (now_step - self.step) * dt
        w = decay_weights(age_s, decay_rate, min_weight)
        slot = np.arange(self.slots)[None, :]
        # seq of the sample in each slot: the newest seq congruent to slot (mod slots) below count.
        last = self.count[:, None] - 1
        seq = last - ((last - slot) % self.slots)
        held = (seq >= self.window_start()[:, None]) & (seq >= 0)
        return np.where(held, w, 0.0)
