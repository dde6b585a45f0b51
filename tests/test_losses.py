"""NCLR losses: multi-positive InfoNCE with r_p / r_n, overlap BCE, Huber pose loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from nclr_core.losses import (
    frame_info_nce,
    multi_positive_info_nce,
    overlap_loss,
    pose_loss,
    sample_indices,
    weighted_total,
)
from nclr_core.models.alignment import TransformationAlignment
from nclr_core.models.feature_grid import cell_centers

H, W, STRIDE = 6, 8, 4


def _reference_info_nce(logits, positive, negative):
    out = []
    for row, pos, neg in zip(logits.tolist(), positive.tolist(), negative.tolist(), strict=True):
        p = sum(math.exp(s) for s, k in zip(row, pos, strict=True) if k)
        n = sum(math.exp(s) for s, k in zip(row, neg, strict=True) if k)
        if p > 0:
            out.append(-math.log(p / (p + n)))
    return torch.tensor(out)


def test_info_nce_matches_brute_force_and_is_stable():
    torch.manual_seed(0)
    logits = torch.randn(6, 10) * 3
    positive = torch.rand(6, 10) < 0.2
    positive[0] = False  # an anchor without positive is dropped
    negative = (torch.rand(6, 10) < 0.6) & ~positive
    loss = multi_positive_info_nce(logits, positive, negative)
    torch.testing.assert_close(loss, _reference_info_nce(logits, positive, negative).float())
    big = multi_positive_info_nce(logits * 1e3, positive, negative)
    assert torch.isfinite(big).all()
    with pytest.raises(ValueError, match="both positive and negative"):
        multi_positive_info_nce(logits, positive, positive)


def test_negative_subsampling_caps_the_negatives():
    logits = torch.zeros(3, 20)
    positive = torch.zeros(3, 20, dtype=torch.bool)
    positive[:, 0] = True
    negative = ~positive
    full = multi_positive_info_nce(logits, positive, negative)
    torch.testing.assert_close(full, torch.full((3,), math.log(20.0)))
    capped = multi_positive_info_nce(logits, positive, negative, max_negatives=5)
    torch.testing.assert_close(capped, torch.full((3,), math.log(6.0)))


def _scene():
    """One point at every cell centre; cell features one-hot; points copy their cell."""
    cells = cell_centers(H, W, STRIDE)
    m = cells.shape[0]
    image_feats = torch.eye(m)
    return cells, image_feats, cells.clone(), image_feats.clone()


def test_perfect_features_reach_the_minimum():
    cells, image_feats, point_pixel, point_feats = _scene()
    lta = TransformationAlignment(cells.shape[0], temperature=0.07)
    sim = lta.similarity(point_feats, image_feats)
    overlap = torch.ones(cells.shape[0], dtype=torch.bool)
    loss_p, loss_i = frame_info_nce(sim, point_pixel, cells, overlap, STRIDE, 1.0, 3.0)
    assert loss_p.numel() == cells.shape[0] and loss_i.numel() == cells.shape[0]
    assert 0 <= loss_p.mean() < 1e-3 and 0 <= loss_i.mean() < 1e-3


def test_uninformative_features_give_log_of_negatives():
    torch.manual_seed(3)
    cells = cell_centers(H, W, STRIDE)
    m = cells.shape[0]
    image_feats, point_feats = torch.randn(m, 4096), torch.randn(m, 4096)
    lta = TransformationAlignment(4096, mode="cosine", temperature=0.07)
    sim = lta.similarity(point_feats, image_feats)
    dist = torch.cdist(cells, cells) / STRIDE
    n_pos, n_neg = (dist <= 1).sum(1).float(), (dist > 3).sum(1).float()
    expected = torch.log1p(n_neg / n_pos).mean()
    overlap = torch.ones(m, dtype=torch.bool)
    loss_p, loss_i = frame_info_nce(sim, cells, cells, overlap, STRIDE, 1.0, 3.0)
    assert abs(loss_p.mean() - expected) < 0.1
    assert abs(loss_i.mean() - expected) < 0.1
    # and perfect features are far below that
    assert expected > 2.0


def test_cells_in_the_band_are_ignored():
    torch.manual_seed(4)
    cells = cell_centers(H, W, STRIDE)
    m = cells.shape[0]
    lta = TransformationAlignment(16, temperature=0.07)
    with torch.no_grad():
        lta.d.copy_(torch.linspace(0.5, 1.5, 16))
    image_feats = torch.randn(m, 16)
    point_feats = torch.randn(1, 16)
    point_pixel = torch.tensor([[13.0, 10.0]])
    overlap = torch.ones(m, dtype=torch.bool)
    dist = torch.cdist(point_pixel, cells)[0] / STRIDE
    band = (dist > 1.0) & (dist <= 3.0)
    far = dist > 3.0
    assert band.sum() > 5 and far.sum() > 5

    def losses(feats):
        sim = lta.similarity(point_feats, feats)
        lp, li = frame_info_nce(sim, point_pixel, cells, overlap, STRIDE, 1.0, 3.0)
        return lp.sum() + li.sum()

    base = losses(image_feats)
    changed = image_feats.clone()
    changed[band] = torch.randn(int(band.sum()), 16) * 5
    torch.testing.assert_close(losses(changed), base, rtol=0, atol=0)
    changed_far = image_feats.clone()
    changed_far[far] = torch.randn(int(far.sum()), 16) * 5
    assert not torch.allclose(losses(changed_far), base)


def test_image_anchors_are_capped_and_need_overlap():
    cells, image_feats, point_pixel, point_feats = _scene()
    sim = point_feats @ image_feats.T
    overlap = torch.zeros(cells.shape[0], dtype=torch.bool)
    overlap[:10] = True
    _, loss_i = frame_info_nce(sim, point_pixel, cells, overlap, STRIDE, max_cells=4)
    assert loss_i.numel() == 4
    _, none = frame_info_nce(sim, point_pixel, cells, torch.zeros_like(overlap), STRIDE)
    assert none.numel() == 0


def test_sample_indices():
    mask = torch.tensor([True, False, True, True, False, True])
    g = torch.Generator().manual_seed(0)
    idx = sample_indices(mask, 3, g)
    assert idx.numel() == 3 and len(set(idx.tolist())) == 3 and mask[idx].all()
    assert sample_indices(mask, None).tolist() == [0, 2, 3, 5]


def test_overlap_loss_is_mean_bce_of_points_plus_cells():
    torch.manual_seed(5)
    pl, pg = torch.randn(11), torch.rand(11) < 0.5
    il, ig = torch.randn(2, 3, 4), torch.rand(2, 3, 4) < 0.5
    expected = F.binary_cross_entropy(torch.sigmoid(pl), pg.float()) + F.binary_cross_entropy(
        torch.sigmoid(il), ig.float()
    )
    torch.testing.assert_close(overlap_loss(pl, pg, il, ig), expected)
    perfect = overlap_loss(pg.float() * 40 - 20, pg, ig.float() * 40 - 20, ig)
    assert perfect < 1e-6
    with pytest.raises(ValueError, match="differ in shape"):
        overlap_loss(pl, pg[:3], il, ig)


def _rot_z(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_pose_loss_values():
    T_gt = torch.eye(4).repeat(2, 1, 1)
    T_gt[:, :3, :3] = _rot_z(0.3)
    T_gt[:, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
    R = T_gt[:, :3, :3].clone()
    t = T_gt[:, :3, 3].clone()
    valid = torch.ones(2, dtype=torch.bool)
    assert pose_loss(R, t, T_gt, valid) < 1e-12
    t_err = t + torch.tensor([[0.5, 0.0, 3.0], [0.0, 0.0, 0.0]])
    # frame 0: 0.5 * 0.5^2 + (3 - 0.5); frame 1: 0
    torch.testing.assert_close(pose_loss(R, t_err, T_gt, valid), torch.tensor(2.625 / 2))
    R_err = R @ _rot_z(0.1)
    d = _rot_z(0.1) - torch.eye(3)
    expected = 0.5 * (d**2).sum()
    torch.testing.assert_close(pose_loss(R_err, t, T_gt, valid), expected)


def test_pose_loss_ignores_invalid_frames_and_never_nans():
    T_gt = torch.eye(4).repeat(2, 1, 1)
    R = torch.stack([torch.eye(3), torch.full((3, 3), float("nan"))]).requires_grad_(True)
    t = torch.tensor([[0.2, 0.0, 0.0], [float("nan")] * 3], requires_grad=True)
    loss = pose_loss(R, t, T_gt, torch.tensor([True, False]))
    torch.testing.assert_close(loss, torch.tensor(0.5 * 0.04))
    loss.backward()
    assert torch.isfinite(R.grad).all() and torch.isfinite(t.grad).all()
    none = pose_loss(R, t, T_gt, torch.tensor([False, False]))
    assert none.item() == 0.0 and none.requires_grad
    R.grad = None
    none.backward()
    assert torch.equal(R.grad, torch.zeros_like(R))


def test_pose_loss_gate_keeps_only_frames_near_the_truth():
    T_gt = torch.eye(4).repeat(3, 1, 1)
    R = torch.stack([_rot_z(0.1), _rot_z(math.radians(30.0)), torch.eye(3)]).requires_grad_(True)
    t = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [40.0, 0.0, 0.0]], requires_grad=True)
    valid = torch.ones(3, dtype=torch.bool)
    gated = pose_loss(R, t, T_gt, valid, gate=(20.0, 2.0))  # frame 0 only: 5.7 deg, 0.5 m
    torch.testing.assert_close(gated, pose_loss(R[:1], t[:1], T_gt[:1], valid[:1]))
    gated.backward()
    assert R.grad[0].abs().sum() > 0 and t.grad[0].abs().sum() > 0
    assert torch.equal(R.grad[1:], torch.zeros(2, 3, 3))
    assert torch.equal(t.grad[1:], torch.zeros(2, 3))
    assert pose_loss(R[1:], t[1:], T_gt[1:], valid[1:], gate=(20.0, 2.0)).item() == 0.0


def test_weighted_total():
    terms = {"feature": torch.tensor(2.0), "overlap": torch.tensor(4.0), "pose": torch.tensor(5.0)}
    torch.testing.assert_close(weighted_total(terms), torch.tensor(2.0 + 2.0 + 1.0))
    torch.testing.assert_close(weighted_total({"feature": torch.tensor(2.0)}), torch.tensor(2.0))
    with pytest.raises(ValueError, match="no loss weight"):
        weighted_total({"other": torch.tensor(1.0)})
