"""KITTI object reader on the real samples, and its error paths on a tiny copy."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from nclr_core.data.files import DataFormatError
from nclr_core.data.kitti import KittiObjectDataset, kitti_camera_from_calib
from nclr_core.geometry.projection import project_points


def _in_image_fraction(sample: dict) -> float:
    h, w = sample["image"].shape[:2]
    proj = project_points(sample["points"][:, :3], sample["T_cam_lidar"], sample["K"], (h, w))
    return float(np.mean(proj.in_image))


@pytest.mark.parametrize("split", ["training", "testing"])
def test_every_frame_projects_13_to_19_percent(real_data: Path, split: str) -> None:
    ds = KittiObjectDataset(real_data / "kitti_object", split)
    assert len(ds) == 6
    for i in range(len(ds)):
        s = ds[i]
        assert s["points"].dtype == np.float32 and s["points"].shape[1] == 4
        assert s["image"].dtype == np.uint8 and s["image"].shape[2] == 3
        assert s["sequence"] == split and s["frame_id"] == f"{i:06d}"
        assert 0.13 <= _in_image_fraction(s) <= 0.19, (split, i)


def test_image_is_rgb(real_data: Path) -> None:
    root = real_data / "kitti_object"
    s = KittiObjectDataset(root)[2]
    bgr = cv2.imread(str(root / "training" / "image_2" / "000002.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(s["image"], bgr[..., ::-1])
    assert not np.array_equal(s["image"], bgr)


def _fov_calib(real_data: Path) -> dict:
    return json.loads((real_data / "kitti_fov_cropped" / "calib.json").read_text())


def test_calibration_keeps_Tr_translation_and_baseline(real_data: Path) -> None:
    c = _fov_calib(real_data)
    P2 = np.array(c["cam2img_P2"])
    R0 = np.array(c["R0_rect"])[:3, :3]
    Tr = np.array(c["Tr_velo_to_cam"])[:3]
    K, T = kitti_camera_from_calib(P2, R0, Tr)
    np.testing.assert_allclose(K, P2[:, :3])
    # calib.json's lidar2cam is R0_rect . Tr (rectified camera 0): ours adds only [I | b]
    b = np.linalg.solve(K, P2[:, 3])
    T_rect = T.copy()
    T_rect[:3, 3] -= b
    np.testing.assert_allclose(T_rect, c["lidar2cam"], atol=1e-6)
    # dropping Tr's translation would move T by ~0.27 m
    _, T_no_t = kitti_camera_from_calib(P2, R0, np.concatenate([Tr[:, :3], np.zeros((3, 1))], 1))
    assert np.linalg.norm(T[:3, 3] - T_no_t[:3, 3]) > 0.25
    # K (R p + t) equals the KITTI chain P2 . R0_rect . Tr . [p, 1]
    p = np.array([[10.0, 1.0, -0.5, 1.0], [25.0, -4.0, 1.0, 1.0]])
    R0_h = np.eye(4)
    R0_h[:3, :3] = R0
    ref = P2 @ R0_h @ np.vstack([Tr, [0, 0, 0, 1]]) @ p.T
    ours = K @ (T @ p.T)[:3]
    np.testing.assert_allclose(ours[:2] / ours[2], ref[:2] / ref[2], atol=1e-9)


def test_fov_cropped_frame_projects_inside_image(real_data: Path) -> None:
    src = real_data / "kitti_fov_cropped"
    c = _fov_calib(real_data)
    K, T = kitti_camera_from_calib(
        np.array(c["cam2img_P2"]), np.array(c["R0_rect"])[:3, :3],
        np.array(c["Tr_velo_to_cam"])[:3],
    )
    points = np.fromfile(src / "000008.bin", dtype=np.float32).reshape(-1, 4)
    assert points.shape[0] == 17238
    proj = project_points(points[:, :3], T, K, (c["H"], c["W"]))
    assert np.mean(proj.in_image) > 0.99


@pytest.fixture()
def tiny_kitti(tmp_path: Path, real_data: Path) -> Path:
    """A one-frame KITTI object layout: real calib, 8 random points, a 6x4 image."""
    split = tmp_path / "training"
    for sub in ("velodyne", "image_2", "calib"):
        (split / sub).mkdir(parents=True)
    shutil.copy(real_data / "kitti_object" / "training" / "calib" / "000001.txt",
                split / "calib" / "000000.txt")
    np.random.default_rng(0).uniform(-5, 5, (8, 4)).astype(np.float32).tofile(
        split / "velodyne" / "000000.bin"
    )
    assert cv2.imwrite(str(split / "image_2" / "000000.png"), np.zeros((4, 6, 3), np.uint8))
    return tmp_path


def test_tiny_layout_reads(tiny_kitti: Path) -> None:
    s = KittiObjectDataset(tiny_kitti)[0]
    assert s["points"].shape == (8, 4) and s["image"].shape == (4, 6, 3)
    assert s["K"][0, 0] == pytest.approx(721.5377)


def test_truncated_bin_names_file(tiny_kitti: Path) -> None:
    path = tiny_kitti / "training" / "velodyne" / "000000.bin"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(DataFormatError, match=r"velodyne/000000\.bin"):
        KittiObjectDataset(tiny_kitti)[0]


def test_missing_calib_key_names_file(tiny_kitti: Path) -> None:
    path = tiny_kitti / "training" / "calib" / "000000.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(ln for ln in lines if not ln.startswith("Tr_velo_to_cam")))
    with pytest.raises(DataFormatError, match=r"calib/000000\.txt.*'Tr_velo_to_cam'"):
        KittiObjectDataset(tiny_kitti)[0]


def test_unreadable_image_names_file(tiny_kitti: Path) -> None:
    (tiny_kitti / "training" / "image_2" / "000000.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataFormatError, match=r"image_2/000000\.png.*unreadable"):
        KittiObjectDataset(tiny_kitti)[0]


def test_layout_errors(tiny_kitti: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'testing'"):
        KittiObjectDataset(tiny_kitti, "testing")
    with pytest.raises(ValueError, match="split"):
        KittiObjectDataset(tiny_kitti, "train")
    (tiny_kitti / "training" / "calib" / "000000.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"calib/000000\.txt"):
        KittiObjectDataset(tiny_kitti)
