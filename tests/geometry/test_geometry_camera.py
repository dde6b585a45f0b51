"""Camera models: agreement with OpenCV, distortion round trips, K under resize/crop/flip."""

import cv2
import numpy as np
import pytest

from nclr_core.geometry.camera import (
    CameraModel,
    check_sensor_camera,
    crop_intrinsics,
    flip_intrinsics,
    scale_intrinsics,
)

K = np.array([[400.0, 0.0, 161.3], [0.0, 390.0, 118.7], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 320, 240
PLUMB_BOB_D = np.array([-0.28, 0.09, 0.0012, -0.0008, -0.015])
EQUIDISTANT_D = np.array([0.05, -0.01, 0.004, -0.001])


def _points_in_view(rng: np.random.Generator, count: int, half_angle: float) -> np.ndarray:
    """Camera-frame points (count, 3) within half_angle (rad) of the optical axis."""
    theta = rng.uniform(0.0, half_angle, count)
    azimuth = rng.uniform(-np.pi, np.pi, count)
    depth = rng.uniform(1.0, 30.0, count)
    r = np.tan(theta)
    return np.stack([r * np.cos(azimuth), r * np.sin(azimuth), np.ones(count)], axis=1) * depth[
        :, None
    ]


def _cameras() -> list[CameraModel]:
    return [
        CameraModel(K, WIDTH, HEIGHT),
        CameraModel(K, WIDTH, HEIGHT, "plumb_bob", PLUMB_BOB_D),
        CameraModel(K, WIDTH, HEIGHT, "equidistant", EQUIDISTANT_D),
    ]


def test_plumb_bob_projection_and_undistortion_match_opencv() -> None:
    camera = CameraModel(K, WIDTH, HEIGHT, "plumb_bob", PLUMB_BOB_D)
    points = _points_in_view(np.random.default_rng(0), 200, np.deg2rad(35.0))
    uv, depth = camera.project(points)
    zero = np.zeros(3)
    expected, _ = cv2.projectPoints(points[:, None], zero, zero, K, PLUMB_BOB_D)
    np.testing.assert_allclose(uv, expected[:, 0], atol=1e-8)
    np.testing.assert_array_equal(depth, points[:, 2])

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    undistorted_cv = cv2.undistortPoints(uv[:, None], K, PLUMB_BOB_D, P=K, criteria=criteria)
    np.testing.assert_allclose(camera.undistort_points(uv), undistorted_cv[:, 0], atol=1e-6)


def test_equidistant_projection_and_undistortion_match_opencv() -> None:
    camera = CameraModel(K, WIDTH, HEIGHT, "equidistant", EQUIDISTANT_D)
    points = _points_in_view(np.random.default_rng(1), 200, np.deg2rad(80.0))
    uv, _ = camera.project(points)
    zero = np.zeros((1, 1, 3))
    expected, _ = cv2.fisheye.projectPoints(points[:, None], zero, zero, K, EQUIDISTANT_D)
    np.testing.assert_allclose(uv, expected[:, 0], atol=1e-8)

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)
    undistorted_cv = cv2.fisheye.undistortPoints(
        uv[:, None], K, EQUIDISTANT_D, R=np.eye(3), P=K, criteria=criteria
    )
    np.testing.assert_allclose(camera.undistort_points(uv), undistorted_cv[:, 0], atol=1e-6)


@pytest.mark.parametrize("camera", _cameras(), ids=lambda c: c.distortion)
def test_project_undistort_unproject_round_trip(camera: CameraModel) -> None:
    points = _points_in_view(np.random.default_rng(2), 300, np.deg2rad(35.0))
    uv, depth = camera.project(points)
    np.testing.assert_allclose(camera.unproject(uv, depth), points, rtol=1e-9, atol=1e-9)
    # Undistorted pixels are the plain pinhole projection with the same K.
    pinhole = (K @ (points / points[:, 2:3]).T).T[:, :2]
    np.testing.assert_allclose(camera.undistort_points(uv), pinhole, atol=1e-7)


def test_points_behind_camera_get_nan_pixels() -> None:
    camera = CameraModel(K, WIDTH, HEIGHT, "plumb_bob", PLUMB_BOB_D)
    uv, depth = camera.project(np.array([[0.0, 0.0, -2.0], [0.0, 0.0, 0.0], [0.1, 0.2, 3.0]]))
    assert np.all(np.isnan(uv[:2])) and np.all(np.isfinite(uv[2]))
    np.testing.assert_array_equal(depth, [-2.0, 0.0, 3.0])


def test_equidistant_undistortion_beyond_90_degrees_is_nan() -> None:
    camera = CameraModel(K, WIDTH, HEIGHT, "equidistant", np.zeros(4))
    # theta_d = pi/2 + 0.1 has no ray in front of the camera with zero coefficients.
    uv = np.array([[K[0, 2] + K[0, 0] * (np.pi / 2 + 0.1), K[1, 2]]])
    assert np.all(np.isnan(camera.undistort_points(uv)))


def test_coefficients_are_zero_padded_and_validated() -> None:
    assert np.array_equal(CameraModel(K, 4, 4, "plumb_bob", [0.1, 0.2]).D, [0.1, 0.2, 0, 0, 0])
    assert CameraModel(K, 4, 4).D.shape == (0,)
    with pytest.raises(ValueError, match="at most 5"):
        CameraModel(K, 4, 4, "plumb_bob", np.zeros(8))
    with pytest.raises(ValueError, match="distortion must be one of"):
        CameraModel(K, 4, 4, "fisheye", np.zeros(4))
    with pytest.raises(ValueError, match="'none' takes no"):
        CameraModel(K, 4, 4, "none", [0.1])
    with pytest.raises(ValueError, match="last row"):
        CameraModel(np.eye(3) * 2.0, 4, 4)
    with pytest.raises(ValueError, match="positive"):
        CameraModel(K, 0, 4)


def _blob_image(uv: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.exp(-((cols - uv[0]) ** 2 + (rows - uv[1]) ** 2) / (2.0 * sigma**2))


def _centroid(image: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(cols * image).sum(), (rows * image).sum()]) / image.sum()


@pytest.mark.parametrize(
    ("new_size", "interpolation"),
    [((160, 120), cv2.INTER_AREA), ((480, 300), cv2.INTER_LINEAR), ((200, 90), cv2.INTER_LINEAR)],
)
def test_resized_camera_follows_cv2_resize(new_size: tuple, interpolation: int) -> None:
    camera = CameraModel(K, WIDTH, HEIGHT)
    point = np.array([[0.31, -0.12, 2.0]])
    uv, _ = camera.project(point)
    image = _blob_image(uv[0], HEIGHT, WIDTH, sigma=6.0)
    resized_image = cv2.resize(image, new_size, interpolation=interpolation)
    resized = camera.resized(*new_size)
    assert (resized.width, resized.height) == new_size
    uv_resized, _ = resized.project(point)
    # The blob's centre in the resized image is where the resized camera projects the point
    # (the shortcut cx' = s cx would be off by 0.5 |s - 1| >= 0.25 px here).
    np.testing.assert_allclose(_centroid(resized_image), uv_resized[0], atol=0.03)
    sx, sy = new_size[0] / WIDTH, new_size[1] / HEIGHT
    np.testing.assert_allclose(resized.K, scale_intrinsics(K, sx, sy))
    np.testing.assert_allclose(np.diag(resized.K)[:2], [K[0, 0] * sx, K[1, 1] * sy])


def _marked_image(camera: CameraModel, points: np.ndarray) -> np.ndarray:
    """Image with value i + 1 at the pixel nearest point i's projection."""
    uv, _ = camera.project(points)
    pixels = np.floor(uv + 0.5).astype(int)
    image = np.zeros((camera.height, camera.width), dtype=np.int32)
    image[pixels[:, 1], pixels[:, 0]] = np.arange(1, len(points) + 1)
    return image


def _values_at_projections(camera: CameraModel, points: np.ndarray, image: np.ndarray):
    uv, _ = camera.project(points)
    pixels = np.floor(uv + 0.5).astype(int)
    return image[pixels[:, 1], pixels[:, 0]]


def _grid_points() -> np.ndarray:
    """Camera-frame points spread over the image, far enough apart to own a pixel each."""
    xs, ys = np.meshgrid(np.linspace(-0.35, 0.35, 7), np.linspace(-0.25, 0.25, 5))
    return np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1) * 4.0


@pytest.mark.parametrize("camera", _cameras(), ids=lambda c: c.distortion)
def test_flipped_camera_lands_points_on_mirrored_pixels(camera: CameraModel) -> None:
    points = _grid_points()
    image = _marked_image(camera, points)
    flipped_image = cv2.flip(image, 1)  # u -> W - 1 - u
    flipped = camera.flipped_horizontally()
    assert flipped.K[0, 0] == -camera.K[0, 0]
    assert flipped.K[0, 2] == WIDTH - 1 - camera.K[0, 2]
    expected = np.arange(1, len(points) + 1)
    np.testing.assert_array_equal(_values_at_projections(flipped, points, flipped_image), expected)
    uv, _ = camera.project(points)
    uv_flipped, _ = flipped.project(points)
    np.testing.assert_allclose(uv_flipped[:, 0], WIDTH - 1 - uv[:, 0], atol=1e-9)
    np.testing.assert_allclose(uv_flipped[:, 1], uv[:, 1], atol=1e-12)


def test_flip_that_only_moves_cx_misses_the_mirrored_pixels() -> None:
    """The authors' flip (cx -> W - cx, fx kept) does not put points on the flipped image."""
    camera = CameraModel(K, WIDTH, HEIGHT)
    points = _grid_points()
    flipped_image = cv2.flip(_marked_image(camera, points), 1)
    K_wrong = K.copy()
    K_wrong[0, 2] = WIDTH - K[0, 2]
    wrong = CameraModel(K_wrong, WIDTH, HEIGHT)
    hits = _values_at_projections(wrong, points, flipped_image) == np.arange(1, len(points) + 1)
    assert hits.sum() <= 1  # at most the point near the image centre column
    np.testing.assert_allclose(flip_intrinsics(flip_intrinsics(K, WIDTH), WIDTH), K)


@pytest.mark.parametrize("camera", _cameras(), ids=lambda c: c.distortion)
def test_cropped_camera_lands_points_on_the_same_content(camera: CameraModel) -> None:
    points = _grid_points()
    image = _marked_image(camera, points)
    x0, y0, width, height = 17, 9, 290, 225
    cropped = camera.cropped(x0, y0, width, height)
    assert (cropped.width, cropped.height) == (width, height)
    np.testing.assert_allclose(cropped.K, crop_intrinsics(camera.K, x0, y0))
    np.testing.assert_allclose(cropped.K[:2, 2], camera.K[:2, 2] - [x0, y0])
    crop = image[y0 : y0 + height, x0 : x0 + width]
    np.testing.assert_array_equal(
        _values_at_projections(cropped, points, crop), np.arange(1, len(points) + 1)
    )


@pytest.mark.parametrize("entry, value, message", [
    ((0, 0), 1e-300, "fx = 1e-300 px is implausible"),  # issue 16: a singular solve later
    ((1, 1), 1e-300, "fy = 1e-300 px is implausible"),
    ((0, 0), -400.0, "fx = -400 px is implausible"),  # fine for a flipped training image
    ((1, 1), 1e9, "fy = 1e\\+09 px is implausible"),
    ((0, 2), 5000.0, "cx = 5000 px is far outside the 320x240 image"),
    ((1, 2), -200.0, "cy = -200 px is far outside"),
    ((0, 1), 1e9, "skew"),
])
def test_sensor_cameras_must_have_plausible_intrinsics(entry, value, message):
    assert check_sensor_camera(CameraModel(K, WIDTH, HEIGHT)).K[0, 0] == 400.0
    bad = K.copy()
    bad[entry] = value
    camera = CameraModel(bad, WIDTH, HEIGHT)  # a valid CameraModel (training may flip it)
    with pytest.raises(ValueError, match=message):
        check_sensor_camera(camera)


def test_sensor_camera_range_admits_fisheyes_telephotos_and_crops():
    fisheye = np.array([[0.3 * WIDTH, 0.0, 160.0], [0.0, 0.3 * WIDTH, 120.0], [0, 0, 1.0]])
    telephoto = np.array([[90.0 * WIDTH, 0.0, 160.0], [0.0, 90.0 * WIDTH, 120.0], [0, 0, 1.0]])
    crop = np.array([[400.0, 0.0, -150.0], [0.0, 400.0, 350.0], [0, 0, 1.0]])
    for K_ok in (fisheye, telephoto, crop):
        check_sensor_camera(CameraModel(K_ok, WIDTH, HEIGHT))
