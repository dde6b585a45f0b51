"""nclr-bag convert: data set -> bag -> BagFrames gives the readers' samples back."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.reader import BagFrames, open_bag, read_tf_static
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_ros.bag_convert import KITTI_OBJECT_RATE_HZ, convert, write_bag

REPO = Path(__file__).resolve().parents[2]
FRAMES = 3


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic drive (3 frames, 16 beams, 64 x 32 images) in SemanticKITTI layout."""
    root = tmp_path_factory.mktemp("synthetic")
    subprocess.run(
        [sys.executable, str(REPO / "training" / "make_synthetic.py"), "--out", str(root),
         "--frames", str(FRAMES), "--beams", "16", "--width", "64", "--height", "32"],
        check=True, capture_output=True,
    )
    return root


def _tiny_sample(index: int, camera_stamp: float | None = None) -> dict:
    rng = np.random.default_rng(index)
    n = 50
    sample = {
        "image": rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        "points": rng.normal(size=(n, 4)).astype(np.float32),
        "ring": rng.integers(0, 32, n).astype(np.int64),
        "K": np.array([[5.0, 0.0, 4.0], [0.0, 5.0, 3.0], [0.0, 0.0, 1.0]]),
        "T_cam_lidar": np.eye(4),
        "stamp": 1.5 + 0.1 * index,
        "camera_frame": "cam",
        "lidar_frame": "lidar",
    }
    if camera_stamp is not None:
        sample["camera_stamp"] = camera_stamp
    return sample


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_synthetic_drive_round_trips_exactly(synthetic_root, tmp_path, storage):
    bag = tmp_path / "drive"
    result = convert("synthetic", synthetic_root, bag, storage=storage)
    assert result.frames == FRAMES and result.tf_static_messages == 1
    assert not [p for p in tmp_path.iterdir() if p.name != "drive"]  # no staging left
    expected = SemanticKittiDataset(synthetic_root)
    frames = BagFrames(bag, BagTopics(), slop=0.01)
    got = list(frames)
    assert len(got) == FRAMES
    assert frames.counters.paired == FRAMES and frames.images_without_info == 0
    for sample, ref in zip(got, expected, strict=True):
        np.testing.assert_array_equal(sample["image"], ref["image"])
        np.testing.assert_array_equal(sample["points"], ref["points"])
        assert sample["points"].dtype == np.float32
        np.testing.assert_array_equal(sample["K"], ref["K"])
        np.testing.assert_allclose(sample["T_cam_lidar"], ref["T_cam_lidar"], atol=1e-12)
        assert sample["stamp"] == ref["stamp"] and sample["camera_stamp"] == ref["stamp"]
        assert (sample["camera_frame"], sample["lidar_frame"]) == (
            ref["camera_frame"], ref["lidar_frame"])
        assert sample["camera"].width == ref["image"].shape[1]
        assert sample["camera"].height == ref["image"].shape[0]
        assert "ring" not in sample


def test_compressed_images_decode_close_to_the_source(synthetic_root, tmp_path):
    bag = tmp_path / "jpeg"
    convert("synthetic", synthetic_root, bag, compressed=True, max_frames=2)
    frames = BagFrames(bag, BagTopics(), slop=0.01)
    assert frames.image_topic == "/camera/image_raw/compressed"
    got = list(frames)
    assert len(got) == 2
    ref = SemanticKittiDataset(synthetic_root)[0]
    error = np.abs(got[0]["image"].astype(int) - ref["image"].astype(int)).mean()
    assert error < 8.0  # JPEG is lossy, but the picture is the same
    np.testing.assert_array_equal(got[0]["points"], ref["points"])


def test_ring_camera_stamps_and_calibration_changes_are_kept(tmp_path):
    samples = [_tiny_sample(i, camera_stamp=1.5 + 0.1 * i + 0.02) for i in range(3)]
    samples[2]["T_cam_lidar"] = np.diag([1.0, 1.0, 1.0, 1.0])
    samples[2]["T_cam_lidar"][:3, 3] = [0.1, -0.2, 0.3]
    bag = tmp_path / "tiny"
    result = write_bag(samples, bag)
    assert result.tf_static_messages == 2
    assert (result.first_stamp, result.last_stamp) == (1.5, 1.5 + 0.2 + 0.02)
    got = list(BagFrames(bag, BagTopics(), slop=0.05))
    assert len(got) == 3
    for sample, ref in zip(got, samples, strict=True):
        np.testing.assert_array_equal(sample["ring"], ref["ring"])
        np.testing.assert_array_equal(sample["points"], ref["points"])
        assert sample["stamp"] == ref["stamp"]
        assert sample["camera_stamp"] == ref["camera_stamp"]
        np.testing.assert_allclose(sample["T_cam_lidar"], ref["T_cam_lidar"], atol=1e-12)


def test_refuses_existing_output_and_missing_source(synthetic_root, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(BagError, match="already exists"):
        convert("synthetic", synthetic_root, tmp_path / "taken")
    with pytest.raises(FileNotFoundError, match="SemanticKITTI root"):
        convert("semantickitti", tmp_path / "absent", tmp_path / "bag")
    with pytest.raises(FileNotFoundError, match="sequence '07'"):
        convert("synthetic", synthetic_root, tmp_path / "bag", sequence="07")
    assert not (tmp_path / "bag").exists()


def test_real_kitti_object_tf_static_is_the_kitti_calibration(real_data, tmp_path):
    root = real_data / "kitti_object"
    bag = tmp_path / "kitti"
    result = convert("kitti-object", root, bag, storage="mcap", max_frames=2)
    reference = KittiObjectDataset(root, "training")
    refs = [reference[0], reference[1]]
    # training/000000 is from another day: its calibration differs, so /tf_static repeats.
    assert not np.allclose(refs[0]["T_cam_lidar"], refs[1]["T_cam_lidar"])
    assert result.tf_static_messages == 2
    with open_bag(bag) as reader:
        transforms = read_tf_static(reader, bag, "/tf_static")
    np.testing.assert_allclose(transforms[("camera_2", "velodyne")], refs[1]["T_cam_lidar"],
                               atol=1e-6)
    got = list(BagFrames(bag, BagTopics(), slop=0.01))
    assert len(got) == 2
    for index, (sample, ref) in enumerate(zip(got, refs, strict=True)):
        np.testing.assert_allclose(sample["T_cam_lidar"], ref["T_cam_lidar"], atol=1e-6)
        np.testing.assert_array_equal(sample["K"], ref["K"])
        np.testing.assert_array_equal(sample["points"], ref["points"])
        np.testing.assert_array_equal(sample["image"], ref["image"])
        assert sample["stamp"] == index / KITTI_OBJECT_RATE_HZ
