"""The actor's guards: non-finite rows found, contexts zeroed and actions replaced, transitions dropped by reason."""

import numpy as np

from actors.guards import add_counts, nonfinite_rows, sanitize_actions, sanitize_contexts, valid_transitions


def test_guard_functions_count_by_reason():
    ctx = np.array([[1, np.nan], [np.inf, 1], [np.nan, np.inf], [2, 2]], np.float32)
    fixed, counts = sanitize_contexts(ctx)
    assert counts == {"nan": 2, "inf": 1}
    assert fixed.tolist() == [[0, 0], [0, 0], [0, 0], [2, 2]]
    obs = np.zeros((3, 2))
    next_obs = np.array([[0, 0], [np.inf, 0], [0, 0]])
    mask, dropped = valid_transitions(obs, next_obs, np.array([1.0, 1.0, np.nan]))
    assert mask.tolist() == [True, False, False]
    assert dropped == {"obs_nonfinite": 1, "action_nonfinite": 0, "reward_nonfinite": 1}
    mask, dropped = valid_transitions(obs, next_obs, np.array([1.0, 1.0, np.nan]), np.array([True, False, True]))
    assert mask.tolist() == [False, False, False]
    assert dropped == {"obs_nonfinite": 1, "action_nonfinite": 2, "reward_nonfinite": 0}  # first problem counts


def test_nonfinite_rows_looks_at_every_trailing_element():
    """A row of a ``[n, 2, 2]`` array is flagged by one NaN or ±Inf anywhere in it."""
    array = np.zeros((4, 2, 2))
    array[1, 1, 1] = np.nan
    array[2, 0, 1] = -np.inf
    array[3] = 1e308  # huge but finite
    assert nonfinite_rows(array).tolist() == [False, True, True, False]


def test_sanitize_contexts_checks_only_the_named_rows_and_leaves_its_input_alone():
    ctx = np.array([[np.nan, 1.0], [np.inf, 2.0], [3.0, -np.inf]])
    fixed, counts = sanitize_contexts(ctx, rows=np.array([1, 2]))
    assert counts == {"nan": 0, "inf": 2}
    assert fixed.dtype == np.float32
    assert np.isnan(fixed[0, 0]) and fixed[0, 1] == 1.0  # row 0 was not asked about
    assert fixed[1:].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert np.isinf(ctx[1, 0]) and ctx[2, 0] == 3.0  # a copy was fixed, not the caller's array


def test_sanitize_actions_zeroes_bad_rows_in_a_copy_and_passes_finite_actions_through():
    finite = np.array([[0.5], [-0.25]], np.float32)
    same, bad = sanitize_actions(finite)
    assert same is finite and bad.tolist() == [False, False]
    actions = np.array([[0.5, np.nan], [-0.25, 0.75], [np.inf, 0.1]], np.float32)
    fixed, bad = sanitize_actions(actions)
    assert bad.tolist() == [True, False, True]
    assert fixed.tolist() == [[0.0, 0.0], [-0.25, 0.75], [0.0, 0.0]]  # the middle of [-1, 1], the whole row
    assert np.isnan(actions[0, 1])


def test_add_counts_sums_known_reasons_and_adds_new_ones():
    total = {"nan": 2, "inf": 0}
    add_counts(total, {"nan": 3, "map_nonfinite": 1})
    add_counts(total, {"inf": 4})
    assert total == {"nan": 5, "inf": 4, "map_nonfinite": 1}
