"""`FrameMatches`: the unit the joint solve pools (nclr_core.online.matches)."""
import numpy as np
import pytest
from online_scene import HEIGHT, WIDTH, K

from nclr_core.geometry.camera import CameraModel
from nclr_core.inference import CalibrationQuality, CalibrationResult, Matches
from nclr_core.online.matches import FrameMatches


def test_validates_shapes_values_and_converts_to_float64():
    points = np.zeros((3, 3), np.float32)
    frame = FrameMatches(points, np.zeros((3, 2)), np.ones(3), K, 2.5)
    assert frame.points.dtype == np.float64 and len(frame) == 3 and frame.pixel_scale == 2.5
    with pytest.raises(ValueError, match=r"points \(K, 3\)"):
        FrameMatches(points, np.zeros((2, 2)), np.ones(3), K)
    with pytest.raises(ValueError, match="finite"):
        FrameMatches(points, np.full((3, 2), np.nan), np.ones(3), K)
    with pytest.raises(ValueError, match="weights"):
        FrameMatches(points, np.zeros((3, 2)), -np.ones(3), K)
    with pytest.raises(ValueError, match="K"):
        FrameMatches(points, np.zeros((3, 2)), np.ones(3), K[:2])
    with pytest.raises(ValueError, match="pixel_scale"):
        FrameMatches(points, np.zeros((3, 2)), np.ones(3), K, 0.0)


def test_from_global_keeps_the_ransac_inliers_undistorted():
    camera = CameraModel(K, WIDTH, HEIGHT, "plumb_bob", [-0.1, 0.02, 0.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    cam = np.column_stack((rng.uniform(-5, 5, (6, 2)), rng.uniform(5, 20, 6)))
    raw, _ = camera.project(cam)
    inliers = np.array([True, True, False, True, False, True])
    quality = CalibrationQuality(0.5, 6, 6, 4, 1.0, np.nan, np.nan, True, "")
    result = CalibrationResult(np.eye(4), np.zeros(6, np.float32), np.ones(6, bool),
                               np.zeros((HEIGHT, WIDTH), np.uint8),
                               Matches(np.arange(6), cam, raw, np.full(6, 0.3), inliers),
                               quality)
    frame = FrameMatches.from_global(result, camera, 2.93)
    pinhole = (cam @ K.T)[:, :2] / cam[:, 2:3]
    np.testing.assert_allclose(frame.pixels, pinhole[inliers], atol=1e-6)
    np.testing.assert_array_equal(frame.points, cam[inliers])
    np.testing.assert_array_equal(frame.weights, np.ones(4))
    assert frame.pixel_scale == 2.93
