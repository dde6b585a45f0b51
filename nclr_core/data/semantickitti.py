"""SemanticKITTI / KITTI odometry reader.

Layout under `root`::

    sequences/NN/velodyne/XXXXXX.bin    float32 (N, 4): x y z intensity, LiDAR frame
    sequences/NN/labels/XXXXXX.label    uint32 (N,): semantic id (low 16 bits), instance (high)
                                        (optional folder; when present every scan needs one)
    sequences/NN/image_2/XXXXXX.png     RGB camera 2 (image_3 for camera 3)
    sequences/NN/calib.txt              P0..P3 (3x4 rectified projections), Tr (3x4, velodyne
                                        -> rectified camera 0); optional DN (5 values,
                                        plumb_bob k1 k2 p1 p2 k3): camera N has a lens with
                                        that distortion (our randomised synthetic data)
    sequences/NN/times.txt              one timestamp (s) per scan, line index = scan number
    sequences/NN/poses.txt              optional, 12 values per line: T_world_cam0 (3x4)

For camera N, `K = PN[:3,:3]`, `bN = K^-1 PN[:,3]` and `T_cam_lidar = [I | bN] . Tr`. A
camera with distortion DN is read as a `CameraModel` (plumb_bob, K, the image size); its
images are rectified to the pinhole camera with the same K unless `rectify=False`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nclr_core.data.files import (
    DataFormatError,
    projection_to_camera,
    read_bin_points,
    read_float_table,
    read_image_rgb,
    read_kitti_calib,
    read_records,
    require_dir,
    require_file,
)
from nclr_core.data.rosbag.rectify import rectify_image
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import compose, make_transform

IGNORE_INDEX = 255

SEMANTIC_KITTI_CLASSES: tuple[str, ...] = (
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)

# Raw SemanticKITTI id -> train id in 0..18 (IGNORE_INDEX for unlabeled / outlier / unused
# classes). This is semantic-kitti.yaml's `learning_map` shifted down by one, with its class 0
# ("unlabeled") moved to IGNORE_INDEX; moving classes map to their static class.
SEMANTIC_KITTI_LEARNING_MAP: dict[int, int] = {
    0: IGNORE_INDEX,  # unlabeled
    1: IGNORE_INDEX,  # outlier
    10: 0,  # car
    11: 1,  # bicycle
    13: 4,  # bus -> other-vehicle
    15: 2,  # motorcycle
    16: 4,  # on-rails -> other-vehicle
    18: 3,  # truck
    20: 4,  # other-vehicle
    30: 5,  # person
    31: 6,  # bicyclist
    32: 7,  # motorcyclist
    40: 8,  # road
    44: 9,  # parking
    48: 10,  # sidewalk
    49: 11,  # other-ground
    50: 12,  # building
    51: 13,  # fence
    52: IGNORE_INDEX,  # other-structure
    60: 8,  # lane-marking -> road
    70: 14,  # vegetation
    71: 15,  # trunk
    72: 16,  # terrain
    80: 17,  # pole
    81: 18,  # traffic-sign
    99: IGNORE_INDEX,  # other-object
    252: 0,  # moving-car -> car
    253: 6,  # moving-bicyclist -> bicyclist
    254: 5,  # moving-person -> person
    255: 7,  # moving-motorcyclist -> motorcyclist
    256: 4,  # moving-on-rails -> other-vehicle
    257: 4,  # moving-bus -> other-vehicle
    258: 3,  # moving-truck -> truck
    259: 4,  # moving-other-vehicle -> other-vehicle
}

_LUT = np.full(1 << 16, IGNORE_INDEX, dtype=np.int64)
_LUT[list(SEMANTIC_KITTI_LEARNING_MAP)] = list(SEMANTIC_KITTI_LEARNING_MAP.values())


def map_semantic_labels(raw: np.ndarray) -> np.ndarray:
    """Map raw SemanticKITTI semantic ids (N,) (0..65535) to train ids int64 (N,).

    Ids outside the learning map (none in the released data) map to `IGNORE_INDEX`, as in the
    reference lookup table.
    """
    raw = np.asarray(raw)
    if raw.size and (raw.min() < 0 or raw.max() >= _LUT.size):
        raise ValueError(
            f"raw semantic ids must lie in [0, {_LUT.size}), got {raw.min()}..{raw.max()}"
        )
    return _LUT[raw.astype(np.int64)]


def read_label_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a SemanticKITTI `.label` file (uint32 per point).

    Returns `(semantic, instance)`, both int64 (N,): the low and the high 16 bits.
    """
    raw = read_records(path, np.uint32, 1)[:, 0]
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


def _camera_index(camera: str) -> int:
    if camera not in ("image_0", "image_1", "image_2", "image_3"):
        raise ValueError(f"camera must be one of image_0..image_3, got {camera!r}")
    return int(camera[-1])


class SemanticKittiDataset:
    """SemanticKITTI / KITTI odometry scans paired with one camera.

    `__getitem__(i)` returns the sample dict: `image` uint8 (H, W, 3) RGB, `points` float32
    (N, 4) LiDAR frame, `K` (3, 3), `T_cam_lidar` (4, 4) (LiDAR -> rectified camera N), `stamp`
    (s, from times.txt), `camera_frame`, `lidar_frame`, `sequence`, `frame_id`; when the
    sequence has labels: `labels` int64 (N,) train ids 0..18 or `IGNORE_INDEX`, `labels_raw`
    int64 (N,) raw semantic ids, `instances` int64 (N,); when poses.txt exists: `pose` (4, 4)
    T_world_cam0.

    When calib.txt gives the camera a lens distortion (DN), `image` is rectified to the
    pinhole camera of the same K and size (what every K-only consumer, the training pairs
    included, expects); with `rectify=False` it is the raw image and `camera` holds the
    `CameraModel` with the lens (for consumers that undistort themselves).
    """

    def __init__(
        self,
        root: str | Path,
        sequences: Sequence[str] = ("00",),
        camera: str = "image_2",
        rectify: bool = True,
    ) -> None:
        self.root = require_dir(root, "SemanticKITTI root")
        if isinstance(sequences, str):
            raise TypeError("sequences must be a sequence of names like ('00',), not a str")
        if len(sequences) == 0:
            raise ValueError("sequences is empty")
        self.camera = camera
        self.rectify = rectify
        cam_idx = _camera_index(camera)
        self._frames: list[tuple[str, str]] = []
        self._seq: dict[str, dict[str, Any]] = {}
        for seq in sequences:
            seq_dir = require_dir(self.root / "sequences" / seq, f"sequence {seq!r} folder")
            velo_dir = require_dir(seq_dir / "velodyne", "velodyne folder")
            image_dir = require_dir(seq_dir / camera, f"{camera} folder")
            label_dir = seq_dir / "labels"
            has_labels = label_dir.is_dir()
            stems = sorted(p.stem for p in velo_dir.glob("*.bin"))
            if not stems:
                raise FileNotFoundError(f"{velo_dir}: no .bin scans")
            for stem in stems:
                if not stem.isdigit():
                    raise DataFormatError(f"{velo_dir / stem}.bin: scan name is not a number")
                require_file(image_dir / f"{stem}.png")
                if has_labels:
                    require_file(label_dir / f"{stem}.label")
            calib_path = seq_dir / "calib.txt"
            calib = read_kitti_calib(calib_path, {f"P{cam_idx}": (3, 4), "Tr": (3, 4)},
                                     optional={f"D{cam_idx}": (5,)})
            K, b = projection_to_camera(calib[f"P{cam_idx}"])
            T_rect_velo = make_transform(calib["Tr"][:, :3], calib["Tr"][:, 3])
            T_cam_rect = make_transform(np.eye(3), b)
            times_path = seq_dir / "times.txt"
            times = read_float_table(times_path, 1)[:, 0]
            poses_path = seq_dir / "poses.txt"
            poses = read_float_table(poses_path, 12) if poses_path.is_file() else None
            last = int(stems[-1])
            if last >= len(times):
                raise DataFormatError(
                    f"{times_path}: {len(times)} timestamps but scan {stems[-1]} exists"
                )
            if poses is not None and last >= len(poses):
                raise DataFormatError(
                    f"{poses_path}: {len(poses)} poses but scan {stems[-1]} exists"
                )
            self._seq[seq] = {
                "dir": seq_dir,
                "K": K,
                "T_cam_lidar": compose(T_cam_rect, T_rect_velo),
                "times": times,
                "poses": poses,
                "has_labels": has_labels,
                "distortion": calib.get(f"D{cam_idx}"),
            }
            self._frames.extend((seq, stem) for stem in stems)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frames(self) -> list[tuple[str, str]]:
        """(sequence, frame_id) of every frame, in index order."""
        return list(self._frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        seq, stem = self._frames[index]
        info = self._seq[seq]
        seq_dir: Path = info["dir"]
        points = read_bin_points(seq_dir / "velodyne" / f"{stem}.bin", 4)
        n = int(stem)
        image = read_image_rgb(seq_dir / self.camera / f"{stem}.png")
        lens = None
        if info["distortion"] is not None:
            height, width = image.shape[:2]
            lens = CameraModel(info["K"], width, height, "plumb_bob", info["distortion"])
            if self.rectify:
                image = rectify_image(image, lens)
        sample: dict[str, Any] = {
            "image": image,
            "points": points,
            "K": info["K"].copy(),
            "T_cam_lidar": info["T_cam_lidar"].copy(),
            "stamp": float(info["times"][n]),
            "camera_frame": f"camera_{self.camera[-1]}",
            "lidar_frame": "velodyne",
            "sequence": seq,
            "frame_id": stem,
        }
        if lens is not None and not self.rectify:
            sample["camera"] = lens
        if info["has_labels"]:
            label_path = seq_dir / "labels" / f"{stem}.label"
            semantic, instance = read_label_file(label_path)
            if semantic.shape[0] != points.shape[0]:
                raise DataFormatError(
                    f"{label_path}: {semantic.shape[0]} labels for {points.shape[0]} points"
                )
            sample["labels"] = map_semantic_labels(semantic)
            sample["labels_raw"] = semantic
            sample["instances"] = instance
        if info["poses"] is not None:
            pose = np.eye(4)
            pose[:3, :] = info["poses"][n].reshape(3, 4)
            sample["pose"] = pose
        return sample
