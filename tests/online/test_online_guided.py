"""The guided stage (nclr_core.online.guided) on constructed network features of a known pose.

The image feature map is a smooth random field over network pixels; each point's feature is
that field at its true network pixel (through the lens model and the resize-and-crop map A),
so the best match of every point is its true projection and nothing else is known.
"""
import numpy as np
import pytest
import torch
from online_scene import HEIGHT, T_TRUE, WIDTH, K, seen_points

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.metrics import rre_geodesic_deg
from nclr_core.geometry.se3 import transform_points
from nclr_core.inference import Calibrator, NetworkFeatures
from nclr_core.models.feature_grid import cell_centers
from nclr_core.online.guided import (
    CoarseWindowMatcher,
    GuidedSettings,
    choose_points,
    match_guided,
)
from nclr_core.online.pose import pose_delta, prior_at_distance

STRIDE, H_CELLS, W_CELLS, CHANNELS = 4, 32, 104, 24
SCALE = 128 / HEIGHT  # network px per input px: 375 -> 128 rows, 1242 -> 424 columns,
CROP_X0 = 4  # cropped to 416
A = np.array([[SCALE, 0.0, 0.5 * SCALE - 0.5 - CROP_X0], [0.0, SCALE, 0.5 * SCALE - 0.5],
              [0.0, 0.0, 1.0]])
CAMERA = CameraModel(K, WIDTH, HEIGHT, "plumb_bob", [-0.05, 0.01, 0.0005, -0.0005, 0.0])


def _field(uv: np.ndarray) -> np.ndarray:
    """(n, CHANNELS) smooth random features at network pixels uv (n, 2)."""
    rng = np.random.default_rng(42)
    wavelength = rng.uniform(12.0, 48.0, CHANNELS)
    angle = rng.uniform(0, np.pi, CHANNELS)
    direction = np.stack((np.cos(angle), np.sin(angle)), 1) / wavelength[:, None]
    return np.cos(2 * np.pi * uv @ direction.T + rng.uniform(0, 2 * np.pi, CHANNELS))


def _similarity(p: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    p, i = torch.nn.functional.normalize(p, dim=-1), torch.nn.functional.normalize(i, dim=-1)
    return p @ i.T / 0.05


def _features(n: int = 4000, seed: int = 0, convention: str = "stem"
              ) -> tuple[NetworkFeatures, np.ndarray]:
    """Constructed features of n points seen under T_TRUE (cells centred by `convention`),
    and the (n, 4) input points."""
    rng = np.random.default_rng(seed)
    xyz, _ = seen_points(rng, n, depth=(3.0, 60.0))
    raw, _ = CAMERA.project(transform_points(T_TRUE, xyz))
    truth = raw @ A[:2, :2].T + A[:2, 2]
    cells = cell_centers(H_CELLS, W_CELLS, STRIDE, convention=convention,
                         dtype=torch.float64).numpy()
    image = torch.from_numpy(_field(cells).T.reshape(CHANNELS, H_CELLS, W_CELLS)).float()
    points = np.column_stack((xyz, np.zeros(n))).astype(np.float32)
    features = NetworkFeatures(
        used=np.arange(n), A=A, K_net=A @ K,
        point_feats=torch.from_numpy(np.nan_to_num(_field(truth))).float(),
        image_feats=image, point_scores=np.ones(n, np.float32),
        image_scores=np.ones((H_CELLS, W_CELLS), np.float32), similarity=_similarity,
        stride=STRIDE, network_matches={}, image_hw=(HEIGHT, WIDTH), num_points=n,
        cell_convention=convention, fine_image_feats=None)
    return features, points


@pytest.mark.parametrize("convention", ["stem", "legacy"])
def test_matches_inside_windows_land_near_the_true_projection(convention):
    # the window matcher reads the cell centres of the features' own convention
    features, points = _features(convention=convention)
    rows = np.arange(0, 4000, 7)
    raw, _ = CAMERA.project(transform_points(T_TRUE, points[rows, :3].astype(np.float64)))
    truth = raw @ A[:2, :2].T + A[:2, 2]
    inside = np.all((truth > 8) & (truth < [416 - 8, 128 - 8]), axis=1)
    match = CoarseWindowMatcher(features, rows)
    offset = np.random.default_rng(1).uniform(-6, 6, truth.shape)
    found = match(truth + offset, 3.0)
    error = np.linalg.norm(found - truth, axis=1)[inside]
    assert np.median(error) < 1.0  # sub-cell: a cell is 4 px
    # a window off the image holds no cell; a NaN centre is not matched
    empty = match(np.tile([[-100.0, -100.0]], (len(rows), 1)), 3.0)
    assert np.isnan(empty).all()
    centres = truth.copy()
    centres[0] = np.nan
    assert np.isnan(match(centres, 3.0)[0]).all()


def test_recovers_the_pose_from_a_prior_10_deg_25_cm_away():
    features, points = _features()
    T_ref = prior_at_distance(T_TRUE, 10.0, 0.25, np.random.default_rng(3))
    result = match_guided(features, points, CAMERA, T_ref,
                          GuidedSettings(max_sigma_trans_m=1.0))
    assert result.poolable and result.solved, result.reason
    T = result.estimate.T_cam_lidar
    assert rre_geodesic_deg(T[:3, :3], T_TRUE[:3, :3]) < 0.2
    assert np.linalg.norm(T[:3, 3] - T_TRUE[:3, 3]) < 0.05
    frame = result.matches
    assert 900 <= len(frame) <= 1000 and frame.pixel_scale == pytest.approx(1 / SCALE)
    # matches are undistorted input pixels of the pinhole K
    cam = transform_points(T_TRUE, frame.points)
    pinhole = (cam @ K.T)[:, :2] / cam[:, 2:3]
    assert np.median(np.linalg.norm(frame.pixels - pinhole, axis=1)) < 2.0
    assert result.inliers.shape == (len(frame),) and result.inliers.mean() > 0.9


def test_the_window_matcher_is_a_seam():
    """An exact matcher (the true network pixel of every point, as a fine matching head would
    give) recovers the pose exactly through A⁻¹ and the lens model."""
    features, points = _features()

    def exact(features: NetworkFeatures, rows: np.ndarray):
        raw, _ = CAMERA.project(transform_points(T_TRUE, points[rows, :3].astype(np.float64)))
        truth = raw @ A[:2, :2].T + A[:2, 2]
        return lambda centres, radius: np.where(np.isfinite(centres), truth, np.nan)

    T_ref = prior_at_distance(T_TRUE, 5.0, 0.1, np.random.default_rng(4))
    result = match_guided(features, points, CAMERA, T_ref, GuidedSettings(max_sigma_trans_m=1.0),
                          matcher=exact)
    assert result.solved, result.reason
    assert np.abs(pose_delta(result.estimate.T_cam_lidar, T_TRUE)).max() < 1e-6


def test_refusals_say_why():
    features, points = _features()
    away = T_TRUE.copy()
    away[:3, :3] = np.diag([-1.0, 1.0, -1.0]) @ away[:3, :3]  # turned by 180° about y
    behind = match_guided(features, points, CAMERA, away)
    assert not behind.poolable and not behind.solved and behind.matches is None
    assert "points in view" in behind.reason and behind.estimate is None
    strict = match_guided(features, points, CAMERA, T_TRUE,
                          GuidedSettings(max_sigma_trans_m=1e-4))
    assert strict.poolable and not strict.solved
    assert "translation sigma" in strict.reason and strict.estimate is not None
    far = match_guided(features, points, CAMERA,
                       prior_at_distance(T_TRUE, 0.0, 0.3, np.random.default_rng(5)),
                       GuidedSettings(max_translation_from_ref_m=0.1, max_sigma_trans_m=1.0))
    assert not far.poolable and "from the reference" in far.reason
    with pytest.raises(ValueError, match="T_ref"):
        match_guided(features, points, CAMERA, np.eye(3))


def test_points_are_drawn_stratified_over_depth():
    settings = GuidedSettings(depth_bins=4, min_depth_m=1.0, max_depth_m=81.0)
    rng = np.random.default_rng(6)
    # bins [1, 3), [3, 9), [9, 27), [27, 81): 20, 500, 1000, 5000 points
    depth = np.concatenate([rng.uniform(1, 3, 20), rng.uniform(3, 9, 500),
                            rng.uniform(9, 27, 1000), rng.uniform(27, 81, 5000)])
    chosen = choose_points(depth, 1000, settings, rng)
    assert len(chosen) == 1000 and len(np.unique(chosen)) == 1000
    counts = np.histogram(depth[chosen], bins=[1, 3, 9, 27, 81])[0]
    assert counts[0] == 20  # all of the small bin, the rest shared equally
    assert np.all(np.abs(counts[1:] - 980 / 3) <= 1)
    assert len(choose_points(depth[:100], 1000, settings, rng)) == 100


def test_runs_on_a_real_network_forward(tmp_path, save_tiny_calibration_checkpoint):
    """The tiny untrained model: one forward serves the guided stage end to end."""
    calibrator = Calibrator.from_checkpoint(save_tiny_calibration_checkpoint(tmp_path / "t.pt"))
    rng = np.random.default_rng(7)
    xyz, _ = seen_points(rng, 3000, depth=(3.0, 35.0))
    points = np.column_stack((xyz, rng.uniform(0, 1, len(xyz)))).astype(np.float32)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    camera = CameraModel(K, WIDTH, HEIGHT)
    features = calibrator.features(image, points, camera)
    result = match_guided(features, points, camera, T_TRUE, GuidedSettings(min_points=100))
    assert result.num_in_view > 100 and result.matches is not None
    assert result.solved == (result.reason == "")
    assert result.matches.pixel_scale == pytest.approx(features.pixel_scale)
