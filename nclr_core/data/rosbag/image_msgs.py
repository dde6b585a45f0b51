"""sensor_msgs Image / CompressedImage -> NumPy arrays, without cv_bridge or ROS.

In memory, colour images are RGB uint8 (H, W, 3) (the project convention); mono8 is
(H, W) uint8 and mono16 is (H, W) uint16 in native byte order. `step` (bytes per row,
possibly padded) and `is_bigendian` (mono16) are honoured when reading. A message is anything
with the Image / CompressedImage fields (an rclpy message or a decoded rosbags one); building
messages needs rclpy and lives in `nclr_ros.image_msgs`.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# encoding -> (channels, bytes per channel, cv2 code message -> RGB, cv2 code RGB -> message,
# cv2 code RGBA -> message); None where no colour conversion applies.
EncodingLayout = tuple[int, int, int | None, int | None, int | None]
_ENCODINGS: dict[str, EncodingLayout] = {
    "rgb8": (3, 1, None, None, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR, None),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB, cv2.COLOR_RGB2RGBA, None),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB, cv2.COLOR_RGB2BGRA, cv2.COLOR_RGBA2BGRA),
    "mono8": (1, 1, None, None, None),
    "mono16": (1, 2, None, None, None),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


def encoding_layout(encoding: str) -> EncodingLayout:
    """(channels, bytes per channel, cv2 codes message -> RGB, RGB -> message, RGBA ->
    message) of `encoding`; ValueError naming the supported ones."""
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"unsupported image encoding '{encoding}' "
            f"(supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    return _ENCODINGS[encoding]


def image_to_array(msg: Any) -> np.ndarray:
    """Pixels of `msg` as a new array: RGB uint8 (H, W, 3) for colour encodings (alpha is
    dropped), (H, W) uint8 for mono8, (H, W) uint16 for mono16.

    Raises ValueError for an unknown encoding or a `step`/data size that cannot hold the image.
    """
    channels, depth, to_rgb, _, _ = encoding_layout(msg.encoding)
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


def image_to_rgb(msg: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) for any supported encoding; mono is replicated into three channels
    (mono16 keeps its high byte)."""
    pixels = image_to_array(msg)
    if pixels.ndim == 3:
        return pixels
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels[:, :, None], 3, axis=2)


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
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
