"""Validation before a transition leaves an actor: nothing non-finite enters replay."""

from __future__ import annotations

import numpy as np


def sanitize_contexts(context: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Zero every context row holding NaN (reason ``nan``) or ±Inf (reason ``inf``).

    ``rows`` restricts the check to those row indices. Returns a float32 copy
    and the fallback counts by reason.
    """
    fixed = np.array(context, dtype=np.float32, copy=True)
    view = fixed if rows is None else fixed[rows]
    has_nan = np.isnan(view).any(axis=-1)
    has_inf = np.isinf(view).any(axis=-1) & ~has_nan
    bad = has_nan | has_inf
    if bad.any():
        target = np.flatnonzero(bad) if rows is None else np.asarray(rows)[bad]
        fixed[target] = 0.0
    return fixed, {"nan": int(has_nan.sum()), "inf": int(has_inf.sum())}


def valid_transitions(obs: np.ndarray, next_obs: np.ndarray, reward: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of transitions safe to store; non-finite observations or rewards are dropped and counted."""
    obs_ok = np.isfinite(obs).all(axis=-1) & np.isfinite(next_obs).all(axis=-1)
    reward_ok = np.isfinite(reward)
    return obs_ok & reward_ok, {
        "obs_nonfinite": int((~obs_ok).sum()),
        "reward_nonfinite": int((obs_ok & ~reward_ok).sum()),
    }


def add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for reason, count in more.items():
        total[reason] = total.get(reason, 0) + count
