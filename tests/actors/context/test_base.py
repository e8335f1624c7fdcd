"""``NoContext`` (``context.mode: none``): an empty context of the right row count, nothing to observe or count."""

from __future__ import annotations

import numpy as np

from actors.context.base import ContextProvider, NoContext


def test_no_context_gives_zero_width_float32_rows_for_every_environment() -> None:
    provider: ContextProvider = NoContext(5)
    ctx = provider.context()
    assert provider.context_dim == 0 and ctx.shape == (5, 0) and ctx.dtype == np.float32
    assert np.concatenate([np.ones((5, 3), np.float32), ctx], axis=-1).shape == (5, 3)  # the obs alone


def test_no_context_ignores_samples_and_resets_and_never_falls_back() -> None:
    provider = NoContext(2)
    provider.observe(np.full((2, 4), np.nan))
    provider.observe(None)
    provider.reset(np.array([1]))
    assert provider.context().shape == (2, 0)
    assert provider.take_fallback_counts() == {}
