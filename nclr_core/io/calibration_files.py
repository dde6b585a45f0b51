"""LiDAR-camera calibration files: YAML, JSON, URDF joint snippet, static-transform command.

Convention: `T_cam_lidar` (4, 4) maps points from the LiDAR frame into the camera frame,
`p_cam = R p_lidar + t`; `T_lidar_cam` is its inverse (the camera's pose in the LiDAR
frame). The camera frame is the *optical* frame used for projection (z forward, x right,
y down). Quaternions are (x, y, z, w); roll-pitch-yaw are radians with
R = Rz(yaw) Ry(pitch) Rx(roll), as in URDF and tf2.

URDF and tf: a joint's `<origin>` (and a static transform's translation/rotation) is the
pose of the child frame in the parent frame, i.e. `T_parent_child`. The default parent is the
LiDAR frame and the child the camera frame, so they carry `T_lidar_cam` (the same transform
as the JSON's `T_lidar_camera`); `parent="camera"` gives `T_cam_lidar` instead.

The files of one calibration are written as a set, all or nothing
(`nclr_core.atomic_write.atomic_paths`): every temp file first, then the renames, undone if
one fails. Temp files left by a writer that was killed are removed by
`remove_stale_calibration_temporaries` (the node calls it at start) and by the next write.
"""
from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import numpy as np
import yaml

from nclr_core.atomic_write import atomic_paths, remove_stale_temporaries
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import (
    invert,
    make_transform,
    matrix_from_quaternion_xyzw,
    matrix_from_rpy,
    quaternion_xyzw_from_matrix,
    rpy_from_matrix,
)

FORMAT_VERSION = 1
CONVENTION = (
    "T_cam_lidar maps points from the LiDAR frame into the camera (optical) frame: "
    "p_cam = R p_lidar + t. T_lidar_cam is its inverse, the camera's pose in the LiDAR frame. "
    "Metres; quaternions are (x, y, z, w); roll_pitch_yaw are radians with "
    "R = Rz(yaw) Ry(pitch) Rx(roll) (URDF / tf2); roll_pitch_yaw_deg is the same in degrees."
)
# Largest deviation tolerated between the redundant forms of a transform in a loaded file
# (matrix vs translation / quaternion / inverse) and of R^T R from the identity.
CONSISTENCY_TOLERANCE = 1e-6
# A JSON quaternion typed or rounded by hand may be slightly off unit length; it is
# normalised when its norm is within this of 1, rejected otherwise.
QUATERNION_NORM_TOLERANCE = 1e-3

Parent = Literal["lidar", "camera"]


@dataclass
class CalibrationRecord:
    """One LiDAR-camera calibration and how it was obtained.

    T_cam_lidar (4, 4) float64; stamp in seconds (of the last frame used); frame_count: frames
    aggregated; quality: plain numbers/strings (e.g. overlap ratio, inliers, reprojection
    error px, spread); camera: the intrinsics used, None when unknown (the JSON has none).
    """

    T_cam_lidar: np.ndarray
    camera_frame: str
    lidar_frame: str
    stamp: float = 0.0
    frame_count: int = 0
    quality: dict[str, Any] = field(default_factory=dict)
    camera: CameraModel | None = None

    def __post_init__(self) -> None:
        self.T_cam_lidar = _check_rigid(np.asarray(self.T_cam_lidar, dtype=np.float64),
                                        "T_cam_lidar")
        for name in ("camera_frame", "lidar_frame"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.camera_frame == self.lidar_frame:
            raise ValueError(f"camera and LiDAR frames must differ, both are {self.lidar_frame!r}")
        self.quality = _plain(dict(self.quality), "quality")

    @property
    def T_lidar_cam(self) -> np.ndarray:
        """(4, 4) inverse of T_cam_lidar."""
        return invert(self.T_cam_lidar)


def _check_rigid(T: np.ndarray, name: str) -> np.ndarray:
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be (4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=CONSISTENCY_TOLERANCE):
        raise ValueError(f"{name} last row must be (0, 0, 0, 1), got {T[3].tolist()}")
    R = T[:3, :3]
    if (np.abs(R.T @ R - np.eye(3)).max() > CONSISTENCY_TOLERANCE
            or np.linalg.det(R) < 0.0):
        raise ValueError(f"{name} rotation is not a proper rotation matrix: {R.tolist()}")
    return T


def _plain(value: Any, where: str) -> Any:
    """Convert NumPy scalars/arrays and tuples into YAML/JSON-friendly Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{where} has a value of type {type(value).__name__} that cannot be saved")


def _transform_block(T: np.ndarray) -> dict[str, Any]:
    rpy = rpy_from_matrix(T[:3, :3])
    return {
        "matrix": T.tolist(),
        "translation": T[:3, 3].tolist(),
        "quaternion_xyzw": quaternion_xyzw_from_matrix(T[:3, :3]).tolist(),
        "roll_pitch_yaw": rpy.tolist(),
        "roll_pitch_yaw_deg": np.degrees(rpy).tolist(),
    }


def calibration_yaml_text(record: CalibrationRecord) -> str:
    """The YAML document: both directions of the transform, convention, frames, intrinsics."""
    camera = record.camera
    doc = {
        "format_version": FORMAT_VERSION,
        "convention": CONVENTION,
        "camera_frame": record.camera_frame,
        "lidar_frame": record.lidar_frame,
        "stamp": float(record.stamp),
        "frame_count": int(record.frame_count),
        "T_cam_lidar": _transform_block(record.T_cam_lidar),
        "T_lidar_cam": _transform_block(record.T_lidar_cam),
        "intrinsics": None if camera is None else {
            "K": camera.K.tolist(),
            "width": camera.width,
            "height": camera.height,
            "distortion_model": camera.distortion,
            "D": camera.D.tolist(),
        },
        "quality": record.quality,
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1000)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def calibration_json_text(record: CalibrationRecord) -> str:
    """JSON with `T_lidar_camera` = [x, y, z, qx, qy, qz, qw] (camera pose in LiDAR frame).

    Non-finite quality values are written as null (JSON has no NaN).
    """
    T = record.T_lidar_cam
    doc = {
        "format_version": FORMAT_VERSION,
        "convention": CONVENTION + " T_lidar_camera is T_lidar_cam as [x, y, z, qx, qy, qz, qw].",
        "camera_frame": record.camera_frame,
        "lidar_frame": record.lidar_frame,
        "stamp": float(record.stamp),
        "frame_count": int(record.frame_count),
        "T_lidar_camera": T[:3, 3].tolist() + quaternion_xyzw_from_matrix(T[:3, :3]).tolist(),
        "quality": _finite_or_none(record.quality),
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _parent_child(
    T_cam_lidar: np.ndarray, camera_frame: str, lidar_frame: str, parent: Parent
) -> tuple[np.ndarray, str, str]:
    """(T_parent_child, parent frame, child frame)."""
    if parent == "lidar":
        return invert(T_cam_lidar), lidar_frame, camera_frame
    if parent == "camera":
        return np.asarray(T_cam_lidar, dtype=np.float64), camera_frame, lidar_frame
    raise ValueError(f"parent must be 'lidar' or 'camera', got {parent!r}")


def urdf_joint_snippet(
    T_cam_lidar: np.ndarray, camera_frame: str, lidar_frame: str, parent: Parent = "lidar"
) -> str:
    """A fixed URDF `<joint>` whose `<origin xyz rpy>` is T_parent_child (child in parent)."""
    T, parent_frame, child_frame = _parent_child(T_cam_lidar, camera_frame, lidar_frame, parent)
    xyz = " ".join(repr(float(v)) for v in T[:3, 3])
    rpy = " ".join(repr(float(v)) for v in rpy_from_matrix(T[:3, :3]))
    return (
        f"<!-- NCLR LiDAR-camera calibration: origin = pose of {child_frame} in {parent_frame} "
        f"({'T_lidar_cam' if parent == 'lidar' else 'T_cam_lidar'}). "
        f"The camera link is the optical frame (z forward, x right, y down). -->\n"
        f"<joint name={quoteattr(f'{parent_frame}_to_{child_frame}')} type=\"fixed\">\n"
        f"  <parent link={quoteattr(parent_frame)}/>\n"
        f"  <child link={quoteattr(child_frame)}/>\n"
        f"  <origin xyz=\"{xyz}\" rpy=\"{rpy}\"/>\n"
        f"</joint>\n"
    )


def static_transform_command(
    T_cam_lidar: np.ndarray, camera_frame: str, lidar_frame: str, parent: Parent = "lidar"
) -> str:
    """`ros2 run tf2_ros static_transform_publisher ...` publishing T_parent_child."""
    T, parent_frame, child_frame = _parent_child(T_cam_lidar, camera_frame, lidar_frame, parent)
    q = quaternion_xyzw_from_matrix(T[:3, :3])
    values = dict(zip(("x", "y", "z"), T[:3, 3], strict=True))
    values.update(zip(("qx", "qy", "qz", "qw"), q, strict=True))
    args = " ".join(f"--{name} {float(v)!r}" for name, v in values.items())
    return (
        f"ros2 run tf2_ros static_transform_publisher {args} "
        f"--frame-id {shlex.quote(parent_frame)} --child-frame-id {shlex.quote(child_frame)}"
    )


def calibration_file_names(stem: str = "nclr_calibration") -> dict[str, str]:
    """File names of one calibration by kind ("yaml", "json", "urdf", "static_tf")."""
    return {"yaml": f"{stem}.yaml", "json": f"{stem}.json", "urdf": f"{stem}_joint.urdf",
            "static_tf": f"{stem}_static_tf.sh"}


def remove_stale_calibration_temporaries(directory: str | os.PathLike,
                                         stem: str = "nclr_calibration") -> list[Path]:
    """Remove the temp files that killed writers of `<stem>` files left in `directory`."""
    return remove_stale_temporaries(directory, calibration_file_names(stem).values())


def write_calibration_files(
    record: CalibrationRecord,
    directory: str | os.PathLike,
    stem: str = "nclr_calibration",
    parent: Parent = "lidar",
) -> dict[str, Path]:
    """Write `<stem>.yaml`, `<stem>.json`, `<stem>_joint.urdf` and `<stem>_static_tf.sh`.

    All or nothing: every text is rendered and written to a temp file before any file is
    replaced, and when one cannot be replaced (a folder in the way, a full disk) the ones
    already replaced are put back, so the four files always describe one calibration.
    Returns the paths by kind ("yaml", "json", "urdf", "static_tf").
    """
    directory = Path(directory)
    texts = {
        "yaml": calibration_yaml_text(record),
        "json": calibration_json_text(record),
        "urdf": urdf_joint_snippet(record.T_cam_lidar, record.camera_frame,
                                   record.lidar_frame, parent),
        "static_tf": "#!/bin/sh\n# NCLR LiDAR-camera calibration as a static transform.\n"
                     + static_transform_command(record.T_cam_lidar, record.camera_frame,
                                                record.lidar_frame, parent) + "\n",
    }
    paths = {kind: directory / name for kind, name in calibration_file_names(stem).items()}
    remove_stale_calibration_temporaries(directory, stem)
    with atomic_paths(list(paths.values())) as temps:
        for tmp, text in zip(temps, texts.values(), strict=True):
            tmp.write_text(text, encoding="utf-8")
    return paths


def _load_error(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _matrix_from_yaml(doc: dict, key: str, path: Path) -> np.ndarray:
    block = doc.get(key)
    if not isinstance(block, dict) or "matrix" not in block:
        raise _load_error(path, f"missing '{key}.matrix'")
    try:
        T = _check_rigid(np.asarray(block["matrix"], dtype=np.float64), key)
    except (TypeError, ValueError) as error:
        raise _load_error(path, f"bad '{key}.matrix': {error}") from None
    checks = {
        "translation": lambda v: np.abs(np.asarray(v, float) - T[:3, 3]).max(),
        "quaternion_xyzw": lambda v: np.abs(
            matrix_from_quaternion_xyzw(np.asarray(v, float)) - T[:3, :3]).max(),
        "roll_pitch_yaw": lambda v: np.abs(
            matrix_from_rpy(np.asarray(v, float)) - T[:3, :3]).max(),
    }
    for name, deviation in checks.items():
        if name in block:
            try:
                bad = deviation(block[name]) > CONSISTENCY_TOLERANCE
            except (TypeError, ValueError) as error:
                raise _load_error(path, f"bad '{key}.{name}': {error}") from None
            if bad:
                raise _load_error(
                    path, f"'{key}.{name}' disagrees with '{key}.matrix' (edit every form of "
                          f"the transform, or delete the redundant ones)")
    return T


def load_calibration_yaml(path: str | os.PathLike) -> CalibrationRecord:
    """Read a YAML written by `write_calibration_files`; T_cam_lidar comes from its matrix.

    The redundant forms (translation, quaternion, roll-pitch-yaw, T_lidar_cam) must agree with
    it; raises ValueError naming the file and the key otherwise.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise _load_error(path, f"not valid YAML: {error}") from None
    if not isinstance(doc, dict):
        raise _load_error(path, "expected a YAML mapping at the top level")
    T_cam_lidar = _matrix_from_yaml(doc, "T_cam_lidar", path)
    if "T_lidar_cam" in doc:
        T_lidar_cam = _matrix_from_yaml(doc, "T_lidar_cam", path)
        if np.abs(T_lidar_cam @ T_cam_lidar - np.eye(4)).max() > CONSISTENCY_TOLERANCE:
            raise _load_error(path, "'T_lidar_cam' is not the inverse of 'T_cam_lidar'")
    camera = None
    intrinsics = doc.get("intrinsics")
    if intrinsics is not None:
        try:
            camera = CameraModel(
                K=np.asarray(intrinsics["K"], dtype=np.float64),
                width=intrinsics["width"],
                height=intrinsics["height"],
                distortion=intrinsics.get("distortion_model", "none"),
                D=np.asarray(intrinsics.get("D", []), dtype=np.float64),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _load_error(path, f"bad 'intrinsics': {error!r}") from None
    return _record_from_doc(doc, T_cam_lidar, camera, path)


def _record_from_doc(
    doc: dict, T_cam_lidar: np.ndarray, camera: CameraModel | None, path: Path
) -> CalibrationRecord:
    for key in ("camera_frame", "lidar_frame"):
        if key not in doc:
            raise _load_error(path, f"missing '{key}'")
    try:
        return CalibrationRecord(
            T_cam_lidar=T_cam_lidar,
            camera_frame=doc["camera_frame"],
            lidar_frame=doc["lidar_frame"],
            stamp=float(doc.get("stamp", 0.0)),
            frame_count=int(doc.get("frame_count", 0)),
            quality=doc.get("quality") or {},
            camera=camera,
        )
    except (TypeError, ValueError) as error:
        raise _load_error(path, str(error)) from None


def load_calibration_json(path: str | os.PathLike) -> CalibrationRecord:
    """Read a JSON written by `write_calibration_files` (`T_lidar_camera` = [x y z qx qy qz
    qw]); returns the record with T_cam_lidar = inverse of that pose and no intrinsics."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise _load_error(path, f"not valid JSON: {error}") from None
    if not isinstance(doc, dict):
        raise _load_error(path, "expected a JSON object at the top level")
    pose = np.asarray(doc.get("T_lidar_camera", []), dtype=np.float64)
    if pose.shape != (7,) or not np.all(np.isfinite(pose)):
        raise _load_error(path, "'T_lidar_camera' must be 7 finite numbers [x y z qx qy qz qw]")
    norm = np.linalg.norm(pose[3:])
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise _load_error(path, f"'T_lidar_camera' quaternion has norm {norm}, expected 1")
    T_lidar_cam = make_transform(matrix_from_quaternion_xyzw(pose[3:]), pose[:3])
    return _record_from_doc(doc, invert(T_lidar_cam), None, path)


def load_calibration_file(path: str | os.PathLike, what: str = "calibration file"
                          ) -> np.ndarray:
    """T_cam_lidar (4, 4) of a calibration file, by its suffix (.yaml/.yml or .json);
    `what` names the file's role in the errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return load_calibration_yaml(path).T_cam_lidar
    if suffix == ".json":
        return load_calibration_json(path).T_cam_lidar
    raise ValueError(f"{path}: a {what} must be .yaml/.yml or .json")
