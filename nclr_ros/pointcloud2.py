"""sensor_msgs/PointCloud2 <-> NumPy structured arrays, written with NumPy only.

`sensor_msgs_py` is not always installed, so the layout rules are implemented here: every
field has a byte offset inside a point of `point_step` bytes (gaps are padding), a row of
`width` points occupies `row_step` bytes (any excess is row padding), the cloud has `height`
rows (height > 1 for organised clouds) and all multi-byte values use the byte order given by
`is_bigendian`. Fields with `count != 1` (arrays inside a point) are rejected.
"""
from __future__ import annotations

import array
from itertools import pairwise

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

# PointField datatype constant -> NumPy type code without byte order.
_DATATYPE_TO_CODE: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_CODE_TO_DATATYPE: dict[str, int] = {code: dt for dt, code in _DATATYPE_TO_CODE.items()}


def fields_to_dtype(
    fields: list[PointField], point_step: int, is_bigendian: bool
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
        if field.datatype not in _DATATYPE_TO_CODE:
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
        code = _DATATYPE_TO_CODE[field.datatype]
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


def _structured_view(msg: PointCloud2) -> np.ndarray:
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


def pointcloud2_to_array(msg: PointCloud2, keep_organized: bool = False) -> np.ndarray:
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


def pointcloud2_to_xyzi(msg: PointCloud2, intensity_field: str = "intensity") -> np.ndarray:
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


def array_to_pointcloud2(array_: np.ndarray, header: Header | None = None) -> PointCloud2:
    """Build a PointCloud2 from a structured array of shape (N,) or (height, width).

    Field offsets and padding of the dtype are kept (`point_step` = itemsize); values are
    written little-endian. `is_dense` is True when every floating-point value is finite.
    """
    if array_.dtype.names is None:
        raise ValueError("array_to_pointcloud2 needs a structured array with named fields")
    if array_.ndim == 1:
        height, width = 1, array_.shape[0]
    elif array_.ndim == 2:
        height, width = array_.shape
    else:
        raise ValueError(f"point array must be (N,) or (height, width), got {array_.shape}")
    fields = []
    names, formats, offsets = [], [], []
    for name in array_.dtype.names:
        field_dtype, offset = array_.dtype.fields[name][:2]
        if field_dtype.shape != () or field_dtype.kind not in "iuf":
            raise ValueError(f"field '{name}' has unsupported dtype {field_dtype}")
        code = field_dtype.kind + str(field_dtype.itemsize)
        if code not in _CODE_TO_DATATYPE:
            raise ValueError(f"field '{name}' has unsupported dtype {field_dtype}")
        fields.append(
            PointField(name=name, offset=offset, datatype=_CODE_TO_DATATYPE[code], count=1)
        )
        names.append(name)
        formats.append("<" + code)
        offsets.append(offset)
    little = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets,
         "itemsize": array_.dtype.itemsize}
    )
    packed = np.zeros(array_.shape, dtype=little)  # zeros: padding bytes are deterministic
    is_dense = True
    for name in names:
        packed[name] = array_[name]
        if array_.dtype.fields[name][0].kind == "f":
            is_dense = is_dense and bool(np.isfinite(array_[name]).all())
    msg = PointCloud2(
        header=header if header is not None else Header(),
        height=height,
        width=width,
        fields=fields,
        is_bigendian=False,
        point_step=little.itemsize,
        row_step=little.itemsize * width,
        is_dense=is_dense,
    )
    data = array.array("B")
    data.frombytes(packed.reshape(-1).view(np.uint8))
    msg.data = data  # assigned after construction: `data=` would copy it twice more
    return msg


def xyz_fields_to_pointcloud2(
    xyz: np.ndarray, header: Header | None = None, **fields: np.ndarray
) -> PointCloud2:
    """Packed cloud with float32 x y z from `xyz` (N, 3) and extra per-point fields.

    Each keyword is a field name with an (N,) array whose dtype is kept, e.g.
    `xyz_fields_to_pointcloud2(p, header, overlap=scores.astype(np.float32))` or
    `label=labels.astype(np.uint16), confidence=conf.astype(np.float32)`.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    n = xyz.shape[0]
    layout = [("x", np.float32), ("y", np.float32), ("z", np.float32)]
    for name, values in fields.items():
        values = np.asarray(values)
        if name in ("x", "y", "z"):
            raise ValueError(f"extra field '{name}' clashes with the xyz fields")
        if values.shape != (n,):
            raise ValueError(f"field '{name}' must have shape ({n},), got {values.shape}")
        layout.append((name, values.dtype))
    points = np.empty(n, dtype=np.dtype(layout))
    points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    for name, values in fields.items():
        points[name] = values
    return array_to_pointcloud2(points, header)
