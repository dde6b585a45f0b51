"""How one raw frame is fitted to the calibration network, and mapped back.

As in training (`nclr_core.data.datasets`): points inside the checkpoint's point range, at
most `max_points` of them (a fixed-seed uniform draw, so a frame always gives the same
answer); the image resized to the network height keeping its aspect so that it covers the
network size, and centre-cropped, with K following (`ResizeToCover`, `CenterCrop`). The
affine pixel map `A = K_net K_in^-1` (network px = A @ input px) is exact, so network
outputs map back to the input image through its inverse.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nclr_core.data.config import DataConfig
from nclr_core.data.transforms import CenterCrop, NormalizeImage, ResizeToCover
from nclr_core.geometry.camera import CameraModel
from nclr_core.models.feature_grid import pixel_to_cell

MASK_ON = 255


@dataclass(frozen=True)
class NetworkInput:
    """How a frame is fitted to the network (from the checkpoint's data config).

    image_height, image_width: network image size, pixels.
    max_points: cap on the points fed to the network.
    point_range: (x_min, y_min, z_min, x_max, y_max, z_max), LiDAR frame, metres, inclusive.
    """

    image_height: int
    image_width: int
    max_points: int
    point_range: tuple[float, float, float, float, float, float]

    def __post_init__(self) -> None:
        if min(self.image_height, self.image_width, self.max_points) < 1:
            raise ValueError(f"network input sizes must be positive, got {self}")
        if len(self.point_range) != 6:
            raise ValueError(f"point_range must have 6 values, got {self.point_range}")
        lo, hi = np.asarray(self.point_range[:3]), np.asarray(self.point_range[3:])
        if np.any(lo > hi):
            raise ValueError(f"point_range lower bounds exceed upper bounds: {self.point_range}")

    @classmethod
    def from_config(cls, data: DataConfig) -> NetworkInput:
        """From a pre-training run's data config (`checkpoint_data_config` for a checkpoint)."""
        return cls(data.image_height, data.image_width, data.max_points,
                   tuple(float(v) for v in data.point_range))


def check_frame(image: np.ndarray, points: np.ndarray, camera: CameraModel) -> None:
    """Raise ValueError naming the problem unless the frame is well formed."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    if (camera.height, camera.width) != image.shape[:2]:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the camera model is "
                         f"{camera.width}x{camera.height}")
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must be (N, 4) x y z intensity, got "
                         f"{getattr(points, 'shape', type(points))}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points contain NaN or infinite values (drop them first)")


def select_points(points: np.ndarray, network_input: NetworkInput, seed: int) -> np.ndarray:
    """Indices (M,) of the (N, 4) input points fed to the network, ascending."""
    bounds = np.asarray(network_input.point_range, dtype=points.dtype).reshape(2, 3)
    xyz = points[:, :3]
    keep = np.flatnonzero(np.all((xyz >= bounds[0]) & (xyz <= bounds[1]), axis=1))
    if len(keep) > network_input.max_points:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(keep, size=network_input.max_points, replace=False))
    return keep


def fit_image(image: np.ndarray, K: np.ndarray, network_input: NetworkInput,
              normalize: NormalizeImage) -> tuple[np.ndarray, np.ndarray]:
    """Normalised network image (3, h, w) and A (3, 3): network px = A @ input px."""
    net_h, net_w = network_input.image_height, network_input.image_width
    sample = {"image": image, "K": K}
    sample = CenterCrop(net_h, net_w)(ResizeToCover(net_h, net_w)(sample))
    A = sample["K"] @ np.linalg.inv(K)
    return normalize(sample)["image"], A


def to_input_pixels(A: np.ndarray, net_px: np.ndarray) -> np.ndarray:
    """(K, 2) input-image pixels of (K, 2) network pixels, through the inverse of A (3, 3)."""
    homogeneous = np.concatenate((net_px, np.ones((len(net_px), 1))), 1)
    return (homogeneous @ np.linalg.inv(A).T)[:, :2]


def mask_at_input(scores: np.ndarray, A: np.ndarray, hw: tuple[int, int],
                  network_input: NetworkInput, stride: int, threshold: float,
                  convention: str = "stem") -> np.ndarray:
    """(H, W) uint8 mask of the input image, MASK_ON where the stride-s cell scores (h, w)
    (cells centred by `convention`), sampled bilinearly, exceed `threshold` (0 where the crop
    cut the image away)."""
    height, width = hw
    net_h, net_w = network_input.image_height, network_input.image_width
    # A is a scale plus an offset per axis (resize then crop)
    u_net = A[0, 0] * np.arange(width) + A[0, 2]
    v_net = A[1, 1] * np.arange(height) + A[1, 2]
    col = pixel_to_cell(np.stack((u_net, np.zeros_like(u_net)), 1), stride, convention)[:, 0]
    row = pixel_to_cell(np.stack((np.zeros_like(v_net), v_net), 1), stride, convention)[:, 1]
    map_x = np.broadcast_to(col.astype(np.float32)[None, :], (height, width))
    map_y = np.broadcast_to(row.astype(np.float32)[:, None], (height, width))
    sampled = cv2.remap(scores.astype(np.float32), np.ascontiguousarray(map_x),
                        np.ascontiguousarray(map_y), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    inside_u = (u_net >= -0.5) & (u_net < net_w - 0.5)
    inside_v = (v_net >= -0.5) & (v_net < net_h - 0.5)
    on = (sampled > threshold) & inside_v[:, None] & inside_u[None, :]
    return np.where(on, MASK_ON, 0).astype(np.uint8)
