"""The map grid: cell centres and indices, the zero-command split, smoothing and pooling matrices."""

from __future__ import annotations

import numpy as np
import pytest

from actors.context.config import ContextConfig
from actors.context.grid import (
    cell_centers,
    cell_index,
    gaussian_matrix,
    pooling_matrix,
    smoothing_matrices,
    zero_command_split,
)


def test_cell_centers_hand_computed_and_indexed_back_to_their_cells() -> None:
    config = ContextConfig(grid_u=4, grid_v=3, v_max=6.0, pool_grid=(2, 3))
    u_grid, v_grid = cell_centers(config)
    assert u_grid.tolist() == [-0.75, -0.25, 0.25, 0.75] and v_grid.tolist() == [1.0, 3.0, 5.0]
    iu, iv = cell_index(u_grid, np.resize(v_grid, 4), config)
    assert iu.tolist() == [0, 1, 2, 3] and iv.tolist() == [0, 1, 2, 0]


def test_cell_index_clips_values_outside_the_grid_to_its_edge_cells() -> None:
    """The default 100 x 100 grid: u in [-1, 1], v in [0, 30] m/s."""
    iu, iv = cell_index(
        np.array([-5.0, -1.0, 0.0, 0.999, 2.0]), np.array([-1.0, 0.0, 15.0, 29.99, 99.0]), ContextConfig()
    )
    assert iu.tolist() == [0, 0, 50, 99, 99] and iv.tolist() == [0, 0, 50, 99, 99]


@pytest.mark.parametrize(("grid_u", "split"), [(4, 2), (5, 3), (100, 50)])
def test_zero_command_split_is_the_first_cell_centred_above_zero(grid_u: int, split: int) -> None:
    """With 5 cells the middle one is centred on u = 0 exactly: it stays on the brake side."""
    assert zero_command_split(ContextConfig(grid_u=grid_u, pool_grid=(2, 2))) == split


def test_gaussian_matrix_with_sigma_zero_is_the_identity_and_otherwise_symmetric_with_peak_one() -> None:
    np.testing.assert_array_equal(gaussian_matrix(4, 0.0), np.eye(4))
    g = gaussian_matrix(5, 2.0)
    np.testing.assert_array_equal(g, g.T)
    assert np.diag(g).tolist() == [1.0] * 5 and g[0, 4] == pytest.approx(np.exp(-2.0))


def test_gaussian_matrix_with_a_split_has_no_weight_across_it() -> None:
    g = gaussian_matrix(6, 1.0, split=3)
    assert g[2, 3] == 0.0 and g[3, 3] == 1.0 and g[2, 1] == pytest.approx(np.exp(-0.5))


def test_pooling_bins_are_as_even_as_the_size_allows() -> None:
    """10 cells in 3 bins: edges round(0, 3.33, 6.67, 10) = 0, 3, 7, 10, so bins of 3, 4 and 3 cells."""
    p = pooling_matrix(10, 3)
    assert p.shape == (3, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)  # each bin a mean
    assert (p > 0).sum(axis=0).tolist() == [1] * 10  # every cell in exactly one bin
    assert (p > 0).sum(axis=1).tolist() == [3, 4, 3]
    assert p[1, 3:7].tolist() == [0.25] * 4 and p[0, 3] == 0.0


def test_smoothing_matrices_split_at_zero_command_only_along_u() -> None:
    config = ContextConfig(grid_u=6, grid_v=4, smoothing_sigma=(1.0, 0.0), split_at_zero_command=True, pool_grid=(2, 2))
    g_u, g_v = smoothing_matrices(config)
    assert g_u.shape == (6, 6) and g_v.tolist() == np.eye(4).tolist()
    assert g_u[2, 3] == 0.0 and g_u[1, 2] == pytest.approx(np.exp(-0.5))  # cells 0-2 brake, 3-5 drive
    unsplit, _ = smoothing_matrices(ContextConfig(grid_u=6, grid_v=4, smoothing_sigma=(1.0, 0.0), pool_grid=(2, 2)))
    assert unsplit[2, 3] == pytest.approx(np.exp(-0.5))
