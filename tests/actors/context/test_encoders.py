"""Encoders: the pooled one keeps the (u, v) layout; the CNN one loads a weights-only checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.context.config import ContextConfig
from actors.context.encoders import (
    CnnEncoder,
    ConvMapEncoder,
    GridPool,
    PooledEncoder,
    encoder_checkpoint,
    orthonormal_projection,
)


def _encode(encoder, normalized: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    return encoder.project(encoder.features(np.stack([normalized, confidence], axis=1).astype(np.float32)))


def test_pooling_averages_blocks_in_place() -> None:
    maps = np.zeros((1, 100, 100), np.float32)
    maps[0, :50, 50:] = 1.0  # brake side, upper half of the speeds
    pooled = GridPool((100, 100), (2, 2))(maps)[0].numpy()
    np.testing.assert_allclose(pooled, [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    pooled8 = GridPool((100, 100), (8, 8))(maps)[0].numpy()
    assert pooled8.sum() == pytest.approx(16.0)  # 4 x 4 of the 8 x 8 bins are fully inside the block


def test_projection_has_orthonormal_columns_and_depends_on_seed_only() -> None:
    p = orthonormal_projection(128, 32, seed=0)
    np.testing.assert_allclose(p.T @ p, np.eye(32), atol=1e-12)
    np.testing.assert_array_equal(p, orthonormal_projection(128, 32, seed=0))
    assert np.abs(p - orthonormal_projection(128, 32, seed=1)).max() > 0.1
    wide = orthonormal_projection(8, 32, seed=0)
    np.testing.assert_allclose(wide @ wide.T, np.eye(8), atol=1e-12)


def test_pooled_encoder_keeps_spatial_layout() -> None:
    config = ContextConfig()
    encoder = PooledEncoder(config)
    conf = np.full((1, 100, 100), 0.5)
    base = np.zeros((1, 100, 100))
    # The same bump (+0.4 normalized, 2 m/s^2) in two different regions: brake at low speed, drive at high speed.
    bump_a, bump_b = base.copy(), base.copy()
    bump_a[0, 10:25, 0:25] = 0.4
    bump_b[0, 75:90, 75:100] = 0.4
    ctx = {name: _encode(encoder, m, conf)[0] for name, m in (("base", base), ("a", bump_a), ("b", bump_b))}
    # Same mass of change, different place: the contexts differ by about as much as each differs from the base.
    d_ab = np.linalg.norm(ctx["a"] - ctx["b"])
    d_a = np.linalg.norm(ctx["a"] - ctx["base"])
    assert d_a > 0.05 and d_ab > 0.5 * d_a, (d_a, d_ab)
    # Without data (deviation 0, confidence 0) the pooled context is exactly zero.
    assert np.abs(_encode(encoder, base, 0 * conf)).max() == 0.0


def _tiny_checkpoint(path, context_dim: int = 8) -> None:
    torch.manual_seed(0)
    model = ConvMapEncoder((20, 20), (4, 8), context_dim)
    torch.save(encoder_checkpoint(model, (20, 20), (4, 8), {"accel_scale": 5.0}), path)


def test_cnn_encoder_loads_weights_only_and_keeps_layout(tmp_path) -> None:
    path = tmp_path / "enc.pt"
    _tiny_checkpoint(path)
    config = ContextConfig(mode="dynamics_map", encoder="cnn", context_dim=8, encoder_checkpoint=str(path))
    encoder = CnnEncoder(config)
    assert not any(p.requires_grad for p in encoder.model.parameters())
    conf = np.ones((2, 100, 100))
    maps = np.zeros((2, 100, 100))
    maps[0, :20, :20] = 1.0
    maps[1, 80:, 80:] = 1.0
    out = _encode(encoder, maps, conf)
    assert out.shape == (2, 8) and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out[0] - out[1]).max() > 1e-3
    # The same checkpoint and inputs give bit-identical contexts.
    np.testing.assert_array_equal(out, _encode(CnnEncoder(config), maps, conf))


def test_cnn_encoder_rejects_a_mismatched_checkpoint(tmp_path) -> None:
    path = tmp_path / "enc.pt"
    _tiny_checkpoint(path, context_dim=8)
    with pytest.raises(ValueError, match="context_dim"):
        CnnEncoder(ContextConfig(context_dim=16), checkpoint=path)
    torch.save({"format": "something-else"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a"):
        CnnEncoder(ContextConfig(context_dim=8), checkpoint=tmp_path / "bad.pt")


def test_shipped_cnn_checkpoint_is_small_and_loads_weights_only() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "configs" / "encoders" / "cnn_encoder.pt"
    if not path.exists():
        pytest.skip("no shipped checkpoint")
    assert path.stat().st_size < 1_000_000
    config = ContextConfig(mode="dynamics_map", encoder="cnn", encoder_checkpoint=str(path))
    encoder = CnnEncoder(config)
    maps = np.zeros((3, 100, 100))
    maps[1, 50:, :30] = -0.3  # a weaker motor at low speed
    out = _encode(encoder, maps, np.ones_like(maps))
    assert out.shape == (3, 32) and np.isfinite(out).all() and np.abs(out[1] - out[0]).max() > 1e-2
