"""Constructed scenes for the online stages: a known `T_cam_lidar`, points in view, matches."""
import numpy as np
from scipy.spatial.transform import Rotation

from nclr_core.geometry.se3 import invert, make_transform, transform_points
from nclr_core.online.matches import FrameMatches

K = np.array([[718.856, 0.0, 607.1928], [0.0, 718.856, 185.2157], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 1242, 375
# camera looking along LiDAR +x, slightly turned and offset
T_TRUE = make_transform(
    Rotation.from_rotvec([0.01, -0.02, 0.005]).as_matrix()
    @ np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]), [0.06, -0.08, -0.27])


def seen_points(rng: np.random.Generator, n: int, depth: tuple[float, float] = (4.0, 40.0),
                T: np.ndarray = T_TRUE) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) LiDAR points that T puts at uniform pixels and depths; their (n, 2) pixels."""
    uv = rng.uniform((0.0, 0.0), (WIDTH - 1.0, HEIGHT - 1.0), (n, 2))
    z = rng.uniform(*depth, n)
    cam = np.column_stack(((uv - K[:2, 2]) / np.diag(K)[:2] * z[:, None], z))
    return transform_points(invert(T), cam), uv


def make_frame(rng: np.random.Generator, n: int = 300, noise_px: float = 2.0,
               near_outliers: float = 0.0, far_outliers: float = 0.0, window_px: float = 35.0,
               depth: tuple[float, float] = (4.0, 40.0), T: np.ndarray = T_TRUE,
               pixel_scale: float = 1.0) -> FrameMatches:
    """One frame's matches of T: Gaussian noise (px per axis), a share of outliers within
    ±window_px of the truth and a share anywhere in the image."""
    points, uv = seen_points(rng, n, depth, T)
    pixels = uv + rng.normal(0.0, noise_px, uv.shape)
    near, far = round(near_outliers * n), round(far_outliers * n)
    pixels[:near] = uv[:near] + rng.uniform(-window_px, window_px, (near, 2))
    pixels[near:near + far] = rng.uniform((0, 0), (WIDTH - 1, HEIGHT - 1), (far, 2))
    return FrameMatches(points, pixels, np.ones(n), K, pixel_scale)
