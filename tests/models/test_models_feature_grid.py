"""Pixel <-> cell convention of nclr_core.models.feature_grid, and that the image branch
(ResNet stem, stages and FPN top-down path) centres its cells where it says."""
import numpy as np
import pytest
import torch
from torch import nn

from nclr_core.models.feature_grid import cell_centers, pixel_to_cell, upsample_to_stride
from nclr_core.models.image_encoder import ImageEncoder


def test_cell_centers_stride4_layout() -> None:
    centers = cell_centers(2, 3, 4)
    assert centers.shape == (6, 2)
    expected = torch.tensor([[0.0, 0.0], [4.0, 0.0], [8.0, 0.0], [0.0, 4.0], [4.0, 4.0],
                             [8.0, 4.0]])
    torch.testing.assert_close(centers, expected)


def test_legacy_cell_centers_of_older_checkpoints() -> None:
    legacy = cell_centers(2, 3, 4, convention="legacy")
    torch.testing.assert_close(legacy, cell_centers(2, 3, 4) + 1.5)
    torch.testing.assert_close(cell_centers(1, 2, 32, convention="legacy"),
                               torch.tensor([[15.5, 15.5], [47.5, 15.5]]))
    with pytest.raises(ValueError, match="convention"):
        cell_centers(2, 2, 4, convention="area")


def test_pixel_to_cell_inverts_centers() -> None:
    centers = cell_centers(3, 4, 4)
    cells = pixel_to_cell(centers, 4)
    rows, cols = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    torch.testing.assert_close(cells, torch.stack((cols.reshape(-1), rows.reshape(-1)), -1))


def test_pixel_to_cell_rounding_picks_the_nearest_centre() -> None:
    u = torch.arange(0, 16, dtype=torch.float32)
    uv = torch.stack((u, torch.zeros_like(u)), -1)
    col = pixel_to_cell(uv, 4)[:, 0].round().long()
    nearest = torch.cdist(uv, cell_centers(1, 5, 4)).argmin(1)  # ties (u = 4j + 2) aside
    tie = (u % 4) == 2
    torch.testing.assert_close(col[~tie], nearest[~tie])


def test_pixel_to_cell_numpy_and_int_input() -> None:
    uv = np.array([[1, 5], [9, 1]])
    out = pixel_to_cell(uv, 4)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [[0.25, 1.25], [2.25, 0.25]])
    out_t = pixel_to_cell(torch.tensor([[1, 5]]), 4)
    assert out_t.dtype == torch.float32


def test_upsample_to_stride_keeps_the_grid() -> None:
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    up = upsample_to_stride(x, (10, 13))
    assert up.shape == (2, 3, 10, 13)
    torch.testing.assert_close(up[..., ::2, ::2], x[..., :, :7])  # even cells: the input's
    torch.testing.assert_close(up[..., 0, 1:12:2], (x[..., 0, :-1] + x[..., 0, 1:]) / 2)
    torch.testing.assert_close(up[..., 9, 0], x[..., 4, 0])  # past the border: repeated
    # a linear ramp in pixels stays the same ramp: value = pixel coordinate at every cell
    ramp = (torch.arange(6.0) * 8).expand(1, 1, 3, 6)  # stride-8 cells at u = 8j
    fine = upsample_to_stride(ramp, (5, 11))
    torch.testing.assert_close(fine[0, 0, 0], torch.arange(11.0) * 4)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="stride"):
        cell_centers(2, 2, 0)
    with pytest.raises(ValueError, match="last dimension"):
        pixel_to_cell(torch.zeros(3, 3), 4)
    with pytest.raises(ValueError, match="upsample"):
        upsample_to_stride(torch.zeros(1, 1, 2, 2), (6, 4))


def _symmetric_encoder(upsampling: str = "aligned") -> ImageEncoder:
    """ResNet-18 + FPN whose every convolution averages its window with equal positive
    weights (eval-mode BatchNorm is a positive scale): a positive filter, symmetric about
    each cell's centre if and only if the network centres its cells where it claims."""
    encoder = ImageEncoder(depth=18, out_channels=2, fpn_channels=2, base_channels=2,
                           upsampling=upsampling)
    encoder = encoder.double().eval()
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
    return encoder


def _centroid(response: torch.Tensor, stride: int) -> torch.Tensor:
    """(u, v) centroid of a positive (h, w) response over the cells' `cell_centers`."""
    h, w = response.shape
    weights = response.reshape(-1, 1) / response.sum()
    return (weights * cell_centers(h, w, stride, dtype=response.dtype)).sum(0)


def test_resnet_stem_and_stages_centre_cell_j_on_pixel_sj() -> None:
    """An impulse at pixel (64, 64), the middle of a 132 x 132 image (every map has an odd
    number of cells and its middle cell on that pixel): the stem and each stage respond
    symmetrically about the cell that `cell_centers` places on the impulse."""
    image = torch.zeros(1, 3, 132, 132, dtype=torch.float64)
    image[..., 64, 64] = 1.0
    backbone = _symmetric_encoder().backbone
    with torch.no_grad():
        stem = backbone.stem(image)
        maps = [(2, stem), *zip((4, 8, 16, 32), backbone.stages(stem), strict=True)]
    for stride, feature_map in maps:
        torch.testing.assert_close(_centroid(feature_map[0, 0], stride),
                                   torch.tensor([64.0, 64.0], dtype=torch.float64),
                                   rtol=0, atol=1e-9, msg=f"stride {stride}")


def test_fpn_top_down_path_keeps_every_level_on_the_same_pixel() -> None:
    """Stage maps with one active cell each, all on pixel (128, 96) in their own stride
    (even map sizes, where upsampling by exactly 2 would expose a shift): the stride-4
    output is centred on that pixel. The legacy top-down path of older checkpoints
    (`F.interpolate(align_corners=False)`) moves every upsampled level by stride/4 pixels."""
    centroids = {}
    for mode in ("aligned", "legacy"):
        encoder = _symmetric_encoder(mode)
        stages = []
        for stride, channels in zip((4, 8, 16, 32), encoder.stage_channels, strict=True):
            stage = torch.zeros(1, channels, 256 // stride, 256 // stride, dtype=torch.float64)
            stage[..., 96 // stride, 128 // stride] = 1.0
            stages.append(stage)
        with torch.no_grad():
            centroids[mode] = _centroid(encoder.decode(stages)[0, 0], 4)
    truth = torch.tensor([128.0, 96.0], dtype=torch.float64)
    torch.testing.assert_close(centroids["aligned"], truth, rtol=0, atol=1e-9)
    assert float((centroids["legacy"] - truth).abs().min()) > 1.0


@pytest.mark.parametrize("cells, impulse_cell", [((33, 33), (16, 16)), ((33, 49), (16, 24))])
def test_image_branch_centres_cell_j_on_pixel_4j(cells, impulse_cell) -> None:
    """An impulse at pixel (4j, 4i) in the middle of the image gives a stride-4 response
    whose centroid over `cell_centers` is exactly that pixel: cell coordinates and the
    network agree, so a match found from these features has no bias."""
    (h, w), (i, j) = cells, impulse_cell
    image = torch.zeros(1, 3, 4 * h, 4 * w, dtype=torch.float64)
    image[..., 4 * i, 4 * j] = 1.0
    with torch.no_grad():
        response = _symmetric_encoder()(image)[0, 0]
    assert response.shape == (h, w) and bool((response > 0).any())
    torch.testing.assert_close(_centroid(response, 4),
                               torch.tensor([4.0 * j, 4.0 * i], dtype=torch.float64),
                               rtol=0, atol=1e-9)
