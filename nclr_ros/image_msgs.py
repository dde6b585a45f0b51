"""sensor_msgs Image / CompressedImage <-> NumPy arrays, without cv_bridge.

In memory, colour images are RGB uint8 (H, W, 3) (the project convention); mono8 is
(H, W) uint8 and mono16 is (H, W) uint16 in native byte order. `step` (bytes per row,
possibly padded) and `is_bigendian` (mono16) are honoured when reading.
"""
from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

# encoding -> (channels, bytes per channel, cv2 code message -> RGB, cv2 code RGB -> message,
# cv2 code RGBA -> message); None where no colour conversion applies.
_ENCODINGS: dict[str, tuple[int, int, int | None, int | None, int | None]] = {
    "rgb8": (3, 1, None, None, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR, None),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB, cv2.COLOR_RGB2RGBA, None),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB, cv2.COLOR_RGB2BGRA, cv2.COLOR_RGBA2BGRA),
    "mono8": (1, 1, None, None, None),
    "mono16": (1, 2, None, None, None),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


def _layout(encoding: str) -> tuple[int, int, int | None, int | None, int | None]:
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"unsupported image encoding '{encoding}' "
            f"(supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    return _ENCODINGS[encoding]


def image_to_array(msg: Image) -> np.ndarray:
    """Pixels of `msg` as a new array: RGB uint8 (H, W, 3) for colour encodings (alpha is
    dropped), (H, W) uint8 for mono8, (H, W) uint16 for mono16.

    Raises ValueError for an unknown encoding or a `step`/data size that cannot hold the image.
    """
    channels, depth, to_rgb, _, _ = _layout(msg.encoding)
    height, width = int(msg.height), int(msg.width)
    row_bytes = width * channels * depth
    if msg.step < row_bytes:
        raise ValueError(
            f"image step {msg.step} is smaller than width * bytes per pixel "
            f"= {width} * {channels * depth} = {row_bytes} for encoding '{msg.encoding}'"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < height * msg.step:
        raise ValueError(
            f"image data has {buf.size} bytes, expected height * step = "
            f"{height} * {msg.step} = {height * msg.step}"
        )
    rows = buf[: height * msg.step].reshape(height, msg.step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        return np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.uint16)
    if channels == 1:
        return rows.copy()
    pixels = rows.reshape(height, width, channels)  # a view even when rows are padded
    if height == 0 or width == 0:
        return np.zeros((height, width, 3), np.uint8)
    return pixels.copy() if to_rgb is None else cv2.cvtColor(pixels, to_rgb)


def image_to_rgb(msg: Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) for any supported encoding; mono is replicated into three channels
    (mono16 keeps its high byte)."""
    pixels = image_to_array(msg)
    if pixels.ndim == 3:
        return pixels
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels[:, :, None], 3, axis=2)


def array_to_image(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Image message from `pixels` laid out as `image_to_array` returns them.

    Colour encodings take RGB uint8 (H, W, 3) (rgba8/bgra8 also accept RGBA (H, W, 4); alpha
    is 255 otherwise), mono8 takes (H, W) uint8, mono16 (H, W) uint16. Rows are unpadded and
    mono16 is written little-endian.
    """
    channels, depth, _, from_rgb, from_rgba = _layout(encoding)
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


def compressed_image_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a JPEG/PNG CompressedImage to RGB uint8 (H, W, 3); grey images are replicated.

    Raises ValueError when the bytes cannot be decoded.
    """
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ValueError(
            f"cannot decode CompressedImage with format '{msg.format}' ({buf.size} bytes)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
