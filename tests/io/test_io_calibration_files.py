"""Calibration files: written forms load back to the same transform and agree with each other;
nothing is half-written."""
import argparse
import json
import os
import shlex
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import (
    invert,
    make_transform,
    matrix_from_quaternion_xyzw,
    matrix_from_rpy,
)
from nclr_core.io.calibration_files import (
    CalibrationRecord,
    load_calibration_json,
    load_calibration_yaml,
    static_transform_command,
    urdf_joint_snippet,
    write_calibration_files,
)

# KITTI-like: the camera optical frame (z forward) looks along the LiDAR's x axis.
R_OPTICAL_FROM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _make_record(with_camera=True):
    nominal = make_transform(R_OPTICAL_FROM_LIDAR, [0.06, -0.08, -0.27])
    delta = make_transform(matrix_from_rpy([0.02, -0.03, 0.05]), [0.01, 0.02, -0.03])
    camera = CameraModel(K=np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1]]),
                         width=1242, height=375, distortion="plumb_bob",
                         D=np.array([-0.1, 0.02, 0.001, -0.002, 0.0]))
    return CalibrationRecord(
        T_cam_lidar=delta @ nominal, camera_frame="camera_optical", lidar_frame="velodyne",
        stamp=1700000000.25, frame_count=42,
        quality={"overlap_ratio": np.float32(0.5), "inliers": np.int64(812),
                 "reprojection_error_px": 1.7, "spread_rot_deg": float("nan")},
        camera=camera if with_camera else None)


def _parse_urdf(text):
    joint = ET.fromstring(text)
    origin = joint.find("origin")
    xyz = [float(v) for v in origin.get("xyz").split()]
    rpy = [float(v) for v in origin.get("rpy").split()]
    T = make_transform(matrix_from_rpy(rpy), xyz)
    return T, joint.find("parent").get("link"), joint.find("child").get("link")


def _parse_static_command(command):
    words = shlex.split(command)
    assert words[:4] == ["ros2", "run", "tf2_ros", "static_transform_publisher"]
    parser = argparse.ArgumentParser()
    for name in ("x", "y", "z", "qx", "qy", "qz", "qw"):
        parser.add_argument(f"--{name}", type=float, required=True)
    parser.add_argument("--frame-id", required=True)
    parser.add_argument("--child-frame-id", required=True)
    args = parser.parse_args(words[4:])
    T = make_transform(matrix_from_quaternion_xyzw([args.qx, args.qy, args.qz, args.qw]),
                       [args.x, args.y, args.z])
    return T, args.frame_id, args.child_frame_id


def test_written_files_load_back_and_all_forms_agree(tmp_path):
    record = _make_record()
    paths = write_calibration_files(record, tmp_path / "out")
    assert sorted(paths) == ["json", "static_tf", "urdf", "yaml"]

    from_yaml = load_calibration_yaml(paths["yaml"])
    np.testing.assert_allclose(from_yaml.T_cam_lidar, record.T_cam_lidar, atol=1e-15)
    assert (from_yaml.camera_frame, from_yaml.lidar_frame) == ("camera_optical", "velodyne")
    assert (from_yaml.stamp, from_yaml.frame_count) == (1700000000.25, 42)
    assert from_yaml.quality["inliers"] == 812 and np.isnan(from_yaml.quality["spread_rot_deg"])
    np.testing.assert_array_equal(from_yaml.camera.K, record.camera.K)
    np.testing.assert_array_equal(from_yaml.camera.D, record.camera.D)
    assert from_yaml.camera.distortion == "plumb_bob"

    from_json = load_calibration_json(paths["json"])
    np.testing.assert_allclose(from_json.T_cam_lidar, record.T_cam_lidar, atol=1e-12)
    assert from_json.quality["spread_rot_deg"] is None  # JSON has no NaN

    # The raw YAML carries both directions, as inverse pairs.
    doc = yaml.safe_load(paths["yaml"].read_text())
    T_lidar_cam = np.array(doc["T_lidar_cam"]["matrix"])
    np.testing.assert_allclose(T_lidar_cam @ np.array(doc["T_cam_lidar"]["matrix"]), np.eye(4),
                               atol=1e-12)
    assert "p_cam = R p_lidar + t" in doc["convention"]

    # URDF and static-transform command: child (camera) pose in the parent (LiDAR) frame.
    T_urdf, parent, child = _parse_urdf(paths["urdf"].read_text())
    assert (parent, child) == ("velodyne", "camera_optical")
    np.testing.assert_allclose(T_urdf, T_lidar_cam, atol=1e-12)
    script = paths["static_tf"].read_text().splitlines()
    T_tf, frame_id, child_id = _parse_static_command(script[-1])
    assert (frame_id, child_id) == ("velodyne", "camera_optical")
    np.testing.assert_allclose(T_tf, T_lidar_cam, atol=1e-12)

    # The JSON's T_lidar_camera is the same pose.
    pose = json.loads(paths["json"].read_text())["T_lidar_camera"]
    np.testing.assert_allclose(
        make_transform(matrix_from_quaternion_xyzw(pose[3:]), pose[:3]), T_lidar_cam,
        atol=1e-12)


def test_camera_parent_gives_T_cam_lidar():
    record = _make_record()
    T_urdf, parent, child = _parse_urdf(
        urdf_joint_snippet(record.T_cam_lidar, "cam", "lidar", parent="camera"))
    assert (parent, child) == ("cam", "lidar")
    np.testing.assert_allclose(T_urdf, record.T_cam_lidar, atol=1e-12)
    T_tf, frame_id, child_id = _parse_static_command(
        static_transform_command(record.T_cam_lidar, "cam", "lidar", parent="camera"))
    assert (frame_id, child_id) == ("cam", "lidar")
    np.testing.assert_allclose(T_tf, record.T_cam_lidar, atol=1e-12)
    with pytest.raises(ValueError, match="parent must be"):
        urdf_joint_snippet(record.T_cam_lidar, "cam", "lidar", parent="base")


def test_failure_mid_write_leaves_old_files_intact(tmp_path, monkeypatch):
    first = _make_record()
    paths = write_calibration_files(first, tmp_path)
    before = {kind: path.read_bytes() for kind, path in paths.items()}

    moved = make_transform(np.eye(3), [1.0, 2.0, 3.0])
    second = _make_record()
    second.T_cam_lidar = moved

    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):  # the third file fails after two were written completely
        calls.append(fd)
        if len(calls) == 3:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_calibration_files(second, tmp_path)
    assert {kind: path.read_bytes() for kind, path in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    monkeypatch.undo()

    # A value that cannot be saved fails before anything is written.
    with pytest.raises(TypeError, match="quality.bad"):
        CalibrationRecord(T_cam_lidar=moved, camera_frame="c", lidar_frame="l",
                          quality={"bad": object()})
    write_calibration_files(second, tmp_path)
    np.testing.assert_allclose(load_calibration_yaml(paths["yaml"]).T_cam_lidar, moved)


def test_a_folder_in_the_way_of_one_file_leaves_the_whole_set_as_it_was(tmp_path):
    """Issue 16, failure 5: the static-transform script used to hold the new transform
    while the YAML and JSON kept the old one."""
    paths = write_calibration_files(_make_record(), tmp_path)
    paths["urdf"].unlink()
    paths["urdf"].mkdir()  # e.g. a volume mounted on the file name
    before = {kind: path.read_bytes() for kind, path in paths.items() if kind != "urdf"}
    moved = _make_record()
    moved.T_cam_lidar = make_transform(np.eye(3), [1.0, 2.0, 3.0])
    with pytest.raises(IsADirectoryError, match="_joint.urdf"):
        write_calibration_files(moved, tmp_path)
    assert {kind: path.read_bytes() for kind, path in paths.items() if kind != "urdf"} == before
    assert paths["urdf"].is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_loaders_reject_bad_files(tmp_path):
    paths = write_calibration_files(_make_record(with_camera=False), tmp_path)
    assert load_calibration_yaml(paths["yaml"]).camera is None

    doc = yaml.safe_load(paths["yaml"].read_text())
    doc["T_cam_lidar"]["quaternion_xyzw"] = [0.0, 0.0, 0.0, 1.0]  # hand-edited, now disagrees
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=r"edited\.yaml.*quaternion_xyzw' disagrees"):
        load_calibration_yaml(edited)

    doc = yaml.safe_load(paths["yaml"].read_text())
    doc["T_lidar_cam"] = {"matrix": np.eye(4).tolist()}
    edited.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="not the inverse"):
        load_calibration_yaml(edited)

    doc = yaml.safe_load(paths["yaml"].read_text())
    doc["T_cam_lidar"] = {"matrix": (2 * np.eye(4)).tolist()}
    del doc["T_lidar_cam"]
    edited.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="last row|rotation"):
        load_calibration_yaml(edited)

    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"T_lidar_camera": [0, 0, 0, 0, 0, 0, 2],
                                    "camera_frame": "c", "lidar_frame": "l"}))
    with pytest.raises(ValueError, match=r"bad\.json.*norm 2"):
        load_calibration_json(bad_json)
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calibration_json(bad_json)


def test_record_validation():
    with pytest.raises(ValueError, match="frames must differ"):
        CalibrationRecord(T_cam_lidar=np.eye(4), camera_frame="x", lidar_frame="x")
    reflection = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="not a proper rotation"):
        CalibrationRecord(T_cam_lidar=reflection, camera_frame="c", lidar_frame="l")
    assert np.allclose(invert(_make_record().T_lidar_cam), _make_record().T_cam_lidar)
