"""SemanticKITTI reader on a tiny layout written into tmp_path."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from nclr_core.data.files import DataFormatError
from nclr_core.data.semantickitti import (
    IGNORE_INDEX,
    SEMANTIC_KITTI_CLASSES,
    SEMANTIC_KITTI_LEARNING_MAP,
    SemanticKittiDataset,
)

# KITTI odometry sequence 00 calibration (calib.txt), P0..P3 and Tr.
P = {
    0: [718.856, 0, 607.1928, 0, 0, 718.856, 185.2157, 0, 0, 0, 1, 0],
    1: [718.856, 0, 607.1928, -386.1448, 0, 718.856, 185.2157, 0, 0, 0, 1, 0],
    2: [718.856, 0, 607.1928, 45.38225, 0, 718.856, 185.2157, -0.1130887, 0, 0, 1, 0.003779761],
    3: [718.856, 0, 607.1928, -337.2877, 0, 718.856, 185.2157, 2.369057, 0, 0, 1, 0.004915215],
}
TR = [
    4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02,
    -7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02,
    9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01,
]
RAW_IDS = np.array([0, 1, 10, 252, 40, 60, 81, 99, 13, 259, 52, 30, 254, 72], dtype=np.uint32)
TRAIN_IDS = np.array([255, 255, 0, 0, 8, 8, 18, 255, 4, 4, 255, 5, 5, 16])
H, W = 8, 12
PIXEL_RGB = (200, 30, 90)  # written at row 2, column 5 of every image


def _write_sequence(seq_dir: Path, n_frames: int, rng: np.random.Generator, labels: bool) -> None:
    for sub in ("velodyne", "image_2", "labels") if labels else ("velodyne", "image_2"):
        (seq_dir / sub).mkdir(parents=True)
    calib = [f"P{i}: " + " ".join(f"{v:.12e}" for v in P[i]) for i in range(4)]
    calib.append("Tr: " + " ".join(f"{v:.12e}" for v in TR))
    (seq_dir / "calib.txt").write_text("\n".join(calib) + "\n")
    (seq_dir / "times.txt").write_text("".join(f"{0.1 * i + 0.05:e}\n" for i in range(n_frames)))
    poses = []
    for i in range(n_frames):
        pose = np.eye(4)[:3].copy()
        pose[:, 3] = [0.1 * i, 0.0, 1.5 * i]
        poses.append(" ".join(f"{v:e}" for v in pose.ravel()))
    (seq_dir / "poses.txt").write_text("\n".join(poses) + "\n")
    for i in range(n_frames):
        stem = f"{i:06d}"
        n = len(RAW_IDS)
        pts = np.concatenate(
            [rng.uniform([2, -5, -1], [20, 5, 1], (n, 3)), rng.uniform(0, 1, (n, 1))], axis=1
        ).astype(np.float32)
        pts.tofile(seq_dir / "velodyne" / f"{stem}.bin")
        if labels:
            instance = np.arange(n, dtype=np.uint32) + 7 * i
            ((instance << 16) | RAW_IDS).astype(np.uint32).tofile(
                seq_dir / "labels" / f"{stem}.label"
            )
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[2, 5] = PIXEL_RGB[::-1]
        assert cv2.imwrite(str(seq_dir / "image_2" / f"{stem}.png"), bgr)


@pytest.fixture()
def sk_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    _write_sequence(tmp_path / "sequences" / "00", 3, rng, labels=True)
    _write_sequence(tmp_path / "sequences" / "08", 2, rng, labels=False)
    return tmp_path


def test_learning_map_is_the_standard_19_class_map() -> None:
    assert len(SEMANTIC_KITTI_CLASSES) == 19
    assert SEMANTIC_KITTI_CLASSES[0] == "car" and SEMANTIC_KITTI_CLASSES[18] == "traffic-sign"
    values = set(SEMANTIC_KITTI_LEARNING_MAP.values())
    assert values == set(range(19)) | {IGNORE_INDEX}
    assert len(SEMANTIC_KITTI_LEARNING_MAP) == 34
    # moving classes map to their static class
    for moving, static in [(252, 10), (253, 31), (254, 30), (255, 32), (258, 18), (259, 20)]:
        assert SEMANTIC_KITTI_LEARNING_MAP[moving] == SEMANTIC_KITTI_LEARNING_MAP[static]


def test_sample_contents(sk_root: Path) -> None:
    ds = SemanticKittiDataset(sk_root, sequences=("00", "08"))
    assert len(ds) == 5
    s = ds[1]
    assert s["sequence"] == "00" and s["frame_id"] == "000001"
    assert s["image"].dtype == np.uint8 and s["image"].shape == (H, W, 3)
    assert tuple(s["image"][2, 5]) == PIXEL_RGB  # RGB, not BGR
    assert s["points"].dtype == np.float32 and s["points"].shape == (len(RAW_IDS), 4)
    np.testing.assert_array_equal(s["labels"], TRAIN_IDS)
    assert s["labels"].dtype == np.int64
    np.testing.assert_array_equal(s["labels_raw"], RAW_IDS.astype(np.int64))
    np.testing.assert_array_equal(s["instances"], np.arange(len(RAW_IDS)) + 7)
    assert s["stamp"] == pytest.approx(0.15)
    np.testing.assert_allclose(s["pose"][:3, 3], [0.1, 0.0, 1.5])
    np.testing.assert_array_equal(s["pose"][3], [0, 0, 0, 1])
    unlabeled = ds[4]
    assert unlabeled["sequence"] == "08"
    assert "labels" not in unlabeled and "instances" not in unlabeled


def test_T_cam_lidar_reproduces_P2_Tr_projection(sk_root: Path) -> None:
    s = SemanticKittiDataset(sk_root)[0]
    xyz1 = np.concatenate([s["points"][:, :3], np.ones((len(s["points"]), 1))], axis=1)
    P2 = np.array(P[2]).reshape(3, 4)
    Tr = np.vstack([np.array(TR).reshape(3, 4), [0, 0, 0, 1]])
    ref = (P2 @ Tr @ xyz1.T).T
    cam = (s["T_cam_lidar"] @ xyz1.T).T[:, :3]
    ours = (s["K"] @ cam.T).T
    np.testing.assert_allclose(ours[:, :2] / ours[:, 2:], ref[:, :2] / ref[:, 2:], atol=1e-9)
    np.testing.assert_allclose(s["K"], P2[:, :3])
    np.testing.assert_array_equal(s["T_cam_lidar"][3], [0, 0, 0, 1])
    # camera 3 sits ~0.54 m to the right of camera 2: its frame origin is shifted along -x
    seq = sk_root / "sequences" / "00"
    shutil.copytree(seq / "image_2", seq / "image_3")
    s3 = SemanticKittiDataset(sk_root, camera="image_3")[0]
    np.testing.assert_allclose(s3["T_cam_lidar"][:3, :3], s["T_cam_lidar"][:3, :3])
    assert s3["camera_frame"] == "camera_3"
    shift = s3["T_cam_lidar"][:3, 3] - s["T_cam_lidar"][:3, 3]
    assert shift[0] == pytest.approx((P[3][3] - P[2][3]) / P[2][0], abs=1e-3)
    assert shift[0] < -0.5


def test_label_count_mismatch_names_file(sk_root: Path) -> None:
    path = sk_root / "sequences" / "00" / "labels" / "000002.label"
    np.zeros(3, np.uint32).tofile(path)
    ds = SemanticKittiDataset(sk_root)
    with pytest.raises(DataFormatError, match="000002.label"):
        ds[2]


def test_missing_calib_key_names_file(sk_root: Path) -> None:
    calib = sk_root / "sequences" / "00" / "calib.txt"
    calib.write_text("\n".join(ln for ln in calib.read_text().splitlines() if ln[:2] != "Tr"))
    with pytest.raises(DataFormatError, match=r"calib\.txt.*'Tr'"):
        SemanticKittiDataset(sk_root)


def test_layout_errors(sk_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'05'"):
        SemanticKittiDataset(sk_root, sequences=("05",))
    (sk_root / "sequences" / "00" / "image_2" / "000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="000001.png"):
        SemanticKittiDataset(sk_root)
    with pytest.raises(ValueError, match="camera"):
        SemanticKittiDataset(sk_root, sequences=("08",), camera="image_9")
    times = sk_root / "sequences" / "08" / "times.txt"
    times.write_text("0.0\n")
    with pytest.raises(DataFormatError, match="times.txt"):
        SemanticKittiDataset(sk_root, sequences=("08",))
