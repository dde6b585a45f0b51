"""Property-based fuzzing (hypothesis) of the message conversions the nodes and bag tools use.

Random fields, offsets, steps, byte orders, sizes and bytes must give the array that an
independent per-element reading of the message says (read here with `np.frombuffer` at each
element's byte offset), or a ValueError naming the message type; never another exception,
never other values. Deterministic in CI (tests/conftest.py's hypothesis profile);
`NCLR_FUZZ_SCALE=20` runs 20 times more examples.
"""
from __future__ import annotations

import array
import os

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from nclr_core.data.rosbag.image_msgs import compressed_image_to_rgb, image_to_rgb
from nclr_core.data.rosbag.pointcloud2 import pointcloud2_to_array, pointcloud2_to_xyzi
from nclr_core.geometry.camera import FOCAL_RANGE_OF_IMAGE_SIZE, PRINCIPAL_POINT_MARGIN
from nclr_ros.conversions import camera_info_to_camera

SCALE = float(os.environ.get("NCLR_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=int(300 * SCALE), suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ PointCloud2
# PointField datatype -> NumPy code (the ROS message definition; 0 and 9 are not types)
DATATYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


@st.composite
def clouds(draw):
    names = draw(st.lists(st.sampled_from(["x", "y", "z", "intensity", "ring", ""]),
                          max_size=5))
    fields = [PointField(name=name, offset=draw(st.integers(0, 40)),
                         datatype=draw(st.integers(0, 9)),
                         count=draw(st.sampled_from([1, 1, 1, 0, 2])))
              for name in names]
    point_step = draw(st.integers(0, 48))
    if draw(st.booleans()):  # a well-formed layout: distinct names, packed with gaps
        offset = 0
        fields = []
        for name in dict.fromkeys(n for n in names if n):
            datatype = draw(st.integers(1, 8))
            offset += draw(st.integers(0, 3))
            fields.append(PointField(name=name, offset=offset, datatype=datatype, count=1))
            offset += int(DATATYPES[datatype][1])
        point_step = offset + draw(st.integers(0, 4))
    width, height = draw(st.integers(0, 6)), draw(st.integers(0, 4))
    row_step = draw(st.one_of(st.just(width * point_step), st.integers(0, 320)))
    size = max(0, height * row_step + draw(st.integers(-24, 24)))
    data = draw(st.binary(min_size=size, max_size=size))
    msg = PointCloud2(height=height, width=width, fields=fields,
                      is_bigendian=draw(st.booleans()), point_step=point_step,
                      row_step=row_step)
    msg.data = array.array("B", data)
    return msg


def _cloud_layout_valid(msg) -> bool:
    """The PointCloud2 rules: known types, one value per field, named, unique, inside the
    point, not overlapping; rows of row_step >= width * point_step; enough bytes (the last
    row's padding may be left out)."""
    if msg.point_step <= 0:
        return False
    spans = []
    for f in msg.fields:
        if f.datatype not in DATATYPES or f.count != 1 or not f.name:
            return False
        size = int(DATATYPES[f.datatype][1])
        if f.offset + size > msg.point_step:
            return False
        spans.append((f.offset, f.offset + size))
    if len({f.name for f in msg.fields}) != len(msg.fields):
        return False
    spans.sort()
    if any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)):
        return False
    if msg.row_step < msg.width * msg.point_step:
        return False
    if msg.height == 0:
        return True
    return len(msg.data) >= (msg.height - 1) * msg.row_step + msg.width * msg.point_step


def _reference_field(msg, field) -> np.ndarray:
    """(height * width,) values of `field`, each read at its own byte offset."""
    code = (">" if msg.is_bigendian else "<") + DATATYPES[field.datatype]
    raw = bytes(msg.data)
    values = [np.frombuffer(raw, dtype=code, count=1,
                            offset=r * msg.row_step + c * msg.point_step + field.offset)[0]
              for r in range(msg.height) for c in range(msg.width)]
    return np.array(values, dtype=code).astype(code[1:])


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == np.ascontiguousarray(b).tobytes()


@FUZZ
@given(clouds())
def test_pointcloud2_gives_the_right_values_or_a_named_error(msg):
    event(f"valid layout: {_cloud_layout_valid(msg)}")
    if not _cloud_layout_valid(msg):
        with pytest.raises(ValueError, match="PointCloud2"):
            pointcloud2_to_array(msg)
        return
    out = pointcloud2_to_array(msg)
    assert out.shape == (msg.height * msg.width,)
    assert list(out.dtype.names or ()) == [f.name for f in msg.fields]
    for field in msg.fields:
        assert _same_bits(out[field.name], _reference_field(msg, field)), field.name
    names = {f.name for f in msg.fields}
    if not {"x", "y", "z"} <= names:
        with pytest.raises(ValueError, match="PointCloud2 has no '[xyz]' field"):
            pointcloud2_to_xyzi(msg)
        return
    xyzi = pointcloud2_to_xyzi(msg)
    by_name = {f.name: f for f in msg.fields}
    for col, name in enumerate(("x", "y", "z", "intensity")):
        expected = (_reference_field(msg, by_name[name]).astype(np.float32) if name in names
                    else np.zeros(len(out), np.float32))
        assert _same_bits(xyzi[:, col], expected), name


# ------------------------------------------------------------------------------ Image
# encoding -> (channels, bytes per channel, channel order of the message as RGB indices)
ENCODINGS = {"rgb8": (3, 1, (0, 1, 2)), "bgr8": (3, 1, (2, 1, 0)), "rgba8": (4, 1, (0, 1, 2)),
             "bgra8": (4, 1, (2, 1, 0)), "mono8": (1, 1, (0, 0, 0)),
             "mono16": (1, 2, (0, 0, 0))}


@st.composite
def images(draw):
    encoding = draw(st.sampled_from([*ENCODINGS, "16UC1", "rgb16", "", "yuv422"]))
    width, height = draw(st.integers(0, 7)), draw(st.integers(0, 5))
    channels, depth, _ = ENCODINGS.get(encoding, (3, 1, None))
    step = draw(st.one_of(st.just(width * channels * depth), st.integers(0, 40)))
    size = max(0, height * step + draw(st.integers(-8, 8)))
    msg = Image(height=height, width=width, encoding=encoding,
                is_bigendian=draw(st.integers(0, 1)), step=step)
    msg.data = array.array("B", draw(st.binary(min_size=size, max_size=size)))
    return msg


def _reference_rgb(msg) -> np.ndarray:
    channels, depth, order = ENCODINGS[msg.encoding]
    raw = bytes(msg.data)
    out = np.zeros((msg.height, msg.width, 3), np.uint8)
    for r in range(msg.height):
        for c in range(msg.width):
            at = r * msg.step + c * channels * depth
            if depth == 2:  # mono16: its high byte
                value = int(np.frombuffer(raw, ">u2" if msg.is_bigendian else "<u2", 1, at)[0])
                out[r, c] = value >> 8
            else:
                out[r, c] = [raw[at + k] for k in order]
    return out


@FUZZ
@given(images())
def test_image_gives_the_right_pixels_or_a_named_error(msg):
    known = msg.encoding in ENCODINGS
    if known:
        channels, depth, _ = ENCODINGS[msg.encoding]
        valid = (msg.step >= msg.width * channels * depth
                 and len(msg.data) >= msg.height * msg.step)
    event(f"decodable: {known and valid}")
    if not known or not valid:
        with pytest.raises(ValueError, match="image (encoding|step|data)"):
            image_to_rgb(msg)
        return
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (msg.height, msg.width, 3)
    assert np.array_equal(out, _reference_rgb(msg))


# ------------------------------------------------------------------------------ CompressedImage
small_rgb = st.builds(
    lambda h, w, seed: np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8),
    st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**16))


def _encoded(rgb: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _compressed(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    return msg


@FUZZ
@given(small_rgb, st.data())
def test_png_decodes_exactly_and_damaged_png_is_refused_or_exact(rgb, data):
    png = _encoded(rgb, ".png")
    assert np.array_equal(compressed_image_to_rgb(_compressed(png, "png")), rgb)
    damaged = bytearray(png)
    for at in data.draw(st.lists(st.integers(0, len(png) - 1), min_size=1, max_size=4)):
        damaged[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(png)))
    try:  # PNG carries CRCs and zlib checksums: damage is refused, or lands where unused
        out = compressed_image_to_rgb(_compressed(bytes(damaged[:cut]), "png"))
    except ValueError as err:
        assert "cannot decode CompressedImage" in str(err)
    else:
        assert np.array_equal(out, rgb)


@FUZZ
@given(small_rgb, st.binary(max_size=64), st.integers(0, 10**6))
def test_jpeg_and_random_bytes_decode_to_an_rgb_image_or_a_named_error(rgb, noise, seed):
    jpeg = _encoded(rgb, ".jpg")
    out = compressed_image_to_rgb(_compressed(jpeg, "jpeg"))
    luma = np.array([0.299, 0.587, 0.114])  # JPEG keeps brightness; colour is subsampled
    assert out.shape == rgb.shape and np.abs((out - rgb.astype(float)) @ luma).mean() < 20
    damaged = bytearray(jpeg)
    rng = np.random.default_rng(seed)
    damaged[rng.integers(0, len(jpeg))] ^= int(rng.integers(1, 256))
    for blob in (bytes(damaged), noise, jpeg[: len(jpeg) // 2] + noise):
        try:  # JPEG has no checksum: only a well-formed image or a named error is asked
            out = compressed_image_to_rgb(_compressed(blob, "jpeg"))
        except ValueError as err:
            assert "cannot decode CompressedImage" in str(err)
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


# ------------------------------------------------------------------------------ CameraInfo
finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2000.0, 2000.0), st.sampled_from([0.0, 1e-300, -1e-300, 1e300]))


@st.composite
def camera_infos(draw):
    width, height = draw(st.integers(0, 4000)), draw(st.integers(0, 3000))
    k = [draw(finite_or_not) for _ in range(9)]
    if draw(st.booleans()):  # a plausible camera, perturbed entry by entry
        k = [draw(st.floats(0.3, 3.0)) * max(width, height, 1), 0.0, width / 2, 0.0,
             draw(st.floats(0.3, 3.0)) * max(width, height, 1), height / 2, 0.0, 0.0, 1.0]
        k[draw(st.integers(0, 8))] = draw(finite_or_not)
    model = draw(st.sampled_from(["plumb_bob", "equidistant", "rational_polynomial", "",
                                  "none", "kannala_brandt"]))
    d = draw(st.lists(st.one_of(st.just(0.0), finite_or_not), max_size=9))
    msg = CameraInfo(width=width, height=height, distortion_model=model, d=d, k=k)
    msg.binning_x, msg.binning_y = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    if draw(st.booleans()):
        msg.roi.width, msg.roi.height = draw(st.integers(0, 100)), draw(st.integers(0, 100))
        msg.roi.x_offset = draw(st.integers(0, 10))
    return msg


@FUZZ
@given(camera_infos())
def test_camera_info_gives_a_plausible_camera_or_a_named_error(msg):
    try:
        camera = camera_info_to_camera(msg)
    except ValueError as err:
        event("refused")
        assert any(word in str(err) for word in ("CameraInfo", "camera", "K ", "image size",
                                                 "distortion", "contains NaN"))
        return
    side = max(msg.width, msg.height)
    low, high = FOCAL_RANGE_OF_IMAGE_SIZE
    K = camera.K
    assert np.isfinite(K).all() and np.isfinite(camera.D).all()
    assert (camera.width, camera.height) == (msg.width, msg.height) and side > 0
    assert low * side <= K[0, 0] <= high * side and low * side <= K[1, 1] <= high * side
    margin_x, margin_y = PRINCIPAL_POINT_MARGIN * msg.width, PRINCIPAL_POINT_MARGIN * msg.height
    assert -margin_x <= K[0, 2] <= msg.width + margin_x
    assert -margin_y <= K[1, 2] <= msg.height + margin_y
    assert np.array_equal(K.reshape(-1), np.asarray(msg.k))
