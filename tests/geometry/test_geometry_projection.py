"""LiDAR -> image projection: pixel positions, in-image and positive-depth masks, depth image."""

import json
from pathlib import Path

import numpy as np
import pytest

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.projection import (
    depth_image,
    project_points,
    project_points_with_camera,
)
from nclr_core.geometry.se3 import make_transform, matrix_from_euler

K = np.array([[100.0, 0.0, 20.0], [0.0, 100.0, 10.0], [0.0, 0.0, 1.0]])
IMAGE_HW = (21, 41)  # H, W


def test_pixels_follow_K_and_T_cam_lidar() -> None:
    # LiDAR x forward, y left, z up -> camera z forward, x right, y down.
    R_cam_lidar = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    T_cam_lidar = make_transform(R_cam_lidar, [0.1, -0.2, 0.5])
    points_lidar = np.array([[9.5, -0.9, 0.3, 0.7]])  # x y z intensity
    # Camera frame: (0.9 + 0.1, -0.3 - 0.2, 9.5 + 0.5) = (1.0, -0.5, 10.0).
    projection = project_points(points_lidar, T_cam_lidar, K, IMAGE_HW)
    np.testing.assert_allclose(projection.uv, [[20.0 + 10.0, 10.0 - 5.0]])
    np.testing.assert_allclose(projection.depth, [10.0])
    assert projection.in_image.tolist() == [True]
    np.testing.assert_array_equal(projection.pixels(), [[30, 5]])


def test_in_image_mask_uses_nearest_pixel_centre() -> None:
    width, height = IMAGE_HW[1], IMAGE_HW[0]
    # Points at depth 1 whose pixels straddle the image borders [-0.5, W - 0.5) x [-0.5, H - 0.5).
    uv = np.array(
        [
            [-0.49, 5.0],  # rounds to column 0: inside
            [-0.51, 5.0],  # rounds to column -1: outside
            [width - 0.51, 5.0],  # column W - 1: inside
            [width - 0.49, 5.0],  # column W: outside
            [3.0, -0.49],  # row 0: inside
            [3.0, height - 0.49],  # row H: outside
            [3.0, height - 0.51],  # row H - 1: inside
            [500.0, 5.0],  # far right: outside
        ]
    )
    points_cam = np.concatenate([(uv - K[:2, 2]) / K[0, 0], np.ones((len(uv), 1))], axis=1)
    projection = project_points(points_cam, np.eye(4), K, IMAGE_HW)
    np.testing.assert_allclose(projection.uv, uv, atol=1e-9)
    expected = [True, False, True, False, True, False, True, False]
    assert projection.in_image.tolist() == expected
    pixels = projection.pixels()
    assert pixels[1].tolist() == [-1, -1]
    assert pixels[2].tolist() == [width - 1, 5]


def test_positive_depth_mask() -> None:
    # Each point lies on the optical axis, whose pixel is the image centre if depth is ignored.
    points_cam = np.array(
        [[0.0, 0.0, 5.0], [0.0, 0.0, -5.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5e-4], [0.0, 0.0, 2e-3]]
    )
    projection = project_points(points_cam, np.eye(4), K, IMAGE_HW, min_depth=1e-3)
    assert projection.in_image.tolist() == [True, False, False, False, True]
    assert np.all(np.isnan(projection.uv[1:4]))
    np.testing.assert_array_equal(projection.depth, points_cam[:, 2])
    # min_depth = 0 admits the 0.5 mm point but never a point at zero or negative depth.
    projection = project_points(points_cam, np.eye(4), K, IMAGE_HW, min_depth=0.0)
    assert projection.in_image.tolist() == [True, False, False, True, True]


def test_rotation_about_optical_axis_moves_pixels() -> None:
    T = make_transform(matrix_from_euler([0.0, 0.0, np.pi / 2], "xyz"), np.zeros(3))
    projection = project_points(np.array([[0.1, 0.0, 1.0]]), T, K, IMAGE_HW)
    # (0.1, 0, 1) rotated 90 deg about z is (0, 0.1, 1): 10 px down from the centre.
    np.testing.assert_allclose(projection.uv, [[20.0, 20.0]], atol=1e-9)


def test_depth_image_nearest_return_wins() -> None:
    points_cam = np.array(
        [
            [0.0, 0.0, 4.0],  # centre pixel (20, 10)
            [0.0, 0.0, 2.0],  # same pixel, nearer: wins
            [0.0, 0.0, 3.0],  # same pixel, in between
            [0.1, 0.05, 1.0],  # pixel (30, 15)
            [0.0, 0.0, -1.0],  # behind the camera
            [5.0, 0.0, 1.0],  # outside the image
        ]
    )
    image = depth_image(points_cam, np.eye(4), K, IMAGE_HW)
    assert image.shape == IMAGE_HW and image.dtype == np.float32
    assert image[10, 20] == 2.0 and image[15, 30] == 1.0
    assert np.count_nonzero(image) == 2


def test_camera_projection_matches_pinhole_and_lens_model() -> None:
    rng = np.random.default_rng(0)
    # Rays within |X / Z|, |Y / Z| < 0.6, where the lens model below is one-to-one.
    depth = rng.uniform(-2, 8, 200)
    points = np.c_[rng.uniform(-0.6, 0.6, (200, 2)) * np.abs(depth)[:, None], depth]
    pinhole = CameraModel(K, IMAGE_HW[1], IMAGE_HW[0])
    expected = project_points(points, np.eye(4), K, IMAGE_HW)
    got = project_points_with_camera(points, np.eye(4), pinhole)
    np.testing.assert_array_equal(got.in_image, expected.in_image)
    np.testing.assert_allclose(got.uv, expected.uv, atol=1e-12)
    assert 0 < expected.in_image.sum() < len(points)

    distorted = CameraModel(K, IMAGE_HW[1], IMAGE_HW[0], "plumb_bob", [-0.28, 0.09, 0.0, 0.0])
    got = project_points_with_camera(points, np.eye(4), distorted)
    uv, _ = distorted.project(points)
    front = points[:, 2] > 1e-3
    np.testing.assert_allclose(got.uv[front], uv[front], atol=1e-12)
    nearest = np.floor(uv + 0.5)
    inside = front & np.all((nearest >= 0) & (nearest < [IMAGE_HW[1], IMAGE_HW[0]]), axis=1)
    np.testing.assert_array_equal(got.in_image, inside)


def test_rays_folded_into_the_image_by_the_lens_model_are_rejected() -> None:
    # x = X / Z = 2.25 lies beyond the fold of this radial model: its distorted coordinate is
    # about -0.13, which lands inside the image on the opposite side of the centre.
    camera = CameraModel(K, 320, 240, "plumb_bob", [-0.28, 0.09, 0.0, 0.0, -0.015])
    points = np.array([[2.25 * 5.0, 0.0, 5.0], [0.2 * 5.0, 0.0, 5.0]])
    uv, _ = camera.project(points)
    assert 0 <= uv[0, 0] < camera.width and uv[0, 0] < K[0, 2]
    projection = project_points_with_camera(points, np.eye(4), camera)
    assert projection.in_image.tolist() == [False, True]


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"points must have shape"):
        project_points(np.zeros((3, 2)), np.eye(4), K, IMAGE_HW)
    with pytest.raises(ValueError, match="T_cam_lidar"):
        project_points(np.zeros((3, 3)), np.eye(3), K, IMAGE_HW)
    with pytest.raises(ValueError, match="image_hw"):
        project_points(np.zeros((3, 3)), np.eye(4), K, (0, 10))


def test_real_kitti_frame_cropped_to_the_camera_view_projects_inside(real_data: Path) -> None:
    folder = real_data / "kitti_fov_cropped"
    calib = json.loads((folder / "calib.json").read_text())
    P2 = np.array(calib["cam2img_P2"])
    K_kitti = P2[:, :3]
    # T_cam_lidar = [I | b] R0_rect Tr_velo_to_cam with b = K^-1 P2[:, 3] (METHOD.md section 0).
    R0_rect = np.array(calib["R0_rect"])
    Tr = np.array(calib["Tr_velo_to_cam"])
    T_cam_lidar = make_transform(np.eye(3), np.linalg.solve(K_kitti, P2[:, 3])) @ R0_rect @ Tr
    points = np.fromfile(folder / "000008.bin", dtype=np.float32).reshape(-1, 4)
    projection = project_points(points, T_cam_lidar, K_kitti, (calib["H"], calib["W"]))
    # The cloud was cropped to the camera view with this calibration.
    assert projection.in_image.mean() > 0.99
    homogeneous = np.c_[points[:, :3], np.ones(len(points))] @ (P2 @ R0_rect @ Tr).T
    np.testing.assert_allclose(
        projection.uv, homogeneous[:, :2] / homogeneous[:, 2:], atol=1e-3
    )
