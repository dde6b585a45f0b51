"""sensor_msgs/PointCloud2 -> NumPy structured arrays, written with NumPy only (no ROS).

`sensor_msgs_py` is not always installed, so the layout rules are implemented here: every
field has a byte offset inside a point of `point_step` bytes (gaps are padding), a row of
`width` points occupies `row_step` bytes (any excess is row padding), the cloud has `height`
rows (height > 1 for organised clouds) and all multi-byte values use the byte order given by
`is_bigendian`. Fields with `count != 1` (arrays inside a point) are rejected. A message is
anything with the PointCloud2 fields (an rclpy message or a decoded rosbags one); building
messages needs rclpy and lives in `nclr_ros.pointcloud2`.
"""
from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np

# PointField datatype constant (INT8 = 1 ... FLOAT64 = 8) -> NumPy type code without byte order.
DATATYPE_TO_CODE: dict[int, str] = {
    1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8",
}


def fields_to_dtype(
    fields: list[Any], point_step: int, is_bigendian: bool
) -> np.dtype:
    """Structured dtype of one point: the named fields at their offsets, itemsize `point_step`.

    Raises ValueError for an unknown datatype, `count != 1`, a duplicate or empty name, or a
    field that overlaps another or does not fit inside `point_step`.
    """
    if point_step <= 0:
        raise ValueError(f"PointCloud2 point_step must be positive, got {point_step}")
    order = ">" if is_bigendian else "<"
    names: list[str] = []
    formats: list[str] = []
    offsets: list[int] = []
    for field in fields:
        if field.datatype not in DATATYPE_TO_CODE:
            raise ValueError(
                f"PointCloud2 field '{field.name}' has unknown datatype {field.datatype} "
                f"(expected 1..8, INT8..FLOAT64)"
            )
        if field.count != 1:
            raise ValueError(
                f"PointCloud2 field '{field.name}' has count {field.count}; only count 1 "
                f"(one value per point) is supported"
            )
        if not field.name:
            raise ValueError("PointCloud2 has a field with an empty name")
        if field.name in names:
            raise ValueError(f"PointCloud2 field '{field.name}' appears twice")
        code = DATATYPE_TO_CODE[field.datatype]
        size = int(code[1])
        if field.offset < 0 or field.offset + size > point_step:
            raise ValueError(
                f"PointCloud2 field '{field.name}' (offset {field.offset}, {size} bytes) "
                f"does not fit in point_step {point_step}"
            )
        names.append(field.name)
        formats.append(order + code)
        offsets.append(field.offset)
    spans = sorted(
        (off, off + int(fmt[2]), name)
        for off, fmt, name in zip(offsets, formats, names, strict=True)
    )
    for (_, end_a, name_a), (start_b, _, name_b) in pairwise(spans):
        if start_b < end_a:
            raise ValueError(f"PointCloud2 fields '{name_a}' and '{name_b}' overlap")
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step}
    )


def _structured_view(msg: Any) -> np.ndarray:
    """(height, width) structured array viewing the message bytes (no copy).

    The result aliases `msg.data`; callers copy what they keep.
    """
    dtype = fields_to_dtype(list(msg.fields), msg.point_step, bool(msg.is_bigendian))
    height, width = int(msg.height), int(msg.width)
    row_bytes = width * msg.point_step
    if msg.row_step < row_bytes:
        raise ValueError(
            f"PointCloud2 row_step {msg.row_step} is smaller than width * point_step "
            f"= {width} * {msg.point_step} = {row_bytes}"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    need = height * msg.row_step
    # The last row's padding may legitimately be omitted.
    need_min = (height - 1) * msg.row_step + row_bytes if height > 0 else 0
    if buf.size < need_min:
        raise ValueError(
            f"PointCloud2 data has {buf.size} bytes, expected {need} "
            f"(height {height} x row_step {msg.row_step})"
        )
    if height == 0 or width == 0:
        return np.zeros((height, width), dtype=dtype)
    # Strides skip the point padding (itemsize = point_step) and the row padding.
    return np.ndarray((height, width), dtype=dtype, buffer=buf,
                      strides=(msg.row_step, msg.point_step))


def pointcloud2_to_array(msg: Any, keep_organized: bool = False) -> np.ndarray:
    """Copy the cloud into a structured array with native byte order and no padding.

    Returns shape (height * width,) or, with `keep_organized`, (height, width).
    """
    view = _structured_view(msg)
    native = np.dtype([(name, view.dtype.fields[name][0].newbyteorder("=")) for name in
                       view.dtype.names])
    out = np.empty(view.shape, dtype=native)
    for name in view.dtype.names:
        out[name] = view[name]
    return out if keep_organized else out.reshape(-1)


def pointcloud2_to_xyzi(msg: Any, intensity_field: str = "intensity") -> np.ndarray:
    """(N, 4) float32 x y z intensity in the cloud's frame (N = height * width).

    Intensity is 0 when the cloud has no `intensity_field`. Non-finite points are kept (the
    caller decides); raises ValueError naming the missing field when x, y or z is absent.
    """
    names = [f.name for f in msg.fields]
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise ValueError(
                f"PointCloud2 has no '{axis}' field (fields: {', '.join(names) or 'none'})"
            )
    view = _structured_view(msg).reshape(-1)
    out = np.zeros((view.shape[0], 4), dtype=np.float32)
    for col, name in enumerate(("x", "y", "z")):
        out[:, col] = view[name]
    if intensity_field in names:
        out[:, 3] = view[intensity_field]
    return out
