"""Low-level file loaders shared by the dataset readers.

Every loader checks what it reads and raises an error that names the file and the problem:
`FileNotFoundError` for a missing file, `DataFormatError` (a `ValueError`) for a file whose
content is not what the format promises (truncated binary, unreadable image, missing or
malformed calibration key, bad table row).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np


class DataFormatError(ValueError):
    """A data file exists but its content does not match the expected format."""


def require_file(path: str | Path) -> Path:
    """Return `path` as a `Path`, raising `FileNotFoundError` naming it when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return path


def require_dir(path: str | Path, what: str) -> Path:
    """Return `path` as a `Path`, raising `FileNotFoundError` when it is not a directory.

    `what` describes the folder's role (e.g. "KITTI velodyne folder") for the message.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def read_records(path: str | Path, dtype: np.dtype | type, width: int) -> np.ndarray:
    """Read a flat binary file of fixed-width records.

    Returns an array (N, width) of `dtype`. Raises `DataFormatError` when the file size is not
    a multiple of the record size (a truncated or foreign file).
    """
    path = require_file(path)
    dtype = np.dtype(dtype)
    if width < 1:
        raise ValueError(f"record width must be >= 1, got {width}")
    record_bytes = dtype.itemsize * width
    size = path.stat().st_size
    if size % record_bytes != 0:
        raise DataFormatError(
            f"{path}: size {size} bytes is not a multiple of the record size {record_bytes} "
            f"bytes ({width} x {dtype.name}); the file is truncated or not of this format"
        )
    return np.fromfile(path, dtype=dtype).reshape(-1, width)


def read_bin_points(path: str | Path, num_fields: int = 4) -> np.ndarray:
    """Read a float32 point cloud `.bin` (KITTI: x y z intensity; nuScenes: + ring).

    Returns float32 (N, num_fields).
    """
    return read_records(path, np.float32, num_fields)


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3) (OpenCV decodes BGR; converted here)."""
    path = require_file(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise DataFormatError(f"{path}: unreadable image (cannot be decoded)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_kitti_calib(
    path: str | Path,
    shapes: Mapping[str, tuple[int, ...]],
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Read a KITTI calibration text file (`KEY: v1 v2 ...` per line).

    `shapes` names the keys required and their matrix shape, e.g. `{"P2": (3, 4)}`; values are
    read row-major. `optional` names keys returned only when the file has them (e.g. a lens
    distortion `{"D2": (5,)}`). Returns `{key: float64 array of that shape}`. Raises
    `DataFormatError` naming the file and the key when a required key is missing, or a key
    has a non-numeric value or the wrong number of values. Lines of other keys are parsed but
    not returned.
    """
    path = require_file(path)
    values: dict[str, str] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise DataFormatError(f"{path}: line {line_no} has no 'KEY:' prefix: {line!r}")
        values[key.strip()] = rest
    out: dict[str, np.ndarray] = {}
    wanted = {**{k: v for k, v in (optional or {}).items() if k in values}, **shapes}
    for key, shape in wanted.items():
        if key not in values:
            raise DataFormatError(
                f"{path}: calibration key {key!r} missing (found {sorted(values)})"
            )
        try:
            flat = np.array([float(v) for v in values[key].split()], dtype=np.float64)
        except ValueError as err:
            raise DataFormatError(f"{path}: calibration key {key!r} is not numeric") from err
        expected = int(np.prod(shape))
        if flat.size != expected:
            raise DataFormatError(
                f"{path}: calibration key {key!r} has {flat.size} values, expected {expected} "
                f"for shape {tuple(shape)}"
            )
        out[key] = flat.reshape(shape)
    return out


def read_float_table(path: str | Path, width: int) -> np.ndarray:
    """Read a whitespace-separated text table of floats with `width` columns per line.

    Returns float64 (N, width). Blank lines are skipped. Raises `DataFormatError` naming the
    file and the line when a row has the wrong column count or a non-numeric value.
    """
    path = require_file(path)
    rows: list[list[float]] = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width:
            raise DataFormatError(
                f"{path}: line {line_no} has {len(fields)} values, expected {width}"
            )
        try:
            rows.append([float(v) for v in fields])
        except ValueError as err:
            raise DataFormatError(f"{path}: line {line_no} is not numeric: {line!r}") from err
    return np.array(rows, dtype=np.float64).reshape(-1, width)


def projection_to_camera(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a rectified 3x4 projection matrix `P = K [I | b]` into `K` and the offset `b`.

    `P` (3, 4) float. Returns `K = P[:3, :3]` (3, 3) and `b = K^-1 P[:, 3]` (3,): the
    translation from the reference rectified frame to this camera's frame (metres).
    """
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4):
        raise ValueError(f"projection matrix must be (3, 4), got {P.shape}")
    K = P[:, :3].copy()
    b = np.linalg.solve(K, P[:, 3])
    return K, b
