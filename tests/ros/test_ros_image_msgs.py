"""Image / CompressedImage <-> NumPy conversions: every encoding, row padding, endianness."""
import array

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from nclr_core.data.rosbag.image_msgs import (
    SUPPORTED_ENCODINGS,
    compressed_image_to_rgb,
    image_to_array,
    image_to_rgb,
)
from nclr_ros.conversions import camera_info_to_camera
from nclr_ros.image_msgs import array_to_image, rgb_to_compressed_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
MONO8 = RNG.integers(0, 256, size=(5, 7), dtype=np.uint8)
MONO16 = RNG.integers(0, 65536, size=(5, 7), dtype=np.uint16)


def _sample(encoding):
    return {"mono8": MONO8, "mono16": MONO16}.get(encoding, RGB)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_roundtrip_every_encoding(encoding):
    pixels = _sample(encoding)
    msg = array_to_image(pixels, encoding, Header(frame_id="cam"))
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.header.frame_id == "cam"
    back = image_to_array(msg)
    assert back.dtype == pixels.dtype
    np.testing.assert_array_equal(back, pixels)


def test_channel_order_in_message_bytes():
    # Hand-written bytes: one pixel red = (255, 0, 0) in RGB.
    def msg(encoding, raw):
        return Image(height=1, width=1, encoding=encoding, step=len(raw),
                     data=array.array("B", raw))
    red = [255, 0, 0]
    assert image_to_array(msg("rgb8", bytes([255, 0, 0])))[0, 0].tolist() == red
    assert image_to_array(msg("bgr8", bytes([0, 0, 255])))[0, 0].tolist() == red
    assert image_to_array(msg("bgra8", bytes([0, 0, 255, 9])))[0, 0].tolist() == red
    assert image_to_array(msg("rgba8", bytes([255, 0, 0, 9])))[0, 0].tolist() == red
    assert bytes(array_to_image(np.array([[red]], np.uint8), "bgr8").data) == bytes([0, 0, 255])
    assert bytes(array_to_image(np.array([[red]], np.uint8), "bgra8").data) == bytes(
        [0, 0, 255, 255])


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_padded_rows_are_honoured(encoding):
    pixels = _sample(encoding)
    packed = array_to_image(pixels, encoding)
    pad = 13
    rows = np.frombuffer(bytes(packed.data), np.uint8).reshape(packed.height, packed.step)
    padded = np.concatenate([rows, np.full((packed.height, pad), 0xAB, np.uint8)], axis=1)
    packed.step += pad
    packed.data = array.array("B", padded.tobytes())
    np.testing.assert_array_equal(image_to_array(packed), pixels)


def test_bigendian_mono16():
    raw = MONO16.astype(">u2").tobytes()
    msg = Image(height=5, width=7, encoding="mono16", is_bigendian=1, step=14,
                data=array.array("B", raw))
    out = image_to_array(msg)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, MONO16)


def test_image_to_rgb_from_mono():
    rgb = image_to_rgb(array_to_image(MONO8, "mono8"))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[:, :, 1], MONO8)
    rgb16 = image_to_rgb(array_to_image(MONO16, "mono16"))
    np.testing.assert_array_equal(rgb16[:, :, 2], (MONO16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(image_to_rgb(array_to_image(RGB, "bgr8")), RGB)


def test_bad_images_raise_clear_errors():
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        image_to_array(Image(height=1, width=1, encoding="yuv422", step=2,
                             data=array.array("B", bytes(2))))
    short = array_to_image(RGB, "rgb8")
    short.data = array.array("B", bytes(10))
    with pytest.raises(ValueError, match="image data has 10 bytes"):
        image_to_array(short)
    narrow = array_to_image(RGB, "rgb8")
    narrow.step = 5
    with pytest.raises(ValueError, match="step 5 is smaller"):
        image_to_array(narrow)
    with pytest.raises(ValueError, match="needs uint16"):
        array_to_image(MONO8, "mono16")
    with pytest.raises(ValueError, match="needs RGB"):
        array_to_image(MONO8, "rgb8")


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_roundtrip(fmt):
    smooth = np.zeros((16, 24, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 250, 24, dtype=np.uint8)[None, :]
    smooth[..., 2] = 40
    msg = rgb_to_compressed_image(smooth, fmt, Header(frame_id="cam"))
    assert fmt in msg.format and msg.header.frame_id == "cam"
    out = compressed_image_to_rgb(msg)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    tolerance = 0 if fmt == "png" else 12
    assert np.abs(out.astype(int) - smooth.astype(int)).max() <= tolerance
    # channel order survives: red ramp stays in channel 0, blue stays constant
    assert out[..., 0].mean() > 100 and abs(float(out[..., 2].mean()) - 40) < 8


def test_undecodable_compressed_image():
    with pytest.raises(ValueError, match="cannot decode CompressedImage with format 'jpeg'"):
        compressed_image_to_rgb(CompressedImage(format="jpeg",
                                                data=array.array("B", b"not a jpeg")))


def _camera_info(model, d, k=(500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0)):
    return CameraInfo(width=640, height=480, distortion_model=model, d=list(d), k=list(k))


@pytest.mark.parametrize(
    ("model", "d", "expected_model", "expected_d"),
    [
        ("plumb_bob", [0.1, -0.2, 0.001, 0.002, 0.05], "plumb_bob", [0.1, -0.2, 0.001, 0.002,
                                                                     0.05]),
        ("equidistant", [0.01, 0.02, 0.03, 0.04], "equidistant", [0.01, 0.02, 0.03, 0.04]),
        ("rational_polynomial", [0.1, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0], "plumb_bob",
         [0.1, 0.2, 0.0, 0.0, 0.3]),
        ("", [], "none", []),
        ("equidistant", [0.01, 0.02, 0.03, 0.04, 0.0], "equidistant", [0.01, 0.02, 0.03, 0.04]),
    ],
)
def test_camera_info_to_camera(model, d, expected_model, expected_d):
    camera = camera_info_to_camera(_camera_info(model, d))
    assert (camera.width, camera.height, camera.distortion) == (640, 480, expected_model)
    np.testing.assert_array_equal(camera.K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    np.testing.assert_array_equal(camera.D, expected_d)


def test_camera_info_rejections():
    with pytest.raises(ValueError, match="not calibrated"):
        camera_info_to_camera(_camera_info("plumb_bob", [0] * 5, k=[0.0] * 9))
    with pytest.raises(ValueError, match="distortion model 'kannala'"):
        camera_info_to_camera(_camera_info("kannala", [0.1]))
    with pytest.raises(ValueError, match="fx = 1e-300 px is implausible"):
        camera_info_to_camera(_camera_info("plumb_bob", [0] * 5,
                                           k=[1e-300, 0, 300, 0, 1e-300, 200, 0, 0, 1]))
    with pytest.raises(ValueError, match="non-zero k4..k6"):
        camera_info_to_camera(_camera_info("rational_polynomial", [0, 0, 0, 0, 0, 0.1, 0, 0]))
    with pytest.raises(ValueError, match="plumb_bob has 6 coefficients"):
        camera_info_to_camera(_camera_info("plumb_bob", [0, 0, 0, 0, 0, 0.2]))
    binned = _camera_info("plumb_bob", [0] * 5)
    binned.binning_x = 2
    with pytest.raises(ValueError, match="binning"):
        camera_info_to_camera(binned)
