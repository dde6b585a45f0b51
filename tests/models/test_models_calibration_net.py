"""CalibrationNet: forward + backward on a tiny two-frame scene built here."""
import math

import pytest
import torch

from nclr_core.models.calibration_net import CalibrationNet
from nclr_core.models.feature_grid import cell_centers, pixel_to_cell

H, W, STRIDE = 64, 128, 4
TINY = {
    "image_depth": 18,
    "fpn_channels": 16,
    "point_base_channels": 8,
    "voxel_size": 0.5,
    "channels": 16,
    "fusion_d_model": 32,
    "fusion_heads": 2,
    "fusion_layers": 1,
    "fusion_keypoints": 32,
    "max_match_points": 48,
    "min_match_points": 8,
    "min_match_cells": 16,
    "info_nce_points": 64,
    "info_nce_cells": 64,
    "max_negatives": 128,
}
# camera looks along LiDAR +x: x_cam = -y_lidar, y_cam = -z_lidar, z_cam = x_lidar
R_CAM_LIDAR = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _rot_z(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _frame(gen: torch.Generator, yaw: float, shift: tuple[float, float]) -> dict:
    """Random cloud, a camera, and the ground truth of one augmented frame."""
    n = 400
    lo, hi = torch.tensor([-12.0, -10.0, -2.5]), torch.tensor([25.0, 10.0, 0.9])
    xyz = lo + (hi - lo) * torch.rand(n, 3, generator=gen)
    intensity = torch.rand(n, 1, generator=gen)
    K = torch.tensor([[60.0, 0.0, (W - 1) / 2], [0.0, 60.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
    T_raw = torch.eye(4)
    T_raw[:3, :3] = R_CAM_LIDAR
    T_raw[:3, 3] = torch.tensor([0.05, -0.1, 0.2])
    T_r = torch.eye(4)  # augmentation: p_aug = T_r p, T_gt = T_raw T_r^-1
    T_r[:3, :3] = _rot_z(yaw)
    T_r[:2, 3] = torch.tensor(shift)
    xyz_aug = xyz @ T_r[:3, :3].T + T_r[:3, 3]
    T_gt = T_raw @ torch.linalg.inv(T_r)
    cam = xyz_aug @ T_gt[:3, :3].T + T_gt[:3, 3]
    z = cam[:, 2]
    uvw = cam @ K.T
    uv = uvw[:, :2] / uvw[:, 2:].clamp_min(1e-6)
    inside = (z > 0.1) & (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5)
    inside &= (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5)
    hit = torch.zeros(H // STRIDE, W // STRIDE, dtype=torch.bool)
    cols_rows = pixel_to_cell(uv[inside], STRIDE).round().long()
    rows = cols_rows[:, 1].clamp(max=H // STRIDE - 1)
    cols = cols_rows[:, 0].clamp(max=W // STRIDE - 1)
    hit[rows, cols] = True
    dilated = torch.nn.functional.max_pool2d(hit[None, None].float(), 3, 1, 1)[0, 0] > 0
    return {
        "image": torch.randn(3, H, W, generator=gen),
        "points": torch.cat((xyz_aug, intensity), 1),
        "K": K,
        "T_gt": T_gt,
        "point_overlap": inside,
        "point_pixel": torch.where(inside[:, None], uv, torch.zeros_like(uv)),
        "image_overlap": dilated,
    }


def _batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    frames = [_frame(gen, 0.4, (1.0, -2.0)), _frame(gen, -2.0, (-3.0, 0.5))]
    batch = {k: torch.stack([f[k] for f in frames]) for k in ("image", "K", "T_gt")}
    batch["image_overlap"] = torch.stack([f["image_overlap"] for f in frames])
    for k in ("points", "point_overlap", "point_pixel"):
        batch[k] = torch.cat([f[k] for f in frames])
    batch["offset"] = torch.cumsum(torch.tensor([len(f["points"]) for f in frames]), 0)
    return batch


def _params_without_grad(model: torch.nn.Module) -> list[str]:
    return [
        name for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]


def test_forward_backward_all_parameters_get_gradients():
    torch.manual_seed(0)
    batch = _batch()
    assert batch["point_overlap"].sum() > 50 and batch["image_overlap"].any()
    # no pose gate: an untrained model's poses are far from the truth, and the gate would
    # (rightly) keep them out of L_p
    model = CalibrationNet(**TINY, pose_loss_gate=None)
    with torch.no_grad():  # leave W_f = I: Q only gets a gradient once D != 1
        model.alignment.d.add_(0.05 * torch.randn_like(model.alignment.d))
    out = model(batch, pose_loss_enabled=True)
    for key in ("loss", "loss_feature", "loss_overlap", "loss_pose"):
        assert out[key].dim() == 0 and torch.isfinite(out[key]), key
    n = batch["points"].shape[0]
    assert out["point_feats"].shape == (n, 16)
    assert out["image_feats"].shape == (2, 16, H // 4, W // 4)
    assert out["point_scores"].shape == (n,) and out["image_scores"].shape == (2, 16, 32)
    assert out["T_pred"].shape == (2, 4, 4) and out["pose_valid"].shape == (2,)
    assert len(out["matches"]) == 2
    for b, m in enumerate(out["matches"]):
        lo, hi = (0 if b == 0 else int(batch["offset"][0])), int(batch["offset"][b])
        assert ((m["point_index"] >= lo) & (m["point_index"] < hi)).all()
        assert m["pixels"].shape == (m["point_index"].numel(), 2)
    assert bool(out["pose_valid"].any()), "the pose path must be exercised"
    # L_p reaches the similarity (through the soft-matched pixels) and the point overlap
    # head (through the EPnP weights)
    head_weight = model.point_overlap_head.mlp[0].weight
    grad_d, grad_head = torch.autograd.grad(
        out["loss_pose"], (model.alignment.d, head_weight), retain_graph=True
    )
    assert grad_d.abs().sum() > 0 and grad_head.abs().sum() > 0
    out["loss"].backward()
    assert _params_without_grad(model) == []


def _twins(**switches) -> tuple[CalibrationNet, CalibrationNet]:
    """The default tiny model (pose gate off) and the one with `switches`, every weight they
    both have equal (the ablated model's are a subset)."""
    torch.manual_seed(2)
    base = CalibrationNet(**TINY, pose_loss_gate=None)
    ablated = CalibrationNet(**TINY, pose_loss_gate=None, **switches)
    own = ablated.state_dict()
    ablated.load_state_dict({k: v for k, v in base.state_dict().items() if k in own})
    return base, ablated


def _forward(model: CalibrationNet, batch: dict, **kwargs) -> dict:
    torch.manual_seed(5)  # the same sampled anchors and supports for every model
    return model(batch, **kwargs)


def _weighted(out: dict, model: CalibrationNet, terms: tuple[str, ...]) -> torch.Tensor:
    return sum(model.loss_weights[t] * out[f"loss_{t}"] for t in terms)


def test_ablation_cosine_similarity_fixes_w_f_to_the_identity():
    base, cosine = _twins(similarity="cosine")
    assert [n for n, _ in base.named_parameters() if n.startswith("alignment.")]
    assert not [n for n, _ in cosine.named_parameters() if n.startswith("alignment.")]
    p, i = torch.randn(5, 16), torch.randn(7, 16)
    expected = (torch.nn.functional.normalize(p, dim=1)
                @ torch.nn.functional.normalize(i, dim=1).T) / cosine.alignment.temperature
    torch.testing.assert_close(cosine.alignment.similarity(p, i), expected)
    batch = _batch()
    with torch.no_grad():
        # the LTA starts at W_f = I: the same feature loss; once D moves, only its changes
        lta_loss = _forward(base, batch)["loss_feature"]
        cosine_loss = _forward(cosine, batch)["loss_feature"]
        torch.testing.assert_close(lta_loss, cosine_loss, rtol=1e-4, atol=1e-5)
        base.alignment.d.mul_(torch.linspace(0.2, 1.8, 16))
        assert not torch.allclose(base.alignment.similarity(p, i), expected, atol=1e-3)
        moved = _forward(base, batch)["loss_feature"]
    assert abs(float(moved - cosine_loss)) > 1e-3


def test_ablation_hard_matching_puts_every_match_on_a_cell_centre():
    base, hard = _twins(matching="hard")
    centres = cell_centers(H // STRIDE, W // STRIDE, STRIDE, convention=hard.cell_convention)
    batch = _batch()

    def on_a_centre(matches: list[dict]) -> torch.Tensor:
        pixels = torch.cat([m["pixels"] for m in matches]).double()
        return torch.cdist(pixels, centres.double()).min(dim=1).values < 1e-4

    with torch.no_grad():
        soft, hard_out = _forward(base, batch), _forward(hard, batch)
    assert on_a_centre(hard_out["matches"]).all()
    assert not on_a_centre(soft["matches"]).all()  # soft: weighted means between centres
    for s, h in zip(soft["matches"], hard_out["matches"], strict=True):
        # the same points, and the same confidence (the best cell's softmax weight)
        assert torch.equal(s["point_index"], h["point_index"]) and s["point_index"].numel()
        torch.testing.assert_close(s["weights"], h["weights"])
    torch.testing.assert_close(soft["loss"], hard_out["loss"])  # matching is not in L_f, L_o


def test_ablation_without_overlap_drops_the_heads_the_scores_and_l_o():
    base, plain = _twins(use_overlap=False)
    assert any(n.startswith("point_overlap_head.") for n, _ in base.named_parameters())
    assert not any(n.startswith(("point_overlap_head.", "image_overlap_head."))
                   for n, _ in plain.named_parameters())
    batch = _batch()
    with torch.no_grad():
        with_overlap, without = _forward(base, batch), _forward(plain, batch)
    overlap_keys = {"point_scores", "image_scores", "loss_overlap"}
    assert overlap_keys <= set(with_overlap) and not overlap_keys & set(without)
    torch.testing.assert_close(with_overlap["loss"],
                               _weighted(with_overlap, base, ("feature", "overlap")))
    torch.testing.assert_close(without["loss"], _weighted(without, plain, ("feature",)))
    # no predicted overlap: a match's weight is the matcher's confidence alone, in (0, 1],
    # where the overlap model multiplies it by the point's score
    for m in without["matches"]:
        assert m["point_index"].numel() and bool(((m["weights"] > 0) & (m["weights"] <= 1)).all())


def test_ablation_without_pose_loss_has_no_pose_term_even_when_enabled():
    base, no_pose = _twins(use_pose_loss=False)
    batch = _batch()
    with_pose = _forward(base, batch, pose_loss_enabled=True)
    without = _forward(no_pose, batch, pose_loss_enabled=True)
    assert {"loss_pose", "T_pred", "R"} <= set(with_pose)
    assert not {"loss_pose", "T_pred", "R"} & set(without)
    assert float(with_pose["loss_pose"].detach()) > 0  # the term is there and counts
    torch.testing.assert_close(with_pose["loss"],
                               _weighted(with_pose, base, ("feature", "overlap", "pose")))
    torch.testing.assert_close(without["loss"],
                               _weighted(without, no_pose, ("feature", "overlap")))


def test_eval_without_ground_truth_and_without_pose_loss(monkeypatch):
    torch.manual_seed(3)
    model = CalibrationNet(**TINY).eval()
    batch = {k: v for k, v in _batch().items() if k in ("image", "K", "points", "offset")}
    with torch.no_grad():
        out = model(batch, with_pose=True)
    assert "loss" not in out and out["T_pred"].shape == (2, 4, 4)

    def no_epnp(*args, **kwargs):
        raise AssertionError("EPnP ran although nothing asked for a pose")

    # nothing asks for a pose: no EPnP, in evaluation nor in training without L_p
    monkeypatch.setattr("nclr_core.models.calibration_matching.solve_epnp", no_epnp)
    with torch.no_grad():
        out = model(batch)
    assert "T_pred" not in out and len(out["matches"]) == 2
    model.train()
    out = model(_batch(), pose_loss_enabled=False)
    assert "loss_pose" not in out and "R" not in out
    out = CalibrationNet(**TINY, use_pose_loss=False)(_batch(), pose_loss_enabled=True)
    assert "loss_pose" not in out and "R" not in out
    with pytest.raises(ValueError, match="image_overlap"):
        bad = _batch()
        bad["image_overlap"] = bad["image_overlap"][:, :8]
        model(bad)


def test_runs_on_pair_sampler_and_collate_output():
    """The data side's ground truth (PairSampler + collate_pairs) fits the model's contract."""
    import numpy as np

    from nclr_core.data.collate import collate_pairs
    from nclr_core.data.pairs import PairSampler
    from nclr_core.data.transforms import Compose, NormalizeImage

    gen = torch.Generator().manual_seed(5)
    transform = Compose([PairSampler(seed=0), NormalizeImage()])
    samples = []
    for _ in range(2):
        frame = _frame(gen, 0.0, (0.0, 0.0))  # raw cloud, T_gt = T_raw
        image = (torch.rand(H, W, 3, generator=gen) * 255).to(torch.uint8).numpy()
        samples.append(transform({
            "image": image,
            "points": frame["points"].numpy(),
            "K": frame["K"].double().numpy(),
            "T_cam_lidar": frame["T_gt"].double().numpy(),
        }))
    batch = collate_pairs(samples)
    assert all(np.asarray(s["point_overlap"]).any() for s in samples)
    torch.manual_seed(5)
    out = CalibrationNet(**TINY)(batch, pose_loss_enabled=True)
    assert torch.isfinite(out["loss"]) and out["loss_feature"] > 0
    out["loss"].backward()


def test_legacy_cells_move_every_coarse_match_by_the_legacy_offset():
    """A model with `cell_convention="legacy"` (older checkpoints) matches with cell centres
    at 4j + 1.5: the same weights give the same matches moved by exactly 1.5 px."""
    torch.manual_seed(8)
    stem = CalibrationNet(**TINY, matching="hard").eval()
    legacy = CalibrationNet(**TINY, matching="hard", cell_convention="legacy").eval()
    legacy.load_state_dict(stem.state_dict())
    batch = _batch()
    with torch.no_grad():
        feats = stem.extract_features(batch["image"], batch["points"], batch["offset"])
        index = torch.arange(40)
        a, _ = stem.match_points(feats["point_feats"][index], feats["image_feats"][0])
        b, _ = legacy.match_points(feats["point_feats"][index], feats["image_feats"][0])
    torch.testing.assert_close(b - a, torch.full_like(a, 1.5))
    with pytest.raises(ValueError, match="cell_convention"):
        CalibrationNet(**TINY, cell_convention="area")


def test_pose_loss_support_is_the_ground_truth_overlap():
    """In training with L_p the EPnP sees only points of the ground-truth overlap, weighted by
    the network, where the network's own overlap prediction (untrained here) differs."""
    torch.manual_seed(4)
    batch = _batch()
    overlap = batch["point_overlap"]
    assert bool((~overlap).sum() > 100)  # plenty of points outside the overlap to pick from
    model = CalibrationNet(**TINY, pose_loss_gate=None)  # untrained: S^P is arbitrary
    out = model(batch, pose_loss_enabled=True)
    assert "loss_pose" in out and bool(out["pose_valid"].all())
    for match in out["matches"]:
        assert match["point_index"].numel() == TINY["max_match_points"]
        assert bool(overlap[match["point_index"]].all())
        assert bool((match["weights"] > 0).all()) and match["weights"].requires_grad
    assert int(out["pose_loss_frames"]) == 2
    # without L_p the matches are the predicted overlap's, outside the true one too
    with torch.no_grad():
        plain = model.eval()(batch)
    chosen = torch.cat([m["point_index"] for m in plain["matches"]])
    assert not bool(overlap[chosen].all())


def test_fine_stage_refines_matches_and_trains():
    torch.manual_seed(6)
    batch = _batch()
    model = CalibrationNet(**TINY, fine_matching=True, fine_channels=8, pose_loss_gate=None)
    with torch.no_grad():
        model.alignment.d.add_(0.05 * torch.randn_like(model.alignment.d))
    out = model(batch, pose_loss_enabled=True)
    assert out["fine_image_feats"].shape == (2, 8, H // 2, W // 2)
    assert torch.isfinite(out["loss_fine"]) and out["loss_fine"] > 0
    weights = model.loss_weights
    assert weights["fine"] == 1.0
    expected = sum(weights[k] * out[f"loss_{k}"] for k in ("feature", "overlap", "pose", "fine"))
    torch.testing.assert_close(out["loss"], expected)
    for match in out["matches"]:
        k = match["point_index"].numel()
        assert match["coarse_pixels"].shape == match["pixels"].shape == (k, 2)
        assert match["fine_spread"].shape == (k,)
        # the fine window is ±r stride-2 cells around the coarse match
        offset = (match["pixels"] - match["coarse_pixels"]).detach().abs().max()
        assert float(offset) <= 2 * (model.fine_matcher.radius + 0.5)
    out["loss"].backward()
    assert _params_without_grad(model) == []


def test_match_points_and_refine_matches_reproduce_the_forward_matches():
    torch.manual_seed(7)
    model = CalibrationNet(**TINY, fine_matching=True, fine_channels=8).eval()
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
        for b, match in enumerate(out["matches"]):
            index = match["point_index"]
            pixels, confidence = model.match_points(
                out["point_feats"][index], out["image_feats"][b], out["image_scores"][b],
                out["fine_image_feats"][b])
            torch.testing.assert_close(pixels, match["pixels"])
            torch.testing.assert_close(confidence * out["point_scores"][index],
                                       match["weights"])
            coarse, _ = model.match_points(out["point_feats"][index], out["image_feats"][b],
                                           out["image_scores"][b])
            torch.testing.assert_close(coarse, match["coarse_pixels"])
            refined, spread = model.refine_matches(out["point_feats"][index],
                                                   out["fine_image_feats"][b], coarse)
            torch.testing.assert_close(refined, match["pixels"])
    with pytest.raises(ValueError, match="fine matching"):
        CalibrationNet(**TINY).refine_matches(torch.zeros(2, 16), torch.zeros(8, 4, 4),
                                              torch.zeros(2, 2))
