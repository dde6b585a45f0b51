"""Pretext pair sampling and its ground truth (nclr_core.data.pairs, METHOD.md §1)."""
import math
from pathlib import Path

import numpy as np
import pytest

from nclr_core.data.collate import collate_pairs
from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.pairs import PairSampler, PerturbedPrior, dilate_cells, hit_cells
from nclr_core.data.transforms import (
    CenterCrop,
    Compose,
    CropPointRange,
    NormalizeImage,
    ResizeImage,
    SubsamplePoints,
    sample_rng,
)
from nclr_core.geometry.projection import project_points
from nclr_core.geometry.se3 import compose, invert
from nclr_core.models.feature_grid import pixel_to_cell

H, W, STRIDE = 32, 64, 4
# LiDAR x forward, y left, z up -> camera z forward, x right, y down; plus a lever arm.
R_CAM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _sample(n: int = 400, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([-30.0, -20.0, -2.5], [30.0, 20.0, 1.0], size=(n, 3))
    T = np.eye(4)
    T[:3, :3] = R_CAM_LIDAR
    T[:3, 3] = [0.05, -0.08, -0.27]
    return {
        "image": np.zeros((H, W, 3), dtype=np.uint8),
        "points": np.hstack([xyz, rng.random((n, 1))]).astype(np.float32),
        "K": np.array([[40.0, 0.0, 31.5], [0.0, 40.0, 15.5], [0.0, 0.0, 1.0]]),
        "T_cam_lidar": T,
    }


def _raw_overlap(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    proj = project_points(sample["points"][:, :3].astype(np.float64), sample["T_cam_lidar"],
                          sample["K"], (H, W))
    return proj.in_image & (proj.depth > 0), proj.uv


def test_augmented_cloud_with_new_ground_truth_projects_like_the_original() -> None:
    raw = _sample()
    T_raw = raw["T_cam_lidar"].copy()
    raw_xyz = raw["points"][:, :3].astype(np.float64)
    before = project_points(raw_xyz, T_raw, raw["K"], (H, W))
    out = PairSampler(seed=3)({**raw, "points": raw["points"].copy()})

    after = project_points(out["points"][:, :3].astype(np.float64), out["T_gt"], out["K"], (H, W))
    # float32 storage of metre-scale coordinates bounds the agreement.
    np.testing.assert_allclose(after.depth, before.depth, atol=1e-4)
    np.testing.assert_allclose(after.uv, before.uv, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(after.in_image, before.in_image)
    np.testing.assert_allclose(out["T_gt"], T_raw @ invert(out["T_aug"]), atol=1e-12)
    np.testing.assert_allclose(compose(out["T_gt"], out["T_aug"]), T_raw, atol=1e-12)
    assert out["T_cam_lidar"] is out["T_gt"]
    # The cloud really moved, z untouched, intensity kept.
    assert np.abs(out["points"][:, :2] - raw["points"][:, :2]).max() > 0.1
    np.testing.assert_allclose(out["points"][:, 2:], raw["points"][:, 2:], atol=1e-5)


def test_motion_is_a_z_rotation_and_xy_translation_within_ranges() -> None:
    sampler = PairSampler(rotation_range=0.5, translation_range=2.0)
    for seed in range(20):
        T_r = sampler.sample_motion(np.random.default_rng(seed))
        np.testing.assert_allclose(T_r[:3, :3] @ T_r[:3, :3].T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(T_r[2], [0.0, 0.0, 1.0, 0.0])
        np.testing.assert_allclose(T_r[:3, 2], [0.0, 0.0, 1.0])
        assert abs(math.atan2(T_r[1, 0], T_r[0, 0])) <= 0.5
        assert np.all(np.abs(T_r[:2, 3]) <= 2.0)
    np.testing.assert_allclose(PairSampler(0.0, 0.0).sample_motion(np.random.default_rng(0)),
                               np.eye(4))


def test_point_overlap_and_pixels_match_the_raw_projection() -> None:
    raw = _sample(seed=1)
    expected_overlap, expected_uv = _raw_overlap(raw)
    assert 10 < expected_overlap.sum() < len(expected_overlap)
    out = PairSampler(seed=5)(raw)
    np.testing.assert_array_equal(out["point_overlap"], expected_overlap)
    assert out["point_pixel"].dtype == np.float32
    np.testing.assert_allclose(out["point_pixel"][expected_overlap],
                               expected_uv[expected_overlap], atol=1e-3)
    assert out["image_overlap"].shape == (H // STRIDE, W // STRIDE)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_image_overlap_is_the_hit_mask_dilated_by_the_radius(radius: int) -> None:
    out = PairSampler(overlap_radius_cells=radius, seed=7)(_sample(n=60, seed=2))
    uv = out["point_pixel"][out["point_overlap"]]
    cells = np.floor(pixel_to_cell(uv.astype(np.float64), STRIDE) + 0.5).astype(int)
    mask = out["image_overlap"]
    # Every overlap point's pixel lies in an overlap cell.
    assert mask[cells[:, 1], cells[:, 0]].all()
    # Exactly the cells within `radius` (Chebyshev, in cells) of a hit cell are set.
    rows, cols = np.indices(mask.shape)
    dist = np.full(mask.shape, np.inf)
    for col, row in cells:
        dist = np.minimum(dist, np.maximum(np.abs(rows - row), np.abs(cols - col)))
    np.testing.assert_array_equal(mask, dist <= radius)
    assert 0 < mask.sum() < mask.size


def test_hit_cells_assign_each_pixel_to_the_cell_of_the_nearest_centre() -> None:
    # cell j of stride 4 is centred on pixel 4j; past the last centre, the last cell
    uv = np.array([[-0.5, 0.0], [1.99, 1.99], [2.0, 0.0], [5.9, 6.1], [63.49, 31.49]])
    mask = hit_cells(uv, (8, 16), 4)
    assert mask.sum() == 4
    assert mask[0, 0] and mask[0, 1] and mask[2, 1] and mask[7, 15]
    np.testing.assert_array_equal(dilate_cells(mask, 0), mask)
    with pytest.raises(ValueError, match="radius_cells"):
        dilate_cells(mask, -1)


def test_sampling_is_reproducible_from_seed_epoch_index() -> None:
    def run(seed: int, epoch: int, index: int) -> dict:
        return PairSampler()({**_sample(), "rng": sample_rng(seed, epoch, index)})

    a, b, c = run(1, 2, 3), run(1, 2, 3), run(1, 2, 4)
    np.testing.assert_array_equal(a["T_aug"], b["T_aug"])
    np.testing.assert_array_equal(a["points"], b["points"])
    assert not np.allclose(a["T_aug"], c["T_aug"])
    assert not np.allclose(run(1, 3, 3)["T_aug"], a["T_aug"])


def test_image_size_must_be_divisible_by_the_stride() -> None:
    sample = _sample()
    sample["image"] = np.zeros((30, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="not divisible"):
        PairSampler(seed=0)(sample)


def test_perturbed_prior_stays_within_bounds_and_keeps_the_cloud() -> None:
    prior = PerturbedPrior(max_angle_deg=10.0, max_translation_m=0.25, seed=0)
    for index in range(20):
        sample = _sample(n=10)
        points = sample["points"].copy()
        out = prior({**sample, "rng": sample_rng(0, 0, index)})
        np.testing.assert_array_equal(out["points"], points)
        np.testing.assert_array_equal(out["T_gt"], sample["T_cam_lidar"])
        delta = invert(out["T_gt"]) @ out["T_init"]
        angle = math.acos(np.clip((np.trace(delta[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))
        assert 0.0 < angle <= math.radians(10.0) + 1e-9
        assert np.all(np.abs(delta[:3, 3]) <= 0.25)
        R_err = out["T_init"][:3, :3].T @ out["T_gt"][:3, :3]
        assert math.acos(np.clip((np.trace(R_err) - 1) / 2, -1, 1)) == pytest.approx(angle)
        assert np.linalg.norm(out["T_init"][:3, 3] - out["T_gt"][:3, 3]) == pytest.approx(
            np.linalg.norm(delta[:3, 3]))


def test_perturbed_prior_uses_the_pair_ground_truth() -> None:
    out = PairSampler(seed=1)(_sample())
    T_gt = out["T_gt"].copy()
    out = PerturbedPrior(max_angle_deg=0.0, max_translation_m=0.0, seed=0)(out)
    np.testing.assert_allclose(out["T_init"], T_gt, atol=1e-12)
    with pytest.raises(ValueError, match="translation_region"):
        PerturbedPrior(translation_region="cube")


def test_real_kitti_frame_through_the_training_pipeline(real_data: Path) -> None:
    raw = KittiObjectDataset(real_data / "kitti_object", "training")[1]
    prepare = Compose([CropPointRange(), SubsamplePoints(20000), ResizeImage(160),
                       CenterCrop(160, 512)])
    sample = prepare({**raw, "rng": sample_rng(0, 0, 1)})
    expected = project_points(sample["points"], sample["T_cam_lidar"], sample["K"], (160, 512))
    out = NormalizeImage()(PairSampler()({**sample, "rng": sample_rng(0, 0, 1)}))
    np.testing.assert_array_equal(out["point_overlap"], expected.in_image)
    # About a sixth of a full KITTI scan lies in the front camera's view.
    assert 0.05 < out["point_overlap"].mean() < 0.3
    batch = collate_pairs([out])
    assert batch["image"].shape == (1, 3, 160, 512)
    assert batch["image_overlap"].shape == (1, 40, 128)
    hits = hit_cells(out["point_pixel"][out["point_overlap"]], (40, 128), STRIDE)
    assert out["image_overlap"][hits].all() and out["image_overlap"].sum() > hits.sum()
