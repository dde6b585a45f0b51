"""NumPy arrays -> sensor_msgs Image / CompressedImage messages (rclpy), without cv_bridge.

Pixels are laid out as `nclr_core.data.rosbag.image_msgs` reads them back (RGB uint8
(H, W, 3) for colour, (H, W) uint8 mono8, (H, W) uint16 mono16); rows are unpadded.
"""
from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from nclr_core.data.rosbag.image_msgs import encoding_layout


def array_to_image(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Image message from `pixels` laid out as `image_to_array` returns them.

    Colour encodings take RGB uint8 (H, W, 3) (rgba8/bgra8 also accept RGBA (H, W, 4); alpha
    is 255 otherwise), mono8 takes (H, W) uint8, mono16 (H, W) uint16. Rows are unpadded and
    mono16 is written little-endian.
    """
    channels, depth, _, from_rgb, from_rgba = encoding_layout(encoding)
    pixels = np.asarray(pixels)
    want_dtype = np.uint16 if depth == 2 else np.uint8
    if pixels.dtype != want_dtype:
        raise ValueError(f"encoding '{encoding}' needs {np.dtype(want_dtype)}, got {pixels.dtype}")
    if channels == 1:
        if pixels.ndim != 2:
            raise ValueError(f"encoding '{encoding}' needs (H, W) pixels, got {pixels.shape}")
        out = pixels.astype("<u2") if depth == 2 else pixels
    else:
        allowed = (3, 4) if channels == 4 else (3,)
        if pixels.ndim != 3 or pixels.shape[2] not in allowed:
            raise ValueError(
                f"encoding '{encoding}' needs RGB (H, W, 3) pixels"
                f"{' or RGBA (H, W, 4)' if channels == 4 else ''}, got {pixels.shape}"
            )
        code = from_rgb if pixels.shape[2] == 3 else from_rgba
        out = pixels if code is None or pixels.size == 0 else cv2.cvtColor(pixels, code)
    height, width = pixels.shape[:2]
    msg = Image(
        header=header if header is not None else Header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * depth,
    )
    msg.data = _byte_array(out)
    return msg


def _byte_array(values: np.ndarray) -> array.array:
    """The raw bytes of `values` (C order) as the array('B') that uint8[] message fields hold.

    Assign it after constructing the message: passing `data=` to the constructor copies the
    buffer twice more (a few ms for a full-HD image).
    """
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8))
    return data


def rgb_to_compressed_image(
    rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None
) -> CompressedImage:
    """Encode RGB uint8 (H, W, 3) as a `jpeg` or `png` CompressedImage (image_transport style
    format string, e.g. "bgr8; jpeg compressed bgr8")."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"unsupported compressed format '{fmt}' (supported: jpeg, png)")
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"need RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png",
                               cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage(
        header=header if header is not None else Header(),
        format=f"bgr8; {fmt} compressed bgr8",
    )
    msg.data = _byte_array(encoded)
    return msg
