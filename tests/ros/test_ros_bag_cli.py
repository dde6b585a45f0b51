"""nclr-bag command line: success paths and one-line errors with exit status 2."""
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from nclr_core.data.rosbag.messages import IMAGE_TYPE, POINTCLOUD2_TYPE, BagTopics, typestore
from nclr_ros.bag_cli import main
from nclr_ros.bag_convert import write_bag
from nclr_ros.bag_messages import encode_image, encode_points


def _samples(count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
            "points": rng.normal(size=(20, 4)).astype(np.float32),
            "K": np.array([[4.0, 0.0, 3.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]]),
            "T_cam_lidar": np.eye(4),
            "stamp": 2.0 + 0.1 * i,
            "camera_frame": "cam",
            "lidar_frame": "lidar",
        }
        for i in range(count)
    ]


@pytest.fixture()
def bag(tmp_path: Path) -> Path:
    path = tmp_path / "good"
    write_bag(_samples(3), path)
    return path


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("nclr-bag: error: ")
    return err[0]


def test_check_reports_pairs_and_ground_truth(bag, capsys):
    assert main(["check", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "3 pairs from 3 images" in out
    assert "3 pairs have T_cam_lidar on /tf_static" in out
    assert "T_cam_lidar: t = [0.0, 0.0, 0.0] m" in out


def test_convert_command_on_real_kitti(real_data, tmp_path, capsys):
    out = tmp_path / "kitti"
    assert main(["convert", "--from", "kitti-object", str(real_data / "kitti_object"),
                 "--split", "testing", "--out", str(out), "--compressed", "--storage", "mcap",
                 "--max-frames", "1"]) == 0
    assert f"wrote 1 frames (0.000 .. 0.000 s, 1 /tf_static) to {out}" in capsys.readouterr().out
    assert main(["check", str(out), "--slop", "0"]) == 0
    assert "1 pairs from 1 images (/camera/image_raw/compressed)" in capsys.readouterr().out


def test_convert_missing_source(tmp_path, capsys):
    root = tmp_path / "missing"
    assert main(["convert", "--from", "synthetic", str(root), "--out",
                 str(tmp_path / "bag")]) == 2
    assert "SemanticKITTI root not found" in _error_line(capsys)
    assert main(["convert", "--from", "nuscenes", str(root), "--out", str(tmp_path / "bag")]) == 2
    assert "nuScenes root not found" in _error_line(capsys)
    assert not (tmp_path / "bag").exists()


def test_existing_output_is_refused(bag, tmp_path, capsys):
    assert main(["convert", "--from", "kitti-object", str(tmp_path), "--out", str(bag)]) == 2
    _error_line(capsys)


def test_missing_and_truncated_and_corrupt_bags(bag, tmp_path, capsys):
    assert main(["check", str(tmp_path / "nothing")]) == 2
    assert "bag not found" in _error_line(capsys)

    (db,) = bag.glob("*.db3")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    assert main(["check", str(bag)]) == 2
    assert str(bag) in _error_line(capsys)

    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag\n")
    assert main(["check", str(bag)]) == 2
    assert "not a readable rosbag2 bag" in _error_line(capsys)


def test_truncated_mcap_bag(tmp_path, capsys):
    path = tmp_path / "m"
    write_bag(_samples(2), path, storage="mcap")
    (mcap,) = path.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) - 40])
    assert main(["check", str(path)]) == 2
    assert str(path) in _error_line(capsys)


def test_bag_without_camera_info(tmp_path, capsys):
    path = tmp_path / "noinfo"
    store = typestore()
    writer = Writer(path, version=9)
    writer.open()
    image = writer.add_connection("/camera/image_raw", IMAGE_TYPE, typestore=store)
    cloud = writer.add_connection("/lidar/points", POINTCLOUD2_TYPE, typestore=store)
    sample = _samples(1)[0]
    writer.write(image, 10, encode_image(sample["image"], 10, "cam", compressed=False))
    writer.write(cloud, 10, encode_points(sample["points"], 10, "lidar"))
    writer.close()
    assert main(["check", str(path)]) == 2
    line = _error_line(capsys)
    assert "no CameraInfo topic '/camera/camera_info'" in line and "--info-topic" in line


def test_other_topic_names_are_selected_by_flags(tmp_path, capsys):
    path = tmp_path / "renamed"
    topics = BagTopics(image="/front/image", info="/front/info", points="/velodyne_points")
    write_bag(_samples(2), path, topics=topics)
    assert main(["check", str(path)]) == 2
    line = _error_line(capsys)
    assert "no image topic '/camera/image_raw'" in line and "/front/image" in line
    assert main(["check", str(path), "--image-topic", "/front/image", "--info-topic",
                 "/front/info", "--points-topic", "/velodyne_points"]) == 0
    assert "2 pairs from 2 images (/front/image)" in capsys.readouterr().out


def test_play_rejects_unknown_topics_and_bad_rate(bag, capsys):
    assert main(["play", str(bag), "--topics", "/nope"]) == 2
    assert "no topic '/nope'" in _error_line(capsys)
    assert main(["play", str(bag), "--rate", "0"]) == 2
    assert "rate must be > 0" in _error_line(capsys)
    assert main(["play", str(tmp_bag := bag.parent / "absent")]) == 2
    assert str(tmp_bag) in _error_line(capsys)
