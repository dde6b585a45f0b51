"""Pixel <-> cell convention of nclr_core.models.feature_grid."""
import numpy as np
import pytest
import torch

from nclr_core.models.feature_grid import cell_centers, pixel_to_cell


def test_cell_centers_stride4_layout() -> None:
    centers = cell_centers(2, 3, 4)
    assert centers.shape == (6, 2)
    expected = torch.tensor(
        [[1.5, 1.5], [5.5, 1.5], [9.5, 1.5], [1.5, 5.5], [5.5, 5.5], [9.5, 5.5]]
    )
    torch.testing.assert_close(centers, expected)


def test_cell_centers_are_mean_of_covered_pixels() -> None:
    stride = 3
    centers = cell_centers(4, 5, stride, dtype=torch.float64)
    for idx, (u, v) in enumerate(centers.tolist()):
        i, j = divmod(idx, 5)
        us = np.arange(stride * j, stride * j + stride)
        vs = np.arange(stride * i, stride * i + stride)
        assert u == pytest.approx(us.mean())
        assert v == pytest.approx(vs.mean())


def test_pixel_to_cell_inverts_centers() -> None:
    centers = cell_centers(3, 4, 4)
    cells = pixel_to_cell(centers, 4)
    rows, cols = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    torch.testing.assert_close(cells, torch.stack((cols.reshape(-1), rows.reshape(-1)), -1))


def test_pixel_to_cell_rounding_assigns_covered_pixels() -> None:
    u = torch.arange(0, 16, dtype=torch.float32)
    uv = torch.stack((u, torch.zeros_like(u)), -1)
    col = pixel_to_cell(uv, 4)[:, 0].round().long()
    torch.testing.assert_close(col, torch.div(u.long(), 4, rounding_mode="floor"))


def test_pixel_to_cell_numpy_and_int_input() -> None:
    uv = np.array([[1, 5], [9, 1]])
    out = pixel_to_cell(uv, 4)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [[-0.125, 0.875], [1.875, -0.125]])
    out_t = pixel_to_cell(torch.tensor([[1, 5]]), 4)
    assert out_t.dtype == torch.float32


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="stride"):
        cell_centers(2, 2, 0)
    with pytest.raises(ValueError, match="last dimension"):
        pixel_to_cell(torch.zeros(3, 3), 4)
