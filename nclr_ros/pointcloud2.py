"""NumPy structured arrays -> sensor_msgs/PointCloud2 messages (rclpy), NumPy only.

The layout rules and the reading direction are in `nclr_core.data.rosbag.pointcloud2`
(ROS-free); this module builds rclpy messages with the same rules.
"""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from nclr_core.data.rosbag.pointcloud2 import DATATYPE_TO_CODE

_CODE_TO_DATATYPE: dict[str, int] = {code: dt for dt, code in DATATYPE_TO_CODE.items()}


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
