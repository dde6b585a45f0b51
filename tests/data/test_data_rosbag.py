"""`data.dataset: rosbag` on real bags written by `nclr-bag convert` from a synthetic drive:
frames equal to the source, the time split, the cache, both storages, the calibrations."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from nclr_core.config import ConfigError
from nclr_core.data.config import DataConfig, RosbagConfig
from nclr_core.data.datasets import build_pair_dataset, build_reader, check_splits
from nclr_core.data.rosbag.dataset import BagSplit, RosbagDataset
from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.rectify import rectify_image
from nclr_core.data.rosbag.tf_tree import lookup_transform
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import invert, make_transform, matrix_from_rpy
from nclr_core.io.calibration_files import CalibrationRecord, write_calibration_files
from nclr_ros.bag_convert import convert, write_bag

REPO = Path(__file__).resolve().parents[2]
FRAMES = 10  # 0.1 s apart: 0.0 .. 0.9 s


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    """A tiny synthetic drive (10 frames, 16 beams, 64 x 32 images), SemanticKITTI layout."""
    root = tmp_path_factory.mktemp("drive")
    subprocess.run(
        [sys.executable, str(REPO / "training" / "make_synthetic.py"), "--out", str(root),
         "--frames", str(FRAMES), "--beams", "16", "--width", "64", "--height", "32"],
        check=True, capture_output=True)
    return root


@pytest.fixture(scope="module")
def bags(drive, tmp_path_factory) -> dict[str, Path]:
    """The drive as an sqlite3 bag and as an mcap bag, each in its own folder."""
    root = tmp_path_factory.mktemp("bags")
    return {storage: convert("synthetic", drive, root / storage / f"drive_{storage}",
                             storage=storage).path for storage in ("sqlite3", "mcap")}


def _both(bag: Path, cache: Path, **kwargs) -> list[dict]:
    return [s for part in ("train", "val")
            for s in RosbagDataset(bag, BagSplit(part), cache_root=cache, **kwargs)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_frames_decode_to_the_source_frames(drive, bags, tmp_path, storage):
    samples = _both(bags[storage], tmp_path)
    source = list(SemanticKittiDataset(drive))
    assert len(samples) == len(source) == FRAMES
    for got, ref in zip(samples, source, strict=True):
        np.testing.assert_array_equal(got["image"], ref["image"])
        np.testing.assert_array_equal(got["points"], ref["points"])
        assert got["points"].dtype == np.float32
        np.testing.assert_array_equal(got["K"], ref["K"])
        np.testing.assert_allclose(got["T_cam_lidar"], ref["T_cam_lidar"], atol=1e-12)
        assert got["stamp"] == ref["stamp"]
        assert (got["camera_frame"], got["lidar_frame"]) == (ref["camera_frame"],
                                                             ref["lidar_frame"])
        assert got["sequence"] == bags[storage].name


def test_compressed_images_decode_close_to_the_source(drive, tmp_path):
    bag = convert("synthetic", drive, tmp_path / "jpeg", compressed=True).path
    samples = _both(bag, tmp_path / "cache")
    for got, ref in zip(samples, SemanticKittiDataset(drive), strict=True):
        error = np.abs(got["image"].astype(int) - ref["image"].astype(int))
        assert got["image"].shape == ref["image"].shape and error.mean() < 8


def test_first_80_percent_of_the_time_span_trains_the_rest_validates(bags, tmp_path):
    bag = bags["mcap"]
    train = RosbagDataset(bag, BagSplit("train"), cache_root=tmp_path)
    val = RosbagDataset(bag, BagSplit("val"), cache_root=tmp_path)
    train_stamps = [s["stamp"] for s in train]
    val_stamps = [s["stamp"] for s in val]
    # 0.0 .. 0.9 s: the cut at 0.72 s
    assert train_stamps == pytest.approx([0.1 * i for i in range(8)])
    assert val_stamps == pytest.approx([0.8, 0.9])
    half = RosbagDataset(bag, BagSplit("val", train_fraction=0.5), cache_root=tmp_path)
    assert [s["stamp"] for s in half] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])


def test_a_folder_of_bags_and_named_splits(bags, tmp_path):
    folder = tmp_path / "bags"
    folder.mkdir()
    for bag in bags.values():
        (folder / bag.name).symlink_to(bag, target_is_directory=True)
    train = RosbagDataset(folder, BagSplit("train"), cache_root=tmp_path / "cache")
    assert len(train) == 16 and {s["sequence"] for s in train} == {"drive_mcap",
                                                                   "drive_sqlite3"}
    named = RosbagDataset(folder, BagSplit("val", bags=("drive_sqlite3",)),
                          cache_root=tmp_path / "cache")
    assert len(named) == FRAMES and {s["sequence"] for s in named} == {"drive_sqlite3"}
    with pytest.raises(BagError, match=r"no bag\(s\) \['nope'\]"):
        RosbagDataset(folder, BagSplit("val", bags=("nope",)), cache_root=tmp_path / "cache")


def test_the_cache_is_reused_and_a_new_one_made_when_the_pairing_changes(bags, tmp_path):
    first = RosbagDataset(bags["sqlite3"], BagSplit("train"), cache_root=tmp_path)
    (cached,) = first.cached
    assert cached.decoded
    index = cached.folder / "index.json"
    written = index.stat().st_mtime_ns
    again = RosbagDataset(bags["sqlite3"], BagSplit("val"), cache_root=tmp_path)
    assert not again.cached[0].decoded and again.cached[0].folder == cached.folder
    assert index.stat().st_mtime_ns == written
    assert len(json.loads(index.read_text())["frames"]) == FRAMES
    # no temporary folders left; another slop is another cache
    other = RosbagDataset(bags["sqlite3"], BagSplit("train"), slop=0.01, cache_root=tmp_path)
    assert other.cached[0].decoded and other.cached[0].folder != cached.folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [cached.folder.name, other.cached[0].folder.name])


def _data(bag: Path, cache: Path, bags: dict | None = None, **kwargs) -> DataConfig:
    return DataConfig(dataset="rosbag", root=str(bag),
                      rosbag=RosbagConfig(cache_dir=str(cache), **(bags or {})), **kwargs)


@pytest.fixture(scope="module")
def untransformed_bag(drive, tmp_path_factory) -> Path:
    """The drive without /tf_static (its transforms go to another topic)."""
    out = tmp_path_factory.mktemp("no_tf") / "no_tf"
    return write_bag(SemanticKittiDataset(drive), out, storage="mcap",
                     topics=BagTopics(tf_static="/elsewhere")).path


def test_calibration_from_a_file_or_the_config_when_the_bag_has_none(untransformed_bag,
                                                                     tmp_path):
    cfg = _data(untransformed_bag, tmp_path / "cache")
    with pytest.raises(BagError, match="no calibration of camera frame .* data.calibration"):
        build_reader(cfg, train=True)
    T = make_transform(matrix_from_rpy([0.1, -0.2, 0.3]), [0.5, -0.1, 0.2])
    files = write_calibration_files(CalibrationRecord(T, "camera_2", "velodyne"),
                                    tmp_path / "car")
    for source in ({"calibration": str(files["yaml"])}, {"calibration": str(files["json"])},
                   {"T_cam_lidar": T.tolist()}):
        reader = build_reader(_data(untransformed_bag, tmp_path / "cache", **source), True)
        assert not reader.cached[0].decoded  # the calibration is not part of the cache
        np.testing.assert_allclose(reader[0]["T_cam_lidar"], T, atol=1e-9)
    with pytest.raises(ConfigError, match="both set"):
        check_splits(_data(untransformed_bag, tmp_path, calibration=str(files["yaml"]),
                           T_cam_lidar=T.tolist()))
    with pytest.raises(ConfigError, match="data.T_cam_lidar: T_cam_lidar last row"):
        check_splits(_data(untransformed_bag, tmp_path, T_cam_lidar=(2 * T).tolist()))
    with pytest.raises(FileNotFoundError, match="data.calibration file not found"):
        check_splits(_data(untransformed_bag, tmp_path, calibration=str(tmp_path / "x.yaml")))
    with pytest.raises(ConfigError, match="rosbag only"):
        check_splits(DataConfig(T_cam_lidar=T.tolist()))


def test_a_given_calibration_overrides_the_bags(bags, tmp_path):
    T = make_transform(matrix_from_rpy([0.0, 0.0, 0.5]), [1.0, 2.0, 3.0])
    reader = build_reader(_data(bags["mcap"], tmp_path, T_cam_lidar=T.tolist()), train=False)
    assert all(np.allclose(s["T_cam_lidar"], T) for s in reader)


def test_tf_static_chains_are_followed_both_ways():
    T_base_cam = make_transform(matrix_from_rpy([-1.5, 0.0, -1.6]), [1.2, 0.1, 1.5])
    T_base_lidar = make_transform(matrix_from_rpy([0.0, 0.02, 0.01]), [1.0, 0.0, 1.9])
    tree = {("base", "cam"): T_base_cam, ("base", "lidar"): T_base_lidar}
    np.testing.assert_allclose(lookup_transform(tree, "cam", "lidar"),
                               invert(T_base_cam) @ T_base_lidar, atol=1e-12)
    assert lookup_transform(tree, "cam", "radar") is None
    assert lookup_transform(tree, "cam", "cam") is None


def test_pair_datasets_train_on_the_bag_with_configs_of_other_data_sets(bags, tmp_path):
    # the split names of a synthetic config (sequences) do not matter to rosbag
    cfg = _data(bags["sqlite3"], tmp_path, train_split=["00", "01"], val_split=["04"],
                image_height=32, image_width=64, max_points=500)
    train = build_pair_dataset(cfg, train=True, seed=0)
    val = build_pair_dataset(cfg, train=False, seed=0)
    assert (len(train), len(val)) == (8, 2)
    assert train[0]["image"].shape == (3, 32, 64)


def test_bad_bags_and_settings_fail_with_the_option_to_change(bags, tmp_path):
    with pytest.raises(BagError, match="choose another with data.rosbag.image_topic"):
        RosbagDataset(bags["mcap"], BagSplit("train"), BagTopics(image="/cam/image"),
                      cache_root=tmp_path)
    with pytest.raises(BagError, match="neither a rosbag2 bag"):
        RosbagDataset(tmp_path, BagSplit("train"), cache_root=tmp_path)
    with pytest.raises(BagError, match="data.root not found"):
        RosbagDataset(tmp_path / "absent", BagSplit("train"), cache_root=tmp_path)
    with pytest.raises(ConfigError, match="both, or for neither"):
        check_splits(_data(bags["mcap"], tmp_path, {"train_bags": ["a"]}))
    with pytest.raises(ConfigError, match="shares bag"):
        check_splits(_data(bags["mcap"], tmp_path, {"train_bags": ["a"], "val_bags": ["a"]}))
    assert not any(tmp_path.iterdir())  # nothing half-written in the cache


def test_one_frame_has_no_validation_part(drive, tmp_path):
    bag = convert("synthetic", drive, tmp_path / "one", max_frames=1).path
    assert len(RosbagDataset(bag, BagSplit("train"), cache_root=tmp_path / "c")) == 1
    with pytest.raises(BagError, match="no val frames"):
        RosbagDataset(bag, BagSplit("val"), cache_root=tmp_path / "c")


def test_intensity_is_divided_by_the_lidar_full_scale(drive, tmp_path):
    source = list(SemanticKittiDataset(drive))
    for sample in source:
        sample["points"][:, 3] = np.round(sample["points"][:, 3] * 255.0)
    bag = write_bag(source, tmp_path / "bytes", storage="mcap").path
    got = _both(bag, tmp_path / "cache")
    np.testing.assert_allclose(got[3]["points"][:, 3], source[3]["points"][:, 3] / 255.0)
    fixed = RosbagDataset(bag, BagSplit("train"), intensity_full_scale=65535.0,
                          cache_root=tmp_path / "cache")
    np.testing.assert_allclose(fixed[3]["points"][:, 3], source[3]["points"][:, 3] / 65535.0)


def test_distorted_images_are_rectified_to_the_pinhole_camera():
    K = np.array([[300.0, 0.0, 320.0], [0.0, 300.0, 240.0], [0.0, 0.0, 1.0]])
    lens = CameraModel(K, 640, 480, "plumb_bob", [-0.3, 0.1, 0.001, -0.001, 0.0])
    rays = np.array([[x, y, 1.0] for x in (-0.8, -0.3, 0.0, 0.4, 0.8)
                     for y in (-0.5, 0.0, 0.6)])
    raw = np.zeros((480, 640, 3), np.uint8)
    for u, v in lens.project(rays)[0]:
        cv2.circle(raw, (round(u), round(v)), 3, (255, 255, 255), -1)
    rectified = rectify_image(raw, lens)
    for x, y, _ in rays:
        u, v = K[0, 0] * x + K[0, 2], K[1, 1] * y + K[1, 2]
        patch = rectified[round(v) - 2:round(v) + 3, round(u) - 2:round(u) + 3, 0]
        assert patch.min() > 100, (x, y)  # the dot is where the pinhole camera sees the ray
    pinhole = CameraModel(K, 640, 480)
    assert rectify_image(raw, pinhole) is raw
    with pytest.raises(ValueError, match="CameraInfo says 640 x 480"):
        rectify_image(raw[:100], lens)


def test_reading_bags_for_training_imports_no_ros():
    code = ("import sys, nclr_core.data.datasets; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'nclr_ros')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
