"""Point branch: voxelisation, sparse U-Net shapes, bottleneck geometry, gradients."""
import pytest
import torch

from nclr_core.models.point_encoder import MINKUNET_BLOCKS, PointEncoder, SparseBasicBlock
from nclr_core.models.voxelize import grid_shape, voxelize

RANGE = (0.0, 0.0, 0.0, 4.0, 4.0, 4.0)
SMALL_RANGE = (-8.0, -8.0, -2.0, 8.0, 8.0, 2.0)


def _cloud(counts=(70, 110), seed=0):
    """(N, 4) points inside SMALL_RANGE (x y z intensity) and the offset vector."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(counts)
    lo = torch.tensor(SMALL_RANGE[:3])
    hi = torch.tensor(SMALL_RANGE[3:])
    xyz = lo + torch.rand((n, 3), generator=gen) * (hi - lo)
    points = torch.cat((xyz, torch.rand((n, 1), generator=gen)), dim=1)
    return points, torch.cumsum(torch.tensor(counts), 0)


def _encoder(**kwargs):
    torch.manual_seed(0)
    args = dict(base_channels=8, out_channels=16, voxel_size=0.5, point_range=SMALL_RANGE)
    args.update(kwargs)
    return PointEncoder(**args)


def test_voxelize_hand_example():
    points = torch.tensor([
        [0.2, 0.3, 0.1, 1.0],   # frame 0, voxel (x0, y0, z0)
        [0.8, 0.9, 0.5, 3.0],   # frame 0, same voxel
        [1.5, 0.2, 0.2, 5.0],   # frame 0, voxel (x1, y0, z0)
        [0.2, 0.3, 0.1, 7.0],   # frame 1, voxel (x0, y0, z0) of another frame
        [9.0, -1.0, 2.5, 9.0],  # frame 1, outside: clamped to voxel (x3, y0, z2)
    ])
    offset = torch.tensor([3, 5])
    vox = voxelize(points, offset, 1.0, RANGE, grid_shape(RANGE, 1.0))
    assert vox.indices.dtype == torch.int32 and vox.indices.is_contiguous()
    assert vox.indices.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [1, 2, 0, 3]]
    assert vox.point_to_voxel.tolist() == [0, 0, 1, 2, 3]
    assert vox.in_range.tolist() == [True, True, True, True, False]
    expected_offsets = torch.tensor([
        [-0.3, -0.2, -0.4], [0.3, 0.4, 0.0], [0.0, -0.3, -0.3], [-0.3, -0.2, -0.4],
        [0.5, -0.5, 0.0],
    ])
    torch.testing.assert_close(vox.point_features[:, 0], points[:, 3])
    torch.testing.assert_close(vox.point_features[:, 1:], expected_offsets)
    torch.testing.assert_close(
        vox.voxel_features[0], (vox.point_features[0] + vox.point_features[1]) / 2
    )


def test_grid_shape_paper_range():
    paper = (-51.2, -51.2, -3.0, 51.2, 51.2, 1.0)
    assert grid_shape(paper, 0.05) == (80, 2048, 2048)
    assert grid_shape(paper, 0.3, multiple=16) == (16, 352, 352)


def test_bad_inputs_raise():
    enc = _encoder()
    points, offset = _cloud()
    with pytest.raises(ValueError, match="offset"):
        enc.encode(points, offset - 1)
    with pytest.raises(ValueError, match="at least one point"):
        enc.encode(points, torch.tensor([0, points.shape[0]]))
    with pytest.raises(ValueError, match="points must be"):
        enc.encode(points[:, :3], offset)
    with pytest.raises(ValueError, match="NaN"):
        enc.encode(torch.full_like(points, float("nan")), offset)
    with pytest.raises(ValueError, match="unknown point backbone"):
        _encoder(variant="minkunet99")


def test_shapes_and_bottleneck_geometry_for_two_frames():
    enc = _encoder()
    points, offset = _cloud(counts=(70, 110))
    state = enc.encode(points, offset)
    feats, xyz, batch = enc.bottleneck(state)
    assert feats.shape == (xyz.shape[0], enc.bottleneck_channels)
    assert enc.bottleneck_channels == 64  # 256 * 8 / 32
    # The bottleneck voxels are exactly the stride-16 cells holding points.
    coarse = 16 * enc.voxel_size
    lo = torch.tensor(SMALL_RANGE[:3])
    frame = torch.repeat_interleave(torch.arange(2), torch.diff(offset, prepend=torch.zeros(1,
                                                                 dtype=offset.dtype)))
    cells = torch.floor((points[:, :3] - lo) / coarse).long()
    expected = {(int(b), *c) for b, c in zip(frame, cells.tolist(), strict=True)}
    got_cells = torch.round((xyz - lo) / coarse - 0.5).long()
    got = {(int(b), *c) for b, c in zip(batch, got_cells.tolist(), strict=True)}
    assert got == expected and len(got) == xyz.shape[0]
    out = enc.decode(state, feats)
    assert out.shape == (points.shape[0], 16)
    assert torch.isfinite(out).all()


def test_per_point_rows_follow_input_order():
    enc = _encoder().eval()
    points, offset = _cloud(counts=(40, 60))
    points[0, :3] = torch.tensor([0.25, 0.25, 0.25])  # points 0 and 1 share a voxel
    points[1, :3] = torch.tensor([0.3, 0.2, 0.4])
    perm = torch.cat((torch.randperm(40), 40 + torch.randperm(60)))
    with torch.no_grad():
        out = enc(points, offset)
        out_perm = enc(points[perm], offset)
        torch.testing.assert_close(out_perm, out[perm], atol=1e-5, rtol=1e-5)
        # Points of one voxel share the gathered voxel part; only the point MLP differs.
        state = enc.encode(points, offset)
        p2v = state.voxels.point_to_voxel
        assert p2v[0] == p2v[1] and p2v.unique().numel() < points.shape[0]
        voxel_part = out - enc.point_mlp(state.voxels.point_features)
        torch.testing.assert_close(voxel_part[0], voxel_part[1])
        assert not torch.allclose(out[0], out[1])


def test_gradients_reach_every_parameter():
    enc = _encoder()
    points, offset = _cloud(counts=(50, 80))
    state = enc.encode(points, offset)
    feats, _, _ = enc.bottleneck(state)
    out = enc.decode(state, feats * 1.5)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weights).sum().backward()
    no_grad = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_variant_block_counts():
    for variant, blocks in MINKUNET_BLOCKS.items():
        enc = _encoder(variant=variant)
        count = sum(isinstance(m, SparseBasicBlock) for m in enc.modules())
        assert count == sum(blocks)
    assert MINKUNET_BLOCKS["minkunet34"] == (2, 3, 4, 6, 2, 2, 2, 2)


def test_frames_do_not_interact_in_eval_mode():
    enc = _encoder().eval()
    points, offset = _cloud(counts=(40, 60))
    with torch.no_grad():
        both = enc(points, offset)
        first = enc(points[:40], torch.tensor([40]))
        second = enc(points[40:], torch.tensor([60]))
    torch.testing.assert_close(both, torch.cat((first, second)), atol=1e-5, rtol=1e-5)


def test_voxelize_real_kitti_scan(real_data):
    import numpy as np

    path = real_data / "kitti_object" / "training" / "velodyne" / "000001.bin"
    points = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4))
    paper_range = (-51.2, -51.2, -3.0, 51.2, 51.2, 1.0)
    voxel_size = 0.05
    vox = voxelize(points, torch.tensor([points.shape[0]]), voxel_size, paper_range,
                   grid_shape(paper_range, voxel_size, multiple=16))
    inside = vox.in_range
    lo = torch.tensor(paper_range[:3])
    cells = torch.floor((points[inside, :3] - lo) / voxel_size).long()
    assert vox.indices.shape[0] >= torch.unique(cells, dim=0).shape[0]
    assigned = vox.indices[vox.point_to_voxel[inside]][:, 1:].flip(1).long()
    assert torch.equal(assigned, cells)
    assert vox.point_features[:, 1:].abs().max() <= 0.5
    assert 0.5 < inside.float().mean() < 1.0  # a real scan reaches past the paper's range
