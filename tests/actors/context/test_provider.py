"""DynamicsMapContext: the ContextProvider contract, validation with zero fallback, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from actors.context.base import ContextProvider
from actors.context.config import ContextConfig
from actors.context.encoders import PooledEncoder
from actors.context.grid import cell_centers
from actors.context.provider import DynamicsMapContext
from learner.types import CONTEXT_FALLBACK_REASONS

from .helpers import sample_stream, synthetic_accel, synthetic_map

N = 6


def _provider(config: ContextConfig | None = None, **kwargs) -> DynamicsMapContext:
    config = config or ContextConfig(mode="dynamics_map")
    return DynamicsMapContext(N, config, PooledEncoder(config), **kwargs)


def _run(provider: DynamicsMapContext, stream: np.ndarray) -> np.ndarray:
    out = []
    for samples in stream:
        provider.observe(samples)
        out.append(provider.context())
    return np.stack(out)


def test_satisfies_the_protocol_and_starts_at_zero() -> None:
    provider: ContextProvider = _provider()
    ctx = provider.context()
    assert provider.context_dim == 32 and ctx.shape == (N, 32) and ctx.dtype == np.float32
    assert np.abs(ctx).max() == 0.0  # pooled context without data is exactly zero
    assert provider.take_fallback_counts() == {}


def test_context_changes_only_at_rebuilds() -> None:
    provider = _provider()
    ctx = _run(provider, sample_stream(np.random.default_rng(0), N, 30))
    changed = [t for t in range(1, 30) if np.abs(ctx[t] - ctx[t - 1]).max() > 0]
    assert changed == [9, 19, 29]  # update_every = 10: after the 10th, 20th and 30th samples
    assert np.abs(ctx[9]).max() > 0.01


@pytest.mark.parametrize(("bad", "reason"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "inf")])
@pytest.mark.parametrize("column", [0, 1, 2, 3])
def test_nonfinite_samples_give_zero_context_and_are_counted(bad: float, reason: str, column: int) -> None:
    provider = _provider()
    stream = sample_stream(np.random.default_rng(1), N, 25)
    stream[14, 2, column] = bad  # env 2, step 14
    stream[14, 4, :] = bad  # env 4: every field
    ctx = _run(provider, stream)
    assert np.isfinite(ctx).all()
    # Zero for env 2 and 4 from the bad step until the next rebuild (after step 19), the others untouched.
    assert np.abs(ctx[14:19, [2, 4]]).max() == 0.0 and np.abs(ctx[19:, [2, 4]]).min(axis=-1).max() >= 0
    assert np.abs(ctx[19:, 2]).max() > 0.01
    assert np.abs(ctx[14:19, [0, 1, 3, 5]]).min(axis=-1).max() > 0
    assert provider.take_fallback_counts() == {reason: 2}
    assert provider.take_fallback_counts() == {}
    assert provider.buffer.count.tolist() == [25, 25, 24, 25, 24, 25]  # the bad samples were dropped


def test_nonfinite_map_gives_zero_context_and_restarts_the_history() -> None:
    provider = _provider()
    stream = sample_stream(np.random.default_rng(2), N, 40)
    _run(provider, stream[:20])
    provider.reconstruction.poison(np.array([1]), np.nan)
    provider.reconstruction.poison(np.array([3]), np.inf)
    ctx = _run(provider, stream[20:30])
    assert np.isfinite(ctx).all()
    assert np.abs(ctx[-1, [1, 3]]).max() == 0.0 and np.abs(ctx[-1, [0, 2, 4, 5]]).min(axis=-1).max() > 0
    assert provider.take_fallback_counts() == {"map_nonfinite": 2}
    assert provider.buffer.count[[1, 3]].tolist() == [0, 0]
    # The next rebuild works from the fresh history again: finite, non-zero, no new fallback.
    ctx = _run(provider, stream[30:40])
    assert np.abs(ctx[-1, [1, 3]]).max() > 0.01 and provider.take_fallback_counts() == {}


class _BrokenEncoder(PooledEncoder):
    """Gives NaN for env 0 and inf for env 5 once armed."""

    armed = False

    def project(self, features: np.ndarray) -> np.ndarray:
        out = super().project(features)
        if self.armed:
            out[0, 3] = np.nan
            out[5, 0] = np.inf
        return out


def test_nonfinite_encoding_gives_zero_context_and_is_counted() -> None:
    config = ContextConfig(mode="dynamics_map")
    encoder = _BrokenEncoder(config)
    provider = DynamicsMapContext(N, config, encoder)
    stream = sample_stream(np.random.default_rng(3), N, 20)
    _run(provider, stream[:10])
    encoder.armed = True
    ctx = _run(provider, stream[10:])
    assert np.isfinite(ctx).all() and np.abs(ctx[-1, [0, 5]]).max() == 0.0
    assert np.abs(ctx[-1, 1:5]).min(axis=-1).max() > 0
    counts = provider.take_fallback_counts()
    assert counts == {"encoder_nonfinite": 2} and set(counts) <= set(CONTEXT_FALLBACK_REASONS)


def test_identical_histories_give_identical_contexts() -> None:
    stream = sample_stream(np.random.default_rng(4), N, 300)
    runs = []
    for _ in range(2):
        provider = _provider()
        part1 = _run(provider, stream[:150])
        provider.reset(np.array([2]))
        runs.append(np.concatenate([part1, _run(provider, stream[150:])]))
    np.testing.assert_array_equal(runs[0], runs[1])
    # Same samples in another environment slot give the same row.
    swapped = stream.copy()
    swapped[:, [0, 1]] = stream[:, [1, 0]]
    other = _run(_provider(), swapped)
    np.testing.assert_array_equal(other[-1, 0], _run(_provider(), stream)[-1, 1])


def test_reset_gives_the_empty_context_and_forgets_the_vehicle() -> None:
    config = ContextConfig(mode="dynamics_map")
    prior = synthetic_map(config)
    provider = _provider(config, prior_map=prior)
    _run(provider, sample_stream(np.random.default_rng(5), N, 50, drive=2.0))
    provider.reset(np.array([0, 3]))
    ctx = provider.context()
    assert np.abs(ctx[[0, 3]]).max() == 0.0 and np.abs(ctx[[1, 2]]).min(axis=-1).max() > 0
    provider.rebuild()
    maps = provider.current_maps()
    np.testing.assert_allclose(maps[0], prior, atol=1e-5)  # no data: exactly the prior
    assert np.abs(maps[1] - prior).max() > 0.1


def test_maps_follow_the_data_where_it_is_and_the_prior_elsewhere() -> None:
    config = ContextConfig(mode="dynamics_map", decay_rate=0.0, min_weight=1.0, smoothing_sigma=(4.0, 4.0))
    truth = synthetic_map(config, drive=2.5)
    prior = synthetic_map(config)  # drive 4.0: the population thinks motors are stronger
    provider = _provider(config, prior_map=prior)
    rng = np.random.default_rng(6)
    u, v = rng.uniform(0.0, 0.5, (2000, N)), rng.uniform(0, 30, (2000, N))  # only drive commands up to u = 0.5
    a = synthetic_accel(u, v, drive=2.5) + 0.3 * rng.standard_normal(u.shape)
    stream = np.stack([u, v, a, np.zeros_like(u)], axis=-1)
    _run(provider, stream)
    est = provider.current_maps()[0]
    u_grid, _ = cell_centers(config)
    seen, unseen = (u_grid > 0.05) & (u_grid < 0.45), u_grid > 0.85
    err = lambda sel: float(np.sqrt(np.mean((est[sel] - truth[sel]) ** 2)))  # noqa: E731
    prior_err = lambda sel: float(np.sqrt(np.mean((prior[sel] - truth[sel]) ** 2)))  # noqa: E731
    assert err(seen) < 0.3 * prior_err(seen), (err(seen), prior_err(seen))
    assert err(unseen) == pytest.approx(prior_err(unseen), rel=0.05)  # no data there: the prior
    conf = provider.current_confidence()[0]
    assert conf[seen].min() > 0.9 and conf[unseen].max() < 0.05


def test_wrong_sample_shape_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        _provider().observe(np.zeros((N + 1, 4)))


def test_several_samples_a_step_equal_the_same_samples_one_a_step() -> None:
    """``[n, K, 4]`` with a presence mask: the K samples enter the buffer as K one-a-step samples would,
    with the step's time stamp; absent rows are neither data nor faults."""
    stream = sample_stream(np.random.default_rng(5), N, 20)
    packed, one_by_one = _provider(), _provider()
    present = np.array([[True, True], [True, False]] * (N // 2))  # odd envs report only the first of each pair
    for t in range(0, 20, 2):
        packed.observe(np.stack([stream[t], stream[t + 1]], axis=1), present)
        one_by_one._step += 1  # the same time stamp for both samples of a step
        one_by_one._add(stream[t])
        one_by_one._add(stream[t + 1], present[:, 1])
    assert packed.buffer.count.tolist() == one_by_one.buffer.count.tolist()
    assert np.array_equal(packed.buffer.data, one_by_one.buffer.data)
    packed.rebuild(), one_by_one.rebuild()
    assert np.array_equal(packed.context(), one_by_one.context())
    packed.take_fallback_counts()
    present_bad = np.zeros((N, 2), bool)
    present_bad[1, 0] = True
    packed.observe(np.full((N, 2, 4), np.nan), present_bad)
    assert packed.take_fallback_counts() == {"nan": 1}  # only the present NaN row counts, only env 1 faults
    assert packed.context()[0].any() and not packed.context()[1].any()
