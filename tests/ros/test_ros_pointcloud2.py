"""PointCloud2 <-> NumPy conversions: layouts, datatypes, padding, endianness, bad input."""
import array
import time

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from nclr_core.data.rosbag.pointcloud2 import (
    fields_to_dtype,
    pointcloud2_to_array,
    pointcloud2_to_xyzi,
)
from nclr_ros.pointcloud2 import array_to_pointcloud2, xyz_fields_to_pointcloud2

ALL_TYPES = ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"]


def _manual_cloud(values, layout, point_step, height, width, row_step, bigendian):
    """Hand-pack a cloud byte by byte (independent of the code under test).

    values: dict name -> (height, width) array; layout: list of (name, offset, datatype, code).
    """
    order = ">" if bigendian else "<"
    data = bytearray(b"\xee" * (height * row_step))  # non-zero filler: padding must be ignored
    for r in range(height):
        for c in range(width):
            base = r * row_step + c * point_step
            for name, offset, _, code in layout:
                raw = np.array(values[name][r, c], dtype=order + code).tobytes()
                data[base + offset: base + offset + len(raw)] = raw
    fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d, _ in layout]
    return PointCloud2(
        header=Header(frame_id="lidar"), height=height, width=width, fields=fields,
        is_bigendian=bigendian, point_step=point_step, row_step=row_step,
        data=array.array("B", bytes(data)), is_dense=True,
    )


@pytest.mark.parametrize("bigendian", [False, True])
def test_padded_organised_layout_with_all_datatypes_reads_back(bigendian):
    rng = np.random.default_rng(0)
    height, width = 3, 4
    layout, offset = [], 0
    for i, code in enumerate(ALL_TYPES):
        size = int(code[1])
        offset = (offset + size - 1) // size * size + 1 * (i % 2)  # uneven gaps
        layout.append((f"f_{code}", offset, i + 1, code))
        offset += size
    point_step = offset + 5
    row_step = point_step * width + 7
    values = {}
    for name, _, _, code in layout:
        if code[0] == "f":
            values[name] = rng.normal(size=(height, width)).astype(code)
        else:
            info = np.iinfo(code)
            values[name] = rng.integers(info.min, info.max, size=(height, width), dtype=code)
    msg = _manual_cloud(values, layout, point_step, height, width, row_step, bigendian)

    out = pointcloud2_to_array(msg, keep_organized=True)
    assert out.shape == (height, width)
    for name, _, _, code in layout:
        assert out[name].dtype == np.dtype(code)
        np.testing.assert_array_equal(out[name], values[name])
    flat = pointcloud2_to_array(msg)
    assert flat.shape == (height * width,)
    np.testing.assert_array_equal(flat["f_f8"], values["f_f8"].reshape(-1))
    # Some drivers omit the last row's padding; the points are all there.
    msg.data = msg.data[: len(msg.data) - (row_step - point_step * width)]
    np.testing.assert_array_equal(pointcloud2_to_array(msg)["f_i2"], values["f_i2"].reshape(-1))
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match="data has"):
        pointcloud2_to_array(msg)


def test_xyzi_from_padded_cloud_and_zero_intensity_when_absent():
    height, width = 2, 5
    rng = np.random.default_rng(1)
    xyz = {k: rng.normal(size=(height, width)).astype("f4") for k in "xyz"}
    inten = rng.uniform(0, 255, size=(height, width)).astype("u2")
    layout = [("x", 0, PointField.FLOAT32, "f4"), ("y", 4, PointField.FLOAT32, "f4"),
              ("z", 8, PointField.FLOAT32, "f4"), ("intensity", 16, PointField.UINT16, "u2")]
    msg = _manual_cloud({**xyz, "intensity": inten}, layout, 32, height, width, 32 * width,
                        False)
    pts = pointcloud2_to_xyzi(msg)
    assert pts.dtype == np.float32 and pts.shape == (height * width, 4)
    np.testing.assert_array_equal(pts[:, 0], xyz["x"].reshape(-1))
    np.testing.assert_array_equal(pts[:, 2], xyz["z"].reshape(-1))
    np.testing.assert_array_equal(pts[:, 3], inten.reshape(-1).astype("f4"))

    no_i = _manual_cloud(xyz, layout[:3], 16, height, width, 16 * width, False)
    pts = pointcloud2_to_xyzi(no_i)
    assert (pts[:, 3] == 0).all()
    np.testing.assert_array_equal(pts[:, 1], xyz["y"].reshape(-1))


def test_roundtrip_structured_array_with_padding_and_organised_shape():
    dtype = np.dtype({"names": ["x", "y", "z", "ring", "t"],
                      "formats": ["<f4", "<f4", "<f4", "<u2", "<f8"],
                      "offsets": [0, 4, 8, 16, 24], "itemsize": 40})
    arr = np.zeros((4, 6), dtype=dtype)
    rng = np.random.default_rng(2)
    for name in ("x", "y", "z", "t"):
        arr[name] = rng.normal(size=arr.shape)
    arr["ring"] = np.arange(4)[:, None]
    msg = array_to_pointcloud2(arr, Header(frame_id="os_lidar"))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (4, 6, 40, 240)
    assert [f.offset for f in msg.fields] == [0, 4, 8, 16, 24]
    assert msg.header.frame_id == "os_lidar" and msg.is_dense
    back = pointcloud2_to_array(msg, keep_organized=True)
    for name in dtype.names:
        np.testing.assert_array_equal(back[name], arr[name])


def test_bigendian_input_array_is_written_little_endian():
    arr = np.zeros(3, dtype=[("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("label", ">u2")])
    arr["x"] = [1.5, -2.0, 3.25]
    arr["label"] = [1, 300, 65535]
    msg = array_to_pointcloud2(arr)
    assert not msg.is_bigendian
    assert np.frombuffer(bytes(msg.data[:4]), "<f4")[0] == 1.5
    back = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(back["label"], [1, 300, 65535])


def test_xyz_fields_publishing_layouts():
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(50, 3))
    overlap = rng.uniform(size=50).astype(np.float32)
    msg = xyz_fields_to_pointcloud2(xyz, Header(frame_id="l"), overlap=overlap)
    assert [(f.name, f.datatype) for f in msg.fields] == [
        ("x", PointField.FLOAT32), ("y", PointField.FLOAT32), ("z", PointField.FLOAT32),
        ("overlap", PointField.FLOAT32)]
    back = pointcloud2_to_array(msg)
    np.testing.assert_allclose(back["y"], xyz[:, 1].astype(np.float32))
    np.testing.assert_array_equal(back["overlap"], overlap)

    labels = rng.integers(0, 20, size=50).astype(np.uint16)
    conf = rng.uniform(size=50).astype(np.float32)
    msg = xyz_fields_to_pointcloud2(xyz, label=labels, confidence=conf)
    assert [(f.name, f.datatype, f.offset) for f in msg.fields][3:] == [
        ("label", PointField.UINT16, 12), ("confidence", PointField.FLOAT32, 14)]
    back = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(back["label"], labels)
    np.testing.assert_array_equal(back["confidence"], conf)


def test_nan_points_mark_cloud_not_dense_and_survive():
    xyz = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]])
    msg = xyz_fields_to_pointcloud2(xyz)
    assert not msg.is_dense
    pts = pointcloud2_to_xyzi(msg)
    assert np.isnan(pts[1, 0]) and pts[0, 2] == 3.0


def test_empty_cloud():
    msg = xyz_fields_to_pointcloud2(np.zeros((0, 3)))
    assert pointcloud2_to_xyzi(msg).shape == (0, 4)


def _xyz_msg(**overrides):
    msg = xyz_fields_to_pointcloud2(np.ones((4, 3)))
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


def test_bad_clouds_raise_clear_errors():
    with pytest.raises(ValueError, match="no 'z' field"):
        pointcloud2_to_xyzi(_xyz_msg(fields=_xyz_msg().fields[:2]))
    bad_count = _xyz_msg()
    bad_count.fields[0].count = 3
    with pytest.raises(ValueError, match="'x' has count 3"):
        pointcloud2_to_xyzi(bad_count)
    bad_type = _xyz_msg()
    bad_type.fields[1].datatype = 9
    with pytest.raises(ValueError, match="'y' has unknown datatype 9"):
        pointcloud2_to_array(bad_type)
    with pytest.raises(ValueError, match="data has 40 bytes"):
        pointcloud2_to_xyzi(_xyz_msg(data=array.array("B", bytes(40))))
    with pytest.raises(ValueError, match="row_step 8 is smaller"):
        pointcloud2_to_xyzi(_xyz_msg(row_step=8))
    with pytest.raises(ValueError, match="does not fit in point_step 8"):
        fields_to_dtype(_xyz_msg().fields, 8, False)
    overlapping = _xyz_msg().fields
    overlapping[2].offset = 6
    with pytest.raises(ValueError, match="overlap"):
        fields_to_dtype(overlapping, 12, False)
    with pytest.raises(ValueError, match="structured array"):
        array_to_pointcloud2(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="clashes"):
        xyz_fields_to_pointcloud2(np.zeros((2, 3)), x=np.zeros(2))


def test_120k_points_convert_fast():
    rng = np.random.default_rng(4)
    n = 120_000
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    inten = rng.uniform(size=n).astype(np.float32)
    start = time.perf_counter()
    msg = xyz_fields_to_pointcloud2(xyz, intensity=inten)
    pts = pointcloud2_to_xyzi(msg)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(pts[:, :3], xyz)
    np.testing.assert_array_equal(pts[:, 3], inten)
    assert elapsed < 0.5, f"120k-point round trip took {elapsed:.3f} s"
