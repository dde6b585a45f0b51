"""The calibration node in its own process, driven over real DDS on loopback.

A tiny untrained checkpoint is enough: its estimates are arbitrary, but every message must
flow. The node runs as `python -m nclr_ros.calibration_node` in a random ROS domain
(100..200); a driver process (this file run as a script) publishes synthetic images,
camera_info and 120k-point clouds with sensor-data QoS, then bad input, then more good
pairs, a burst, and calls the save service; it prints a JSON report that the test checks
together with the node's log. Finally the node is stopped with SIGINT and must save again.

    python tests/ros/test_ros_calibration_node.py drive OUTPUT_DIR TIMEOUT_S
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "config" / "fastdds_large_data.xml"
NODE = "nclr_calibration"
IMAGE_H, IMAGE_W = 240, 320
CLOUD_POINTS = 120_000
CAMERA_FRAME, LIDAR_FRAME = "camera_optical", "lidar_top"
K = [250.0, 0.0, 159.5, 0.0, 250.0, 119.5, 0.0, 0.0, 1.0]
BAD_REASONS = ("empty_cloud", "non_finite_points", "cloud_without_xyz",
               "unknown_image_encoding", "image_size_mismatch", "stamps_never_pair")
DRIVER_TIMEOUT_S = 90.0


# ---------------------------------------------------------------- driver (separate process)
def _drive(output_dir: str, timeout_s: float) -> dict:  # noqa: C901 - one scripted session
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header
    from std_srvs.srv import Trigger

    from nclr_ros.image_msgs import array_to_image
    from nclr_ros.pointcloud2 import array_to_pointcloud2, xyz_fields_to_pointcloud2

    rclpy.init()
    node = rclpy.create_node("nclr_calibration_driver")
    report: dict = {"errors": []}
    deadline = time.monotonic() + timeout_s
    pub_image = node.create_publisher(Image, "image", qos_profile_sensor_data)
    pub_info = node.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
    pub_cloud = node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got: dict[str, list] = {"extrinsics": [], "mask": [], "points": [], "overlay": [],
                            "covariance": []}
    diagnostics: list[dict] = []
    node.create_subscription(TransformStamped, f"{NODE}/extrinsics",
                             got["extrinsics"].append, latched)
    node.create_subscription(PoseWithCovarianceStamped, f"{NODE}/extrinsics_with_covariance",
                             got["covariance"].append, latched)
    node.create_subscription(Image, f"{NODE}/overlap_mask", got["mask"].append, 10)
    node.create_subscription(PointCloud2, f"{NODE}/points_overlap", got["points"].append, 10)
    node.create_subscription(Image, f"{NODE}/overlay", got["overlay"].append, 10)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                diagnostics.append({kv.key: kv.value for kv in status.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    save = node.create_client(Trigger, f"{NODE}/save_calibration")

    def spin_until(condition, what: str, limit: float = 15.0) -> bool:
        end = min(deadline, time.monotonic() + limit)
        while time.monotonic() < end:
            if condition():
                return True
            rclpy.spin_once(node, timeout_sec=0.05)
        report["errors"].append(f"timed out waiting for {what}")
        return False

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)

    def diag(key: str) -> int:
        return int(diagnostics[-1].get(key, 0)) if diagnostics else 0

    def header(stamp: float, frame: str) -> Header:
        h = Header(frame_id=frame)
        h.stamp.sec, h.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
        return h

    def camera_info(width: int = IMAGE_W, height: int = IMAGE_H) -> CameraInfo:
        msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        msg.header.frame_id = CAMERA_FRAME
        msg.k, msg.d = K, [0.0] * 5
        return msg

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
    xyz = np.column_stack([rng.uniform(2, 35, CLOUD_POINTS), rng.uniform(-20, 20, CLOUD_POINTS),
                           rng.uniform(-2, 2, CLOUD_POINTS)]).astype(np.float32)
    intensity = rng.uniform(0, 1, CLOUD_POINTS).astype(np.float32)

    def publish_pair(stamp: float, cloud_stamp: float | None = None) -> None:
        pub_image.publish(array_to_image(pixels, "rgb8", header(stamp, CAMERA_FRAME)))
        cloud_header = header(stamp if cloud_stamp is None else cloud_stamp, LIDAR_FRAME)
        pub_cloud.publish(xyz_fields_to_pointcloud2(xyz, cloud_header, intensity=intensity))

    # discovery: the node's three subscriptions and our service client
    spin_until(lambda: min(p.get_subscription_count() for p in
                           (pub_image, pub_info, pub_cloud)) > 0, "the node's subscriptions",
               timeout_s / 2)
    save.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic()))
    time.sleep(0.5)

    # 1. good pairs until an estimate comes out
    pub_info.publish(camera_info())
    spin_for(0.3)
    stamp = 100.0
    for _ in range(4):
        publish_pair(stamp)
        if spin_until(lambda: got["extrinsics"] and got["mask"], "extrinsics and mask", 6.0):
            break
        report["errors"].pop()
        stamp += 1.0
    else:
        report["errors"].append("no extrinsics after 4 good pairs")
    report["first_stamp"] = stamp
    if got["mask"]:
        mask = got["mask"][-1]
        report["mask"] = {"width": mask.width, "height": mask.height,
                          "encoding": mask.encoding, "frame_id": mask.header.frame_id,
                          "stamp": mask.header.stamp.sec + mask.header.stamp.nanosec * 1e-9,
                          "values": sorted(set(bytes(mask.data)))}
    if got["extrinsics"]:
        tf = got["extrinsics"][-1]
        report["extrinsics_frames"] = [tf.header.frame_id, tf.child_frame_id]

    # 2. bad input, one reason at a time; each must show up in the diagnostics
    stamp += 10.0
    empty = xyz_fields_to_pointcloud2(np.zeros((0, 3), np.float32), header(stamp, LIDAR_FRAME),
                                      intensity=np.zeros(0, np.float32))
    nan = xyz_fields_to_pointcloud2(np.full((50, 3), np.nan, np.float32),
                                    header(stamp, LIDAR_FRAME))
    no_xyz = array_to_pointcloud2(np.zeros(10, dtype=[("a", "<f4"), ("b", "<f4")]),
                                  header(stamp, LIDAR_FRAME))
    yuv = Image(header=header(stamp, CAMERA_FRAME), height=IMAGE_H, width=IMAGE_W,
                encoding="yuv422", step=IMAGE_W * 2)
    yuv.data = bytes(IMAGE_H * IMAGE_W * 2)
    steps = {
        "empty_cloud": lambda: pub_cloud.publish(empty),
        "non_finite_points": lambda: pub_cloud.publish(nan),
        "cloud_without_xyz": lambda: pub_cloud.publish(no_xyz),
        "unknown_image_encoding": lambda: pub_image.publish(yuv),
        "image_size_mismatch": lambda: (
            pub_info.publish(camera_info(IMAGE_W * 2, IMAGE_H * 2)), time.sleep(0.3),
            pub_image.publish(array_to_image(pixels, "rgb8", header(stamp, CAMERA_FRAME))),
            time.sleep(0.3), pub_info.publish(camera_info())),
        "stamps_never_pair": lambda: (
            pub_info.publish(camera_info()), time.sleep(0.3),
            publish_pair(stamp + 20.0, cloud_stamp=stamp + 23.0)),
    }
    report["bad_seen"] = {}
    for reason, send in steps.items():
        for _ in range(3):  # best effort: resend if the message was lost
            send()
            if spin_until(lambda r=reason: diag(f"bad_input.{r}") > 0, reason, 3.0):
                break
            report["errors"].pop()
        report["bad_seen"][reason] = diag(f"bad_input.{reason}")

    # 3. later good pairs are processed; a burst is reduced to its newest pair
    processed_before = diag("pairs_processed")
    stamp += 40.0
    pub_info.publish(camera_info())
    spin_for(0.3)
    publish_pair(stamp)
    spin_until(lambda: diag("pairs_processed") > processed_before, "a good pair after bad input")
    report["processed_after_bad"] = diag("pairs_processed") - processed_before
    for _ in range(6):
        stamp += 1.0
        publish_pair(stamp)
        time.sleep(0.02)
    newest = stamp

    def settled() -> bool:
        return bool(got["mask"]) and abs(report_stamp(got["mask"][-1]) - newest) < 1e-6 and \
            diag("pairs_pending") == 0 and diag("pairs_in_progress") == 0

    def report_stamp(msg) -> float:
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    if not spin_until(settled, "the newest pair of the burst"):
        report["last_mask_stamp"] = report_stamp(got["mask"][-1]) if got["mask"] else None
    spin_for(0.5)  # a fresh diagnostic
    report["newest_processed"] = settled()
    report["diagnostics"] = diagnostics[-1] if diagnostics else {}
    report["overlay"] = [(m.width, m.height, m.encoding) for m in got["overlay"][:1]]
    if got["points"]:
        cloud = got["points"][-1]
        report["points_overlap"] = {"fields": [f.name for f in cloud.fields],
                                    "count": cloud.width * cloud.height,
                                    "frame_id": cloud.header.frame_id}

    # 4. save service
    future = save.call_async(Trigger.Request())
    spin_until(future.done, "the save service")
    if future.done():
        response = future.result()
        report["save"] = {"success": response.success, "message": response.message}
    if got["extrinsics"]:
        tf = got["extrinsics"][-1].transform
        report["last_extrinsics"] = [tf.translation.x, tf.translation.y, tf.translation.z,
                                     tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w]
    spin_until(lambda: got["covariance"], "the extrinsics with covariance")
    if got["covariance"]:
        msg = got["covariance"][-1]
        p, o = msg.pose.pose.position, msg.pose.pose.orientation
        report["last_pose_with_covariance"] = {
            "frame_id": msg.header.frame_id, "pose": [p.x, p.y, p.z, o.x, o.y, o.z, o.w],
            "covariance": [float(v) for v in msg.pose.covariance]}
    node.destroy_node()
    rclpy.shutdown()
    return report


# ---------------------------------------------------------------- test
def test_parameter_defaults_match_config_yaml():
    from nclr_ros.calibration_parameters import PARAMETERS

    config = yaml.safe_load((REPO / "config" / "calibrate.yaml").read_text())
    params = config[NODE]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, (default, description) in PARAMETERS.items():
        assert params[name] == default and type(params[name]) is type(default), name
        assert description


def test_dds_profile_applied_unless_set():
    from nclr_ros.dds_profile import apply_default_profile

    env: dict[str, str] = {}
    assert apply_default_profile(env) == env["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).name == PROFILE.name
    user = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}
    assert apply_default_profile(user) is None
    assert user == {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}


@pytest.mark.slow
def test_node_end_to_end(tmp_path, save_tiny_calibration_checkpoint):
    pytest.importorskip("rmw_fastrtps_cpp", reason="rmw_fastrtps_cpp is not installed")
    from nclr_core.io.calibration_files import load_calibration_json, load_calibration_yaml

    checkpoint = save_tiny_calibration_checkpoint(tmp_path / "tiny.pt")
    out_dir = tmp_path / "calibration"
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(100, 200)),
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE), PYTHONUNBUFFERED="1")
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    params = {"model_path": str(checkpoint), "output_directory": str(out_dir),
              "min_frames": "1", "min_inliers": "5", "max_translation_m": "1000000.0",
              "no_pair_warning_s": "0.0", "warn_throttle_s": "0.0",
              "diagnostics_period_s": "0.1"}
    args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "nclr_ros.calibration_node", "--ros-args", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            driver = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "drive", str(out_dir),
                 str(DRIVER_TIMEOUT_S)],
                env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S + 30)
            assert driver.returncode == 0, driver.stderr[-3000:]
            report = json.loads(driver.stdout.splitlines()[-1])
            # the service wrote files; they must come back on shutdown too
            saved_T = load_calibration_yaml(out_dir / "nclr_calibration.yaml").T_cam_lidar
            for path in out_dir.iterdir():
                path.unlink()
            node.send_signal(signal.SIGINT)
            node.wait(timeout=30)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
    log_text = log_path.read_text()
    assert not report["errors"], (report, log_text[-3000:])

    assert report["mask"] == {"width": IMAGE_W, "height": IMAGE_H, "encoding": "mono8",
                              "frame_id": CAMERA_FRAME, "stamp": report["first_stamp"],
                              "values": report["mask"]["values"]}
    assert set(report["mask"]["values"]) <= {0, 255}
    assert report["points_overlap"] == {"fields": ["x", "y", "z", "overlap"],
                                        "count": CLOUD_POINTS, "frame_id": LIDAR_FRAME}
    assert report["extrinsics_frames"] == [CAMERA_FRAME, LIDAR_FRAME]
    assert report["overlay"] == [[IMAGE_W, IMAGE_H, "rgb8"]]

    for reason in BAD_REASONS:
        assert report["bad_seen"][reason] >= 1, reason
        assert f"[{reason}]" in log_text, reason
    assert "closest stamps differ by -3.000 s" in log_text
    assert report["processed_after_bad"] >= 1
    assert report["newest_processed"]
    d = {k: int(v) for k, v in report["diagnostics"].items() if k.startswith("pairs_")}
    assert d["pairs_pending"] == d["pairs_in_progress"] == 0
    assert d["pairs_received"] == d["pairs_processed"] + d["pairs_dropped"], d
    assert d["pairs_processed"] >= 3

    assert report["save"]["success"], report["save"]
    x, y, z, qx, qy, qz, qw = report["last_extrinsics"]
    from nclr_core.geometry.se3 import make_transform, matrix_from_quaternion_xyzw

    published = make_transform(matrix_from_quaternion_xyzw([qx, qy, qz, qw]), [x, y, z])
    np.testing.assert_allclose(saved_T, published, atol=1e-9)
    with_covariance = report["last_pose_with_covariance"]
    assert with_covariance["frame_id"] == CAMERA_FRAME
    assert with_covariance["pose"] == report["last_extrinsics"]
    covariance = np.asarray(with_covariance["covariance"]).reshape(6, 6)
    assert np.all(np.diag(covariance) >= 0) and np.allclose(covariance, covariance.T)
    assert node.returncode == 0, log_text[-3000:]
    record = load_calibration_yaml(out_dir / "nclr_calibration.yaml")
    np.testing.assert_allclose(record.T_cam_lidar, saved_T, atol=1e-12)
    assert (record.camera_frame, record.lidar_frame) == (CAMERA_FRAME, LIDAR_FRAME)
    assert record.camera is not None and record.camera.width == IMAGE_W
    np.testing.assert_allclose(load_calibration_json(out_dir / "nclr_calibration.json")
                               .T_cam_lidar, saved_T, atol=1e-9)


def test_compressed_images_with_intrinsics_from_parameters(tmp_path,
                                                          save_tiny_calibration_checkpoint):
    """In-process: CompressedImage input, reliable QoS, intrinsics from parameters, optional
    /tf_static, and no save before an estimate exists."""
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, PointCloud2
    from std_msgs.msg import Header

    from nclr_ros.calibration_node import LATCHED, CalibrationNode
    from nclr_ros.image_msgs import rgb_to_compressed_image
    from nclr_ros.pointcloud2 import xyz_fields_to_pointcloud2

    checkpoint = save_tiny_calibration_checkpoint(tmp_path / "tiny.pt")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(100, 200))
    overrides = {
        "model_path": str(checkpoint), "use_compressed": True, "reliability": "reliable",
        "intrinsics_from_parameters": True, "camera_k": K, "camera_width": IMAGE_W,
        "camera_height": IMAGE_H, "camera_distortion_model": "plumb_bob",
        "camera_d": [0.01, 0.0, 0.0, 0.0, 0.0], "min_frames": 1, "min_inliers": 5,
        "max_translation_m": 1e6, "publish_tf_static": True, "tf_child_frame": "lidar_nclr",
        "output_directory": str(tmp_path / "out"), "save_on_shutdown": False,
    }
    node = CalibrationNode(context=context, parameter_overrides=[
        Parameter(k, value=v) for k, v in overrides.items()])
    driver = rclpy.create_node("driver", context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        with pytest.raises(ValueError, match="no calibration estimate yet"):
            node.save()
        executor.add_node(node)
        executor.add_node(driver)
        pub_image = driver.create_publisher(CompressedImage, "image/compressed", 5)
        pub_cloud = driver.create_publisher(PointCloud2, "points", 5)
        got: list[TransformStamped] = []
        driver.create_subscription(TransformStamped, f"{NODE}/extrinsics", got.append, LATCHED)
        tf_static: list = []
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            assert node.pub_tf_static is None  # logged as an error, the node runs on
        else:
            driver.create_subscription(TFMessage, "/tf_static", tf_static.append, LATCHED)
        rng = np.random.default_rng(1)
        rgb = rng.integers(0, 256, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
        xyz = np.column_stack([rng.uniform(2, 30, 3000), rng.uniform(-15, 15, 3000),
                               rng.uniform(-2, 2, 3000)]).astype(np.float32)
        deadline = time.monotonic() + 30.0
        stamp = 5
        while not got and time.monotonic() < deadline:
            image_header = Header(frame_id=CAMERA_FRAME)
            cloud_header = Header(frame_id=LIDAR_FRAME)
            image_header.stamp.sec = cloud_header.stamp.sec = stamp
            pub_image.publish(rgb_to_compressed_image(rgb, "jpeg", image_header))
            pub_cloud.publish(xyz_fields_to_pointcloud2(xyz, cloud_header))
            stamp += 1
            end = time.monotonic() + 1.0
            while not got and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
        assert got, node.diagnostics_values()
        assert (got[-1].header.frame_id, got[-1].child_frame_id) == (CAMERA_FRAME, LIDAR_FRAME)
        values = node.diagnostics_values()
        assert int(values["images_received"]) >= 1 and "bad_input.bad_image" not in values
        if node.pub_tf_static is not None:
            end = time.monotonic() + 5.0
            while not tf_static and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
            assert tf_static[-1].transforms[0].child_frame_id == "lidar_nclr"
        paths = node.save()
        assert paths["yaml"].is_file()
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        driver.destroy_node()
        context.try_shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "drive":
        print(json.dumps(_drive(sys.argv[2], float(sys.argv[3]))), flush=True)
    else:
        raise SystemExit(f"unknown role {sys.argv[1]!r} (drive)")
