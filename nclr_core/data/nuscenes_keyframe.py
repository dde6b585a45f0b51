"""One nuScenes keyframe exported as a folder: a LIDAR_TOP `.pcd.bin` and the six camera
JPEGs beside a `calib.json` (the layout of `../shared/data/real/nuscenes_keyframe`).

`calib.json`: `lidar2ego` (4, 4) and per camera channel `cams[CH]` = {`img` file name, `K`
(3, 3), `lidar2cam` (4, 4) LiDAR at its stamp -> camera at its stamp (ego motion included),
`cam2ego` (4, 4), `W`, `H`}. Stamps are the microseconds at the end of each file name.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nclr_core.data.files import (
    DataFormatError,
    read_bin_points,
    read_image_rgb,
    require_dir,
    require_file,
)
from nclr_core.data.intensity import IntensityNormalizer
from nclr_core.data.nuscenes import LIDAR_CHANNEL, NUSCENES_INTENSITY_FULL_SCALE


def _stamp_s(filename: str) -> float:
    """Seconds from a nuScenes file name `...__CHANNEL__<microseconds>.<ext>`."""
    try:
        return int(filename.split("__")[-1].split(".")[0]) * 1e-6
    except ValueError as err:
        raise DataFormatError(f"{filename}: no microsecond stamp at the end of the name") \
            from err


class NuScenesKeyframeDataset:
    """The keyframe's LiDAR sweep paired with each chosen camera, one sample per camera.

    `__getitem__(i)` returns the sample dict of `NuScenesDataset`: `image` uint8 (H, W, 3)
    RGB, `points` float32 (N, 4) x y z intensity (in [0, 1]: nuScenes' 0-255 divided by
    255, `nclr_core.data.intensity`) in the LIDAR_TOP frame, `ring` int64 (N,), `K` (3, 3),
    `T_cam_lidar` (4, 4), `stamp`, `camera_stamp` (s), `camera_frame` the channel,
    `lidar_frame`, `sequence` the channel, `frame_id` the camera file stem. `cameras`
    empty = every channel of `calib.json`.
    """

    def __init__(self, root: str | Path, cameras: Sequence[str] = ()) -> None:
        self.root = require_dir(root, "nuScenes keyframe folder")
        calib_path = require_file(self.root / "calib.json")
        try:
            self._calib = json.loads(calib_path.read_text())
            channels = self._calib["cams"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"{calib_path}: not a keyframe calib.json ({err})") from err
        unknown = [c for c in cameras if c not in channels]
        if unknown:
            raise ValueError(f"{calib_path}: no camera {', '.join(unknown)} (has "
                             f"{', '.join(sorted(channels))})")
        self.cameras = list(cameras) or sorted(channels)
        lidar = sorted(self.root.glob(f"*__{LIDAR_CHANNEL}__*.pcd.bin"))
        if len(lidar) != 1:
            raise DataFormatError(f"{self.root}: expected one {LIDAR_CHANNEL} .pcd.bin, "
                                  f"found {len(lidar)}")
        self._lidar = lidar[0]

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} cameras")
        channel = self.cameras[index]
        cam = self._calib["cams"][channel]
        cloud = read_bin_points(self._lidar, 5)
        image = read_image_rgb(self.root / cam["img"])
        if image.shape[:2] != (cam["H"], cam["W"]):
            raise DataFormatError(f"{cam['img']}: image is {image.shape[1]}x{image.shape[0]}, "
                                  f"calib.json says {cam['W']}x{cam['H']}")
        return {
            "image": image,
            "points": IntensityNormalizer(NUSCENES_INTENSITY_FULL_SCALE)(cloud[:, :4]),
            "ring": cloud[:, 4].astype(np.int64),
            "K": np.asarray(cam["K"], dtype=np.float64),
            "T_cam_lidar": np.asarray(cam["lidar2cam"], dtype=np.float64),
            "stamp": _stamp_s(self._lidar.name),
            "camera_stamp": _stamp_s(cam["img"]),
            "camera_frame": channel,
            "lidar_frame": LIDAR_CHANNEL,
            "sequence": channel,
            "frame_id": Path(cam["img"]).stem,
        }
