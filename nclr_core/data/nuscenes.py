"""nuScenes reader (v1.0 json tables, no nuscenes-devkit).

Layout under `root`::

    <version>/sample.json, sample_data.json, calibrated_sensor.json, ego_pose.json, sensor.json
    <version>/scene.json          read only when scenes are selected (token and name per scene)
    samples/LIDAR_TOP/*.pcd.bin   float32 (N, 5): x y z intensity ring, LIDAR_TOP frame
    samples/CAM_*/*.jpg           camera keyframes

One item per sample (keyframe), sorted by timestamp: the LIDAR_TOP keyframe and the keyframe of
the chosen camera. The LiDAR and the camera fire at different instants (up to tens of ms apart)
while the vehicle moves, so the extrinsics go through the ego pose at each stamp:
`T_cam_lidar = inv(T_ego_cam) . inv(T_global_egocam) . T_global_egolidar . T_ego_lidar`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
from nclr_core.geometry.se3 import compose, invert, make_transform, matrix_from_quaternion_xyzw

LIDAR_CHANNEL = "LIDAR_TOP"
NUSCENES_INTENSITY_FULL_SCALE = 255.0  # nuScenes records 0-255
_TABLES = ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor")


def _pose_from_record(record: Mapping[str, Any], what: str) -> np.ndarray:
    """T (4, 4) from a nuScenes record with `translation` (3,) and `rotation` (w, x, y, z)."""
    try:
        t = np.asarray(record["translation"], dtype=np.float64)
        q_wxyz = np.asarray(record["rotation"], dtype=np.float64)
    except KeyError as err:
        raise DataFormatError(f"{what}: record has no {err.args[0]!r}") from err
    if t.shape != (3,) or q_wxyz.shape != (4,):
        raise DataFormatError(
            f"{what}: translation must have 3 values and rotation 4 (w, x, y, z), got "
            f"{t.shape} and {q_wxyz.shape}"
        )
    R = matrix_from_quaternion_xyzw(np.roll(q_wxyz, -1))
    return make_transform(R, t)


def nuscenes_T_cam_lidar(
    cs_lidar: Mapping[str, Any],
    pose_lidar: Mapping[str, Any],
    cs_cam: Mapping[str, Any],
    pose_cam: Mapping[str, Any],
) -> np.ndarray:
    """T_cam_lidar (4, 4) from nuScenes table records.

    `cs_lidar`, `cs_cam`: calibrated_sensor records (sensor -> ego: `translation` (3,) m,
    `rotation` quaternion (w, x, y, z)); `pose_lidar`, `pose_cam`: ego_pose records (ego ->
    global) at the LiDAR and the camera timestamps. Returns
    `inv(T_ego_cam) . inv(T_global_egocam) . T_global_egolidar . T_ego_lidar`.
    """
    T_ego_lidar = _pose_from_record(cs_lidar, "cs_lidar")
    T_global_egolidar = _pose_from_record(pose_lidar, "pose_lidar")
    T_global_egocam = _pose_from_record(pose_cam, "pose_cam")
    T_ego_cam = _pose_from_record(cs_cam, "cs_cam")
    return compose(invert(T_ego_cam), invert(T_global_egocam), T_global_egolidar, T_ego_lidar)


def resolve_scenes(root: str | Path, version: str, entries: Sequence[str]) -> list[str]:
    """The scene tokens of `entries`, in order; each entry is a scene token or a scene name
    ("scene-0061") of `<root>/<version>/scene.json`. ValueError names the entries that are
    neither; no entries read no file."""
    if not entries:
        return []
    table_dir = require_dir(Path(root) / version, f"nuScenes table folder {version!r}")
    scenes = _load_table(table_dir / "scene.json")
    by_name = {str(rec["name"]): token for token, rec in scenes.items() if "name" in rec}
    tokens: list[str] = []
    unknown: list[str] = []
    for entry in entries:
        entry = str(entry)
        if entry in scenes:
            tokens.append(entry)
        elif entry in by_name:
            tokens.append(by_name[entry])
        else:
            unknown.append(entry)
    if unknown:
        raise ValueError(
            f"unknown nuScenes scene(s) {unknown} in {table_dir}: neither a scene token nor a "
            f"scene name of scene.json ({len(scenes)} scenes, e.g. {sorted(by_name)[:3]})"
        )
    return tokens


def _load_table(path: Path) -> dict[str, dict[str, Any]]:
    """A nuScenes json table as {token: record}."""
    require_file(path)
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(records, list):
        raise DataFormatError(f"{path}: expected a JSON list of records")
    table: dict[str, dict[str, Any]] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "token" not in record:
            raise DataFormatError(f"{path}: record {i} has no 'token'")
        table[record["token"]] = record
    return table


class NuScenesDataset:
    """nuScenes keyframes: LIDAR_TOP sweep paired with one camera.

    `__getitem__(i)` returns the sample dict: `image` uint8 (H, W, 3) RGB, `points` float32
    (N, 4) x y z intensity in the LIDAR_TOP frame (intensity in [0, 1]: nuScenes' 0-255
    divided by 255, `nclr_core.data.intensity`), `ring` int64 (N,) laser ring index, `K`
    (3, 3), `T_cam_lidar` (4, 4) (LiDAR at its stamp -> camera at its stamp, ego motion
    included), `stamp` LiDAR time (s), `camera_stamp` (s), `camera_frame` the camera channel,
    `lidar_frame` "LIDAR_TOP", `sequence` the scene token, `frame_id` the sample token.
    `scenes` (scene tokens or names, see `resolve_scenes`) restricts the samples to those
    scenes, empty keeps every scene; `exclude_scenes` (same form) then drops scenes.
    """

    def __init__(
        self,
        root: str | Path,
        version: str = "v1.0-mini",
        camera: str = "CAM_FRONT",
        scenes: Sequence[str] = (),
        exclude_scenes: Sequence[str] = (),
    ) -> None:
        self.root = require_dir(root, "nuScenes root")
        self.camera = camera
        table_dir = require_dir(self.root / version, f"nuScenes table folder {version!r}")
        self._paths = {name: table_dir / f"{name}.json" for name in _TABLES}
        tables = {name: _load_table(path) for name, path in self._paths.items()}
        self._tables = tables
        keep = set(resolve_scenes(self.root, version, scenes))
        drop = set(resolve_scenes(self.root, version, exclude_scenes))
        channels = {
            token: self._field(rec, "channel", "sensor") for token, rec in tables["sensor"].items()
        }
        if camera not in channels.values():
            raise ValueError(
                f"camera {camera!r} not in {self._paths['sensor']} "
                f"(channels: {sorted(channels.values())})"
            )
        keyframes: dict[str, dict[str, dict[str, Any]]] = {}
        for token, rec in tables["sample_data"].items():
            if not rec.get("is_key_frame", False):
                continue
            cs_token = self._field(rec, "calibrated_sensor_token", "sample_data")
            cs = self._lookup("calibrated_sensor", cs_token, token)
            channel = channels.get(self._field(cs, "sensor_token", "calibrated_sensor"))
            if channel in (LIDAR_CHANNEL, camera):
                sample_token = self._field(rec, "sample_token", "sample_data")
                keyframes.setdefault(sample_token, {})[channel] = rec
        self._items: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        for token, sample in tables["sample"].items():
            scene = self._field(sample, "scene_token", "sample")
            if (keep and scene not in keep) or scene in drop:
                continue
            found = keyframes.get(token, {})
            for channel in (LIDAR_CHANNEL, camera):
                if channel not in found:
                    raise DataFormatError(
                        f"{self._paths['sample_data']}: sample {token} has no {channel} keyframe"
                    )
            self._items.append((sample, found[LIDAR_CHANNEL], found[camera]))
        if not self._items:
            selected = " in the selected scenes" if keep or drop else ""
            raise DataFormatError(f"{self._paths['sample']}: no samples{selected}")
        self._items.sort(key=lambda item: self._field(item[0], "timestamp", "sample"))

    def _field(self, record: Mapping[str, Any], key: str, table: str) -> Any:
        if key not in record:
            raise DataFormatError(
                f"{self._paths[table]}: record {record.get('token')} has no {key!r}"
            )
        return record[key]

    def _lookup(self, table: str, token: str, referrer: str) -> dict[str, Any]:
        records = self._tables[table]
        if token not in records:
            raise DataFormatError(
                f"{self._paths[table]}: token {token} (referenced by {referrer}) not found"
            )
        return records[token]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample, lidar_sd, cam_sd = self._items[index]
        records = {}
        for name, sd in (("lidar", lidar_sd), ("cam", cam_sd)):
            records[f"cs_{name}"] = self._lookup(
                "calibrated_sensor",
                self._field(sd, "calibrated_sensor_token", "sample_data"),
                sd["token"],
            )
            records[f"pose_{name}"] = self._lookup(
                "ego_pose", self._field(sd, "ego_pose_token", "sample_data"), sd["token"]
            )
        K = np.asarray(records["cs_cam"].get("camera_intrinsic", []), dtype=np.float64)
        if K.shape != (3, 3):
            raise DataFormatError(
                f"{self._paths['calibrated_sensor']}: record {records['cs_cam']['token']} "
                f"camera_intrinsic must be 3x3, got shape {K.shape}"
            )
        cloud = read_bin_points(self.root / self._field(lidar_sd, "filename", "sample_data"), 5)
        return {
            "image": read_image_rgb(self.root / self._field(cam_sd, "filename", "sample_data")),
            "points": IntensityNormalizer(NUSCENES_INTENSITY_FULL_SCALE)(cloud[:, :4]),
            "ring": cloud[:, 4].astype(np.int64),
            "K": K,
            "T_cam_lidar": nuscenes_T_cam_lidar(**records),
            "stamp": self._field(lidar_sd, "timestamp", "sample_data") * 1e-6,
            "camera_stamp": self._field(cam_sd, "timestamp", "sample_data") * 1e-6,
            "camera_frame": self.camera,
            "lidar_frame": LIDAR_CHANNEL,
            "sequence": str(self._field(sample, "scene_token", "sample")),
            "frame_id": str(sample["token"]),
        }
