"""KITTI 3D-object reader.

Layout under `root/<split>/` (split "training" or "testing")::

    velodyne/XXXXXX.bin   float32 (N, 4): x y z intensity, LiDAR (velodyne) frame
    image_2/XXXXXX.png    left colour camera
    calib/XXXXXX.txt      P2 (3x4), R0_rect (3x3), Tr_velo_to_cam (3x4), among others

Calibration (METHOD.md section 0): `K = P2[:3,:3]`, `b = K^-1 P2[:,3]`,
`T_cam_lidar = [I | b] . R0_rect . Tr_velo_to_cam`, the rectified camera-2 frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nclr_core.data.files import (
    projection_to_camera,
    read_bin_points,
    read_image_rgb,
    read_kitti_calib,
    require_dir,
    require_file,
)
from nclr_core.geometry.se3 import compose, make_transform

_CALIB_SHAPES = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}


def kitti_camera_from_calib(
    P2: np.ndarray, R0_rect: np.ndarray, Tr_velo_to_cam: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics and extrinsics of the rectified camera 2 from KITTI calibration matrices.

    P2 (3, 4) rectified projection of camera 2, R0_rect (3, 3) rectifying rotation of
    camera 0, Tr_velo_to_cam (3, 4) velodyne -> camera 0 (rotation and translation, metres).
    Returns `K` (3, 3) and `T_cam_lidar` (4, 4) = [I | b] . R0_rect . Tr_velo_to_cam with
    `b = K^-1 P2[:, 3]`, so that `K (R p + t)` equals `P2 . R0_rect . Tr . [p, 1]` up to scale.
    """
    R0_rect = np.asarray(R0_rect, dtype=np.float64)
    Tr = np.asarray(Tr_velo_to_cam, dtype=np.float64)
    if R0_rect.shape != (3, 3):
        raise ValueError(f"R0_rect must be (3, 3), got {R0_rect.shape}")
    if Tr.shape != (3, 4):
        raise ValueError(f"Tr_velo_to_cam must be (3, 4), got {Tr.shape}")
    K, b = projection_to_camera(P2)
    T_cam2_rect = make_transform(np.eye(3), b)
    T_rect_cam0 = make_transform(R0_rect, np.zeros(3))
    T_cam0_velo = make_transform(Tr[:, :3], Tr[:, 3])
    return K, compose(T_cam2_rect, T_rect_cam0, T_cam0_velo)


class KittiObjectDataset:
    """KITTI 3D-object frames (velodyne scan + left colour image + calibration).

    `__getitem__(i)` returns the sample dict: `image` uint8 (H, W, 3) RGB, `points` float32
    (N, 4) x y z intensity in the velodyne frame, `K` (3, 3), `T_cam_lidar` (4, 4)
    (velodyne -> rectified camera 2), `stamp` 0.0 (the object benchmark has no timestamps),
    `camera_frame` "camera_2", `lidar_frame` "velodyne", `sequence` the split, `frame_id`
    the file stem. Frames are the velodyne scans, sorted by name; each needs its image and
    calibration file.
    """

    def __init__(self, root: str | Path, split: str = "training") -> None:
        if split not in ("training", "testing"):
            raise ValueError(f"split must be 'training' or 'testing', got {split!r}")
        self.root = require_dir(root, "KITTI object root")
        self.split = split
        split_dir = require_dir(self.root / split, f"KITTI object {split!r} folder")
        self._velodyne = require_dir(split_dir / "velodyne", "KITTI velodyne folder")
        self._image = require_dir(split_dir / "image_2", "KITTI image_2 folder")
        self._calib = require_dir(split_dir / "calib", "KITTI calib folder")
        self._stems = sorted(p.stem for p in self._velodyne.glob("*.bin"))
        if not self._stems:
            raise FileNotFoundError(f"{self._velodyne}: no .bin scans")
        for stem in self._stems:
            require_file(self._image / f"{stem}.png")
            require_file(self._calib / f"{stem}.txt")

    def __len__(self) -> int:
        return len(self._stems)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        stem = self._stems[index]
        calib = read_kitti_calib(self._calib / f"{stem}.txt", _CALIB_SHAPES)
        K, T_cam_lidar = kitti_camera_from_calib(
            calib["P2"], calib["R0_rect"], calib["Tr_velo_to_cam"]
        )
        return {
            "image": read_image_rgb(self._image / f"{stem}.png"),
            "points": read_bin_points(self._velodyne / f"{stem}.bin", 4),
            "K": K,
            "T_cam_lidar": T_cam_lidar,
            "stamp": 0.0,
            "camera_frame": "camera_2",
            "lidar_frame": "velodyne",
            "sequence": self.split,
            "frame_id": stem,
        }
