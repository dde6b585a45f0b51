"""Shared low-level loaders: content checks and error messages naming the file."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from nclr_core.data.files import (
    DataFormatError,
    projection_to_camera,
    read_bin_points,
    read_float_table,
    read_image_rgb,
    read_kitti_calib,
    read_records,
)


def test_bin_points_round_trip_and_truncation(tmp_path: Path) -> None:
    pts = np.arange(20, dtype=np.float32).reshape(5, 4)
    path = tmp_path / "000000.bin"
    pts.tofile(path)
    np.testing.assert_array_equal(read_bin_points(path), pts)
    assert read_bin_points(path, num_fields=5).shape == (4, 5)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataFormatError, match=r"000000\.bin.*not a multiple"):
        read_bin_points(path)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        read_bin_points(tmp_path / "missing.bin")


def test_records_uint32(tmp_path: Path) -> None:
    path = tmp_path / "x.label"
    np.array([1, 2, 3], np.uint32).tofile(path)
    out = read_records(path, np.uint32, 1)
    assert out.dtype == np.uint32 and out.shape == (3, 1)
    path.write_bytes(b"\x00" * 7)
    with pytest.raises(DataFormatError, match="x.label"):
        read_records(path, np.uint32, 1)


def test_image_is_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2] = (255, 0, 0)  # pure red
    rgb[3, 5] = (10, 20, 30)
    path = tmp_path / "img.png"
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    out = read_image_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out, rgb)


def test_image_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataFormatError, match=r"broken\.png.*unreadable"):
        read_image_rgb(bad)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image_rgb(tmp_path / "nope.png")


def test_real_kitti_image_channel_order(real_data: Path) -> None:
    path = real_data / "kitti_object" / "training" / "image_2" / "000001.png"
    rgb = read_image_rgb(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    assert rgb.shape == (375, 1242, 3)


def test_kitti_calib(tmp_path: Path) -> None:
    path = tmp_path / "calib.txt"
    path.write_text("P2: 1 0 2 3 0 1 4 5 0 0 1 6\nR0_rect: 1 0 0 0 1 0 0 0 1\n\n")
    calib = read_kitti_calib(path, {"P2": (3, 4), "R0_rect": (3, 3)})
    np.testing.assert_array_equal(calib["P2"][:, 3], [3, 5, 6])
    assert calib["R0_rect"].dtype == np.float64
    with pytest.raises(DataFormatError, match=r"calib\.txt.*'Tr_velo_to_cam' missing"):
        read_kitti_calib(path, {"Tr_velo_to_cam": (3, 4)})
    with pytest.raises(DataFormatError, match=r"calib\.txt.*'R0_rect' has 9 values"):
        read_kitti_calib(path, {"R0_rect": (3, 4)})
    path.write_text("P2: 1 0 x\n")
    with pytest.raises(DataFormatError, match="not numeric"):
        read_kitti_calib(path, {"P2": (3, 4)})


def test_kitti_calib_optional_keys(tmp_path: Path) -> None:
    path = tmp_path / "calib.txt"
    path.write_text("P2: 1 0 2 3 0 1 4 5 0 0 1 6\nD2: -0.3 0.1 0.001 0 0\n")
    calib = read_kitti_calib(path, {"P2": (3, 4)}, optional={"D2": (5,), "D3": (5,)})
    np.testing.assert_array_equal(calib["D2"], [-0.3, 0.1, 0.001, 0.0, 0.0])
    assert "D3" not in calib
    path.write_text("P2: 1 0 2 3 0 1 4 5 0 0 1 6\nD2: -0.3 0.1\n")
    with pytest.raises(DataFormatError, match=r"'D2' has 2 values"):
        read_kitti_calib(path, {"P2": (3, 4)}, optional={"D2": (5,)})


def test_float_table(tmp_path: Path) -> None:
    path = tmp_path / "times.txt"
    path.write_text("0.0\n1.5e-1\n\n")
    np.testing.assert_allclose(read_float_table(path, 1)[:, 0], [0.0, 0.15])
    path.write_text("0.0\n1 2\n")
    with pytest.raises(DataFormatError, match=r"times\.txt: line 2"):
        read_float_table(path, 1)


def test_projection_to_camera() -> None:
    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    b = np.array([0.06, -0.001, 0.003])
    K_out, b_out = projection_to_camera(K @ np.concatenate([np.eye(3), b[:, None]], axis=1))
    np.testing.assert_allclose(K_out, K)
    np.testing.assert_allclose(b_out, b, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        projection_to_camera(np.eye(3))
