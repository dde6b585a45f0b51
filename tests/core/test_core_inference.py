"""Calibrator: a tiny untrained checkpoint end to end, and exact recovery with oracle matches.

The oracle test keeps the real network (overlap heads, mask, point selection) but replaces
its match pixels by the true ones, computed here by hand in network pixels (resize by 0.32,
crop 32 columns), so that the back-mapping to input pixels, the undistortion and the
RANSAC-PnP are checked against a known pose.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nclr_core.checkpoint import save_checkpoint
from nclr_core.data.transforms import NormalizeImage
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.pnp_ransac import solve_pnp_ransac
from nclr_core.geometry.se3 import invert, make_transform, matrix_from_rpy, transform_points
from nclr_core.inference import Calibrator, NetworkInput, SolverSettings
from nclr_core.models.calibration_net import CalibrationNet
from nclr_core.network_input import fit_image

NET_H, NET_W = 64, 128
IN_H, IN_W = 200, 600  # cover scale max(64/200, 128/600) = 0.32 -> 64 x 192, crop x0 = 32
SCALE, CROP_X0 = 0.32, 32
POINT_RANGE = [-40.0, -40.0, -3.0, 40.0, 40.0, 3.0]
TINY_MODEL = {
    "image_depth": 18, "fpn_channels": 16, "point_base_channels": 8, "voxel_size": 0.5,
    "point_range": POINT_RANGE, "channels": 16, "fusion_d_model": 32, "fusion_heads": 2,
    "fusion_layers": 1, "fusion_keypoints": 32, "max_match_points": 64,
    "min_match_points": 8, "min_match_cells": 16,
}
DATA = {"image_height": NET_H, "image_width": NET_W, "max_points": 1500,
        "point_range": POINT_RANGE}
# camera looks along LiDAR +x, slightly rotated and offset
T_TRUE = make_transform(
    matrix_from_rpy([0.02, -0.03, 0.01]) @ np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]]),
    [0.05, -0.1, 0.2])


def _camera(distortion: str = "plumb_bob") -> CameraModel:
    K = np.array([[300.0, 0.0, 299.5], [0.0, 300.0, 99.5], [0.0, 0.0, 1.0]])
    D = np.array([-0.1, 0.01, 0.001, -0.001, 0.0]) if distortion == "plumb_bob" else np.zeros(0)
    return CameraModel(K, IN_W, IN_H, distortion, D)


def _frame(camera: CameraModel, n_view: int = 1200, n_behind: int = 800, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    """RGB image (IN_H, IN_W, 3) and (N, 4) points: n_view seen by the camera under T_TRUE
    (uniform pixels, depth 4..30 m), n_behind behind the camera."""
    rng = np.random.default_rng(seed)
    uv = rng.uniform([0, 0], [IN_W - 1, IN_H - 1], size=(n_view, 2))
    cam = camera.unproject(uv, rng.uniform(4.0, 30.0, n_view))
    lidar = transform_points(invert(T_TRUE), cam)
    behind = np.column_stack([rng.uniform(-30, -4, n_behind), rng.uniform(-10, 10, n_behind),
                              rng.uniform(-2, 2, n_behind)])
    xyz = np.concatenate([lidar, behind])
    points = np.column_stack([xyz, rng.uniform(0, 1, len(xyz))]).astype(np.float32)
    image = rng.integers(0, 256, size=(IN_H, IN_W, 3), dtype=np.uint8)
    return image, points


def _tiny_checkpoint(path, model_cls=CalibrationNet, **extra) -> str:
    torch.manual_seed(0)
    net = model_cls(**TINY_MODEL, **extra)
    save_checkpoint(path, model=net.state_dict(), config={"model": TINY_MODEL, "data": DATA})
    return str(path)


def test_untrained_checkpoint_flows_end_to_end(tmp_path):
    calibrator = Calibrator.from_checkpoint(_tiny_checkpoint(tmp_path / "tiny.pt"))
    camera = _camera()
    image, points = _frame(camera)
    far = np.array([[100.0, 0.0, 0.0, 0.5]], dtype=np.float32)  # outside the point range
    points = np.concatenate([points, far])
    result = calibrator.calibrate(image, points, camera)

    n = len(points)
    assert result.T_cam_lidar.shape == (4, 4)
    assert result.point_overlap.shape == (n,) and result.point_overlap.dtype == np.float32
    assert result.point_used.shape == (n,) and not result.point_used[-1]
    assert result.point_used.sum() == DATA["max_points"]  # subsampled to the cap
    assert np.all(result.point_overlap[~result.point_used] == 0)
    assert np.all((result.point_overlap[result.point_used] > 0)
                  & (result.point_overlap[result.point_used] < 1))
    assert result.image_overlap_mask.shape == (IN_H, IN_W)
    assert result.image_overlap_mask.dtype == np.uint8
    assert set(np.unique(result.image_overlap_mask)) <= {0, 255}
    # input columns cropped away before the network (u' = 0.32 (u + 0.5) - 0.5 - 32 < -0.5,
    # i.e. u < 99.5, and symmetrically u > 499.5) are never in the overlap
    assert not result.image_overlap_mask[:, :100].any()
    assert not result.image_overlap_mask[:, 500:].any()
    m = result.matches
    k = len(m.point_index)
    assert k == TINY_MODEL["max_match_points"]
    assert result.point_used[m.point_index].all()
    np.testing.assert_array_equal(m.points, points[m.point_index, :3])
    assert m.pixels.shape == (k, 2) and m.weights.shape == (k,) and m.inliers.shape == (k,)
    # soft-matched pixels are convex combinations of cell centres inside the crop
    assert np.all(m.pixels[:, 0] > CROP_X0 / SCALE - 1) and np.all(m.pixels[:, 0] < IN_W)
    assert np.all(m.pixels[:, 1] > -1) and np.all(m.pixels[:, 1] < IN_H)
    q = result.quality
    assert q.num_points_used == DATA["max_points"] and q.num_matches == k
    assert q.num_inliers == int(m.inliers.sum())
    assert 0.0 <= q.overlap_ratio <= 1.0
    assert q.valid == (q.reason == "")
    # the same frame gives the same scores and matches (up to float summation order)
    again = calibrator.calibrate(image, points, camera)
    np.testing.assert_allclose(again.point_overlap, result.point_overlap, atol=1e-4)
    np.testing.assert_array_equal(again.matches.point_index, m.point_index)


ORACLE_CELL = (5, 20)


class OracleNet(CalibrationNet):
    """The tiny network, with its match pixels replaced by the true network pixels."""

    camera: CameraModel

    def forward(self, batch, pose_loss_enabled=False):
        out = super().forward(batch, pose_loss_enabled)
        frame = out["matches"][0]
        xyz = batch["points"][frame["point_index"], :3].double().numpy()
        raw, _ = self.camera.project(transform_points(T_TRUE, xyz))  # distorted input px
        net = SCALE * (raw + 0.5) - 0.5 - np.array([CROP_X0, 0.0])  # by hand, not from K
        seen = np.isfinite(net).all(1) & (net[:, 0] > -0.5) & (net[:, 0] < NET_W - 0.5)
        frame["pixels"] = torch.from_numpy(np.nan_to_num(net)).float()
        frame["weights"] = torch.from_numpy(seen.astype(np.float32))
        # image overlap: only feature cell (row 5, column 20) of the stride-4 map
        out["image_scores"] = torch.zeros_like(out["image_scores"])
        out["image_scores"][0, ORACLE_CELL[0], ORACLE_CELL[1]] = 1.0
        return out


@pytest.mark.parametrize("distortion", ["none", "plumb_bob"])
def test_oracle_matches_recover_the_pose(tmp_path, distortion):
    camera = _camera(distortion)
    path = _tiny_checkpoint(tmp_path / "oracle.pt", OracleNet)
    plain = Calibrator.from_checkpoint(path)
    oracle = OracleNet(**TINY_MODEL)
    oracle.load_state_dict(plain.model.state_dict())
    oracle.camera = camera
    settings = SolverSettings(reprojection_threshold_px=1.0, min_inliers=12)
    calibrator = Calibrator(oracle, plain.network_input, settings)
    image, points = _frame(camera, n_view=1500, n_behind=0, seed=1)
    result = calibrator.calibrate(image, points, camera)

    assert result.quality.valid, result.quality.reason
    # float32 network pixels (~1e-5 px) limit the precision
    np.testing.assert_allclose(result.T_cam_lidar, T_TRUE, atol=2e-4)
    true_raw, _ = camera.project(transform_points(T_TRUE, result.matches.points))
    used = result.matches.weights > 0
    np.testing.assert_allclose(result.matches.pixels[used], true_raw[used], atol=1e-3)
    assert result.quality.num_inliers == int(used.sum())
    assert result.quality.reprojection_error_px < 0.01

    # the one overlap cell, centred at network pixel (4 * 20, 4 * 5), comes back around
    # input pixel ((80 + 32 + 0.5) / 0.32 - 0.5, (20 + 0.5) / 0.32 - 0.5)
    centre = np.array([(80.0 + CROP_X0 + 0.5) / SCALE - 0.5, (20.0 + 0.5) / SCALE - 0.5])
    rows, cols = np.nonzero(result.image_overlap_mask)
    assert result.image_overlap_mask[round(centre[1]), round(centre[0])] == 255
    assert np.all(np.abs(cols - centre[0]) < 0.5 * 4 / SCALE)  # within half a cell
    assert np.all(np.abs(rows - centre[1]) < 0.5 * 4 / SCALE)
    assert len(rows) > (0.5 * 4 / SCALE) ** 2  # and not a sliver

    # online regime: a prior within the bounds keeps it valid, a far one rejects it
    near = make_transform(matrix_from_rpy([0.05, 0.0, 0.0]) @ T_TRUE[:3, :3],
                          T_TRUE[:3, 3] + [0.1, 0.0, 0.0])
    ok = calibrator.calibrate(image, points, camera, T_init=near)
    assert ok.quality.valid
    assert ok.quality.rotation_from_prior_deg == pytest.approx(np.degrees(0.05), abs=0.05)
    assert ok.quality.translation_from_prior_m == pytest.approx(0.1, abs=1e-3)
    far = make_transform(matrix_from_rpy([0.5, 0.0, 0.0]) @ T_TRUE[:3, :3], T_TRUE[:3, 3])
    rejected = calibrator.calibrate(image, points, camera, T_init=far)
    assert not rejected.quality.valid and "prior" in rejected.quality.reason


def test_bad_input_raises_clear_errors(tmp_path):
    calibrator = Calibrator.from_checkpoint(_tiny_checkpoint(tmp_path / "tiny.pt"))
    camera = _camera()
    image, points = _frame(camera, n_view=50, n_behind=0)
    with pytest.raises(ValueError, match="camera model is"):
        calibrator.calibrate(image[:100], points, camera)
    with pytest.raises(ValueError, match="uint8"):
        calibrator.calibrate(image.astype(np.float32), points, camera)
    bad = points.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        calibrator.calibrate(image, bad, camera)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        calibrator.calibrate(image, points[:, :3], camera)
    with pytest.raises(ValueError, match="point range"):
        calibrator.calibrate(image, points + np.float32([500, 0, 0, 0]), camera)
    with pytest.raises(ValueError, match="T_init"):
        calibrator.calibrate(image, points, camera, T_init=np.eye(3))


def test_checkpoint_without_config_is_refused(tmp_path):
    net = CalibrationNet(**TINY_MODEL)
    save_checkpoint(tmp_path / "bare.pt", model=net.state_dict())
    with pytest.raises(ValueError, match="no config"):
        Calibrator.from_checkpoint(tmp_path / "bare.pt")
    save_checkpoint(tmp_path / "nodata.pt", model=net.state_dict(),
                    config={"model": TINY_MODEL, "data": {"image_height": 64}})
    with pytest.raises(ValueError, match="lacks image_width, max_points, point_range"):
        Calibrator.from_checkpoint(tmp_path / "nodata.pt")
    save_checkpoint(tmp_path / "badrange.pt", model=net.state_dict(),
                    config={"model": TINY_MODEL, "data": {**DATA, "point_range": [0.0] * 5}})
    with pytest.raises(ValueError, match=r"data.point_range: expected 6 items"):
        Calibrator.from_checkpoint(tmp_path / "badrange.pt")


def test_network_input_validation():
    with pytest.raises(ValueError, match="lower bounds"):
        NetworkInput(64, 128, 100, (1.0, 0.0, 0.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        NetworkInput(0, 128, 100, tuple(POINT_RANGE))


def test_the_pixel_map_is_the_resize_then_centre_crop():
    net = NetworkInput(96, 320, 1000, (-40.0, -40.0, -3.0, 40.0, 40.0, 1.0))
    K = np.array([[700.0, 0.0, 200.0], [0.0, 700.0, 50.0], [0.0, 0.0, 1.0]])
    image = np.zeros((100, 400, 3), dtype=np.uint8)
    net_image, A = fit_image(image, K, net, NormalizeImage())
    # 100x400 -> scale 0.96 covers 96x320 as 96x384; the centre crop drops 32 columns left.
    # Pixel-centre aligned resize: u' = s (u + 0.5) - 0.5.
    expected = np.array([[0.96, 0.0, 0.5 * (0.96 - 1) - 32], [0.0, 0.96, 0.5 * (0.96 - 1)],
                         [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(A, expected, atol=1e-12)
    assert net_image.shape == (3, 96, 320)


def test_from_checkpoint_builds_the_voxel_grid_from_data_point_range(tmp_path):
    """pretrain.py stores point_range under data only: the Calibrator must use it."""
    model_kwargs = {k: v for k, v in TINY_MODEL.items() if k != "point_range"}
    path = tmp_path / "no_model_range.pt"
    net = CalibrationNet(**model_kwargs, point_range=POINT_RANGE)
    save_checkpoint(path, model=net.state_dict(), config={"model": model_kwargs, "data": DATA})
    calibrator = Calibrator.from_checkpoint(path)
    assert list(calibrator.model.point_encoder.point_range) == POINT_RANGE


# the LiDAR cloud turned by 180° about its z axis: points behind the vehicle land in view
T_MIRROR = T_TRUE @ make_transform(matrix_from_rpy([0.0, 0.0, np.pi]), [0.0, 0.0, 0.0])


class MirrorOracleNet(CalibrationNet):
    """Exact matches for the points ahead, and for the points behind the vehicle the pixels
    they would have if the cloud were turned by 180° (a street alike ahead and behind)."""

    camera: CameraModel

    def forward(self, batch, pose_loss_enabled=False):
        out = super().forward(batch, pose_loss_enabled)
        frame = out["matches"][0]
        xyz = batch["points"][frame["point_index"], :3].double().numpy()
        ahead = xyz[:, 0] > 0
        raw = np.where(ahead[:, None], self.camera.project(transform_points(T_TRUE, xyz))[0],
                       self.camera.project(transform_points(T_MIRROR, xyz))[0])
        net = SCALE * (raw + 0.5) - 0.5 - np.array([CROP_X0, 0.0])
        seen = np.isfinite(net).all(1) & (net[:, 0] > -0.5) & (net[:, 0] < NET_W - 0.5) \
            & (net[:, 1] > -0.5) & (net[:, 1] < NET_H - 0.5)
        frame["pixels"] = torch.from_numpy(np.nan_to_num(net)).float()
        frame["weights"] = torch.from_numpy(seen.astype(np.float32))
        return out


def test_a_prior_drops_matches_behind_the_camera_and_resolves_the_turned_pose(tmp_path):
    camera = _camera("none")
    path = _tiny_checkpoint(tmp_path / "mirror.pt", MirrorOracleNet)
    plain = Calibrator.from_checkpoint(path)
    oracle = MirrorOracleNet(**{**TINY_MODEL, "max_match_points": 600})
    oracle.load_state_dict(plain.model.state_dict())
    oracle.camera = camera
    settings = SolverSettings(reprojection_threshold_px=1.0, min_inliers=8)
    calibrator = Calibrator(oracle, plain.network_input, settings)
    image, points = _frame(camera, n_view=500, n_behind=1000, seed=2)

    alone = calibrator.calibrate(image, points, camera)  # more mirrored matches than true
    assert alone.quality.valid, alone.quality.reason
    np.testing.assert_allclose(alone.T_cam_lidar, T_MIRROR, atol=1e-3)

    near = make_transform(matrix_from_rpy([0.1, 0.0, 0.05]) @ T_TRUE[:3, :3],
                          T_TRUE[:3, 3] + [0.2, 0.0, 0.0])
    with_prior = calibrator.calibrate(image, points, camera, T_init=near)
    assert with_prior.quality.valid, with_prior.quality.reason
    np.testing.assert_allclose(with_prior.T_cam_lidar, T_TRUE, atol=1e-3)
    assert with_prior.quality.num_inliers < alone.quality.num_inliers


@pytest.fixture()
def single_threaded():
    """Two forwards agree bit for bit only single-threaded (float summation order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_calibrate_is_one_forward_and_the_global_stage_on_it(tmp_path, single_threaded):
    """`features` runs the network once; `calibrate` = `solve_global(features(...))`: the
    network's own matches mapped back through A⁻¹, then RANSAC-PnP on them."""
    calibrator = Calibrator.from_checkpoint(_tiny_checkpoint(tmp_path / "tiny.pt"))
    camera = _camera()
    image, points = _frame(camera)
    features = calibrator.features(image, points, camera)

    m = len(features.used)
    assert m == DATA["max_points"] and features.num_points == len(points)
    assert features.point_feats.shape == (m, TINY_MODEL["channels"])
    assert features.image_feats.shape == (TINY_MODEL["channels"], NET_H // 4, NET_W // 4)
    assert features.point_scores.shape == (m,)
    assert features.image_scores.shape == (NET_H // 4, NET_W // 4)
    assert features.pixel_scale == pytest.approx(1 / SCALE)
    np.testing.assert_allclose(features.K_net, features.A @ camera.K)
    similarity = features.similarity(features.point_feats[:3], features.point_feats.new_zeros(
        5, TINY_MODEL["channels"]) + 1)
    assert similarity.shape == (3, 5)

    result = calibrator.calibrate(image, points, camera)
    again = calibrator.solve_global(features, points, camera)
    np.testing.assert_array_equal(result.matches.point_index, again.matches.point_index)
    np.testing.assert_allclose(result.matches.pixels, again.matches.pixels, atol=1e-4)
    np.testing.assert_array_equal(result.point_used, again.point_used)
    np.testing.assert_array_equal(result.image_overlap_mask, again.image_overlap_mask)

    net = features.network_matches
    np.testing.assert_array_equal(again.matches.point_index, features.used[net["point_index"]])
    # by hand: input u = (u' + 32 + 0.5) / 0.32 − 0.5, v = (v' + 0.5) / 0.32 − 0.5
    by_hand = (net["pixels"] + [CROP_X0 + 0.5, 0.5]) / SCALE - 0.5
    np.testing.assert_allclose(again.matches.pixels, by_hand, atol=1e-9)
    np.testing.assert_array_equal(again.matches.weights, net["weights"])
    s = calibrator.settings
    usable = net["weights"] > 0
    x2d = camera.undistort_points(by_hand[usable])
    reference = solve_pnp_ransac(points[again.matches.point_index[usable], :3], x2d, camera.K,
                                 s.reprojection_threshold_px, s.ransac_iterations,
                                 s.ransac_confidence, s.seed)
    np.testing.assert_array_equal(again.matches.inliers[usable], reference.inliers)
    assert reference.valid  # random weights, but RANSAC still finds some consensus
    np.testing.assert_allclose(again.T_cam_lidar[:3, :3], reference.R, atol=1e-9)
