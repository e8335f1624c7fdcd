"""Validation at the actor: nothing non-finite enters replay, reaches the policy or reaches an environment."""

from __future__ import annotations

import numpy as np


def nonfinite_rows(array: np.ndarray) -> np.ndarray:
    """``[n]`` mask of the rows of ``array`` ``[n, ...]`` that hold a NaN or an infinity."""
    return ~np.isfinite(array).reshape(array.shape[0], -1).all(axis=1)


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


def sanitize_actions(action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace non-finite action rows by the middle of the range (0); returns the actions and the mask of replaced rows.

    The policy sees validated inputs and gated weights, so this only fires on an
    overflow inside the network; the environment must never be stepped with NaN.
    """
    bad = nonfinite_rows(action)
    if not bad.any():
        return action, bad
    fixed = action.copy()
    fixed[bad] = 0.0
    return fixed, bad


def valid_transitions(
    obs: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, bad_action: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of transitions safe to store; the others are dropped and counted by their first problem."""
    obs_ok = ~nonfinite_rows(obs) & ~nonfinite_rows(next_obs)
    action_ok = np.ones_like(obs_ok) if bad_action is None else ~bad_action
    reward_ok = np.isfinite(reward)
    return obs_ok & action_ok & reward_ok, {
        "obs_nonfinite": int((~obs_ok).sum()),
        "action_nonfinite": int((obs_ok & ~action_ok).sum()),
        "reward_nonfinite": int((obs_ok & action_ok & ~reward_ok).sum()),
    }


def add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for reason, count in more.items():
        total[reason] = total.get(reason, 0) + count
