"""nclr-bag eval: offline and live (through the node) give the same per-frame estimates on a
tiny synthetic drive; outputs and metrics keys; clear one-line errors for bad bags."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from nclr_core.data.rosbag.messages import IMAGE_TYPE, POINTCLOUD2_TYPE, BagTopics, typestore
from nclr_core.online.pose import prior_at_distance
from nclr_ros.bag_cli import main
from nclr_ros.bag_convert import convert, write_bag
from nclr_ros.bag_eval import EvalOptions, evaluate
from nclr_ros.bag_live import node_prior
from nclr_ros.bag_messages import encode_image, encode_points

REPO = Path(__file__).resolve().parents[2]
FRAMES = 4
METRIC_KEYS = {"command", "mode", "bag", "checkpoint", "ground_truth", "prior", "counts",
               "latency_s", "per_frame_summary", "aggregate", "per_frame", "files",
               "node_parameters", "overlay_images", "wall_time_s"}


@pytest.fixture(scope="module")
def drive(tmp_path_factory, save_tiny_calibration_checkpoint) -> dict[str, Path]:
    """A 4-frame synthetic drive as a bag, and a tiny untrained checkpoint."""
    root = tmp_path_factory.mktemp("bag_eval")
    subprocess.run(
        [sys.executable, str(REPO / "training" / "make_synthetic.py"), "--out",
         str(root / "synthetic"), "--frames", str(FRAMES), "--seed", "11", "--beams", "16",
         "--width", "320", "--height", "96"], check=True, capture_output=True, text=True)
    convert("synthetic", root / "synthetic", root / "bag")
    checkpoint = save_tiny_calibration_checkpoint(root / "tiny.pt")
    return {"root": root, "bag": root / "bag", "checkpoint": checkpoint}


def _records(metrics: dict) -> list[dict]:
    return metrics["per_frame"]


def test_prior_is_exactly_as_far_as_asked_and_survives_the_parameter_round_trip():
    from nclr_core.geometry.metrics import pose_errors

    T_gt = np.eye(4)
    T_gt[:3, 3] = [0.1, -0.2, 0.3]
    prior = prior_at_distance(T_gt, 5.0, 0.2, np.random.default_rng(3))
    errors = pose_errors(prior, T_gt)
    assert errors["rre_geodesic_deg"] == pytest.approx(5.0, abs=1e-9)
    assert errors["rte_m"] == pytest.approx(0.2, abs=1e-12)
    assert np.allclose(node_prior(prior), prior, atol=1e-12)
    assert np.array_equal(node_prior(node_prior(prior)), node_prior(prior))


def test_offline_and_live_give_the_same_per_frame_estimates(drive):
    # one thread: multi-threaded CPU inference is not bit-reproducible even in one process
    common = {"checkpoint": drive["checkpoint"], "prior_deg": 5.0, "prior_m": 0.1,
              "overlays": 2, "timeout_s": 60.0, "threads": 1}
    offline = evaluate(drive["bag"], EvalOptions(out=drive["root"] / "offline", **common))
    live = evaluate(drive["bag"], EvalOptions(out=drive["root"] / "live", live=True, **common))

    assert offline["mode"] == "offline" and live["mode"] == "live"
    for metrics in (offline, live):
        assert METRIC_KEYS <= set(metrics)
        assert metrics["counts"]["processed"] == FRAMES
        assert metrics["counts"]["dropped_pairs"] == 0
        assert len(_records(metrics)) == FRAMES
        assert {"rre_euler_deg_mean", "rte_m_median", "success_rate", "recall_curves",
                "valid_rate"} <= set(metrics["per_frame_summary"])
        assert "available" in metrics["aggregate"]
        assert metrics["latency_s"]["mean"] > 0
    assert live["counts"]["pairs"] == FRAMES
    assert not any(k.startswith("bad_input.") for k in live["counts"])
    assert offline["prior"]["T_cam_lidar"] == live["prior"]["T_cam_lidar"]

    solved = 0
    for a, b in zip(_records(offline), _records(live), strict=True):
        assert a["image_stamp"] == pytest.approx(b["image_stamp"], abs=1e-9)
        for key in ("valid", "accepted", "num_inliers", "reason"):
            assert a[key] == b[key], key
        for key in ("t_x", "t_y", "t_z", "q_x", "q_y", "q_z", "q_w", "rte_m",
                    "rre_geodesic_deg", "aggregate_rte_m", "reprojection_error_px"):
            assert np.isclose(a[key], b[key], rtol=1e-9, atol=1e-12, equal_nan=True), key
        solved += bool(np.isfinite(a["rte_m"]))
    assert solved > 0, "no frame was solved: the comparison would be vacuous"

    for folder in ("offline", "live"):
        out = drive["root"] / folder
        for name in ("frames.csv", "metrics.json", "error_over_time.png", "recall_curves.png"):
            assert (out / name).stat().st_size > 0, name
        written = json.loads((out / "metrics.json").read_text())
        assert len(written["overlay_images"]) == 2
        assert all((out / p).is_file() for p in written["overlay_images"])
        header = (out / "frames.csv").read_text().splitlines()[0].split(",")
        assert {"frame", "rre_euler_deg", "rte_m", "aggregate_rte_m", "latency_s"} <= set(header)


def test_live_on_a_compressed_mcap_bag(drive, tmp_path):
    bag = tmp_path / "compressed"
    convert("synthetic", drive["root"] / "synthetic", bag, storage="mcap", compressed=True,
            max_frames=2)
    options = {"checkpoint": drive["checkpoint"], "overlays": 0, "timeout_s": 60.0,
               "threads": 1}
    live = evaluate(bag, EvalOptions(out=tmp_path / "live", live=True, **options))
    offline = evaluate(bag, EvalOptions(out=tmp_path / "offline", **options))
    assert live["counts"]["processed"] == offline["counts"]["processed"] == 2
    for a, b in zip(_records(offline), _records(live), strict=True):
        assert a["num_inliers"] == b["num_inliers"]
        assert np.isclose(a["t_x"], b["t_x"], rtol=1e-9, atol=1e-12, equal_nan=True)


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("nclr-bag: error: ")
    return err[0]


def _tiny_samples(count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
             "points": rng.normal(size=(20, 4)).astype(np.float32),
             "K": np.array([[4.0, 0.0, 3.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]]),
             "T_cam_lidar": np.eye(4), "stamp": 2.0 + 0.1 * i, "camera_frame": "cam",
             "lidar_frame": "lidar"} for i in range(count)]


def test_eval_cli_offline_with_other_topic_names_and_a_calibration_file(drive, tmp_path,
                                                                        capsys):
    from nclr_core.data.semantickitti import SemanticKittiDataset
    from nclr_core.io.calibration_files import CalibrationRecord, write_calibration_files

    samples = SemanticKittiDataset(drive["root"] / "synthetic", sequences=("00",))
    topics = BagTopics(image="/front/image", info="/front/info", points="/velodyne_points")
    bag = tmp_path / "renamed"
    write_bag(samples, bag, max_frames=2, topics=topics)
    args = ["eval", str(bag), "--checkpoint", str(drive["checkpoint"]), "--out",
            str(tmp_path / "out"), "--overlays", "0"]
    assert main(args) == 2
    line = _error_line(capsys)
    assert "no image topic '/camera/image_raw'" in line and "--image-topic" in line

    T_gt = np.asarray(samples[0]["T_cam_lidar"])
    paths = write_calibration_files(CalibrationRecord(T_cam_lidar=T_gt, camera_frame="cam",
                                                      lidar_frame="lidar"), tmp_path, "gt")
    assert main([*args, "--image-topic", "/front/image", "--info-topic", "/front/info",
                 "--points-topic", "/velodyne_points", "--ground-truth",
                 str(paths["yaml"])]) == 0
    out = capsys.readouterr().out
    assert "offline: 2 pairs calibrated" in out and "metrics.json" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["ground_truth"] == str(paths["yaml"])
    assert np.allclose(metrics["aggregate"]["T_cam_lidar_ground_truth"], T_gt, atol=1e-9)


def test_eval_cli_bad_bags_and_inputs(drive, tmp_path, capsys):
    base = ["--checkpoint", str(drive["checkpoint"]), "--out", str(tmp_path / "out")]
    bag = tmp_path / "small"
    write_bag(_tiny_samples(2), bag)
    (db,) = bag.glob("*.db3")
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    assert main(["eval", str(bag), *base]) == 2
    assert str(bag) in _error_line(capsys)

    noinfo = tmp_path / "noinfo"
    writer = Writer(noinfo, version=9)
    writer.open()
    image = writer.add_connection("/camera/image_raw", IMAGE_TYPE, typestore=typestore())
    cloud = writer.add_connection("/lidar/points", POINTCLOUD2_TYPE, typestore=typestore())
    sample = _tiny_samples(1)[0]
    writer.write(image, 10, encode_image(sample["image"], 10, "cam", compressed=False))
    writer.write(cloud, 10, encode_points(sample["points"], 10, "lidar"))
    writer.close()
    assert main(["eval", str(noinfo), *base]) == 2
    line = _error_line(capsys)
    assert "no CameraInfo topic '/camera/camera_info'" in line and "--info-topic" in line

    assert main(["eval", str(drive["bag"]), "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "checkpoint not found" in _error_line(capsys)
    assert main(["eval", str(drive["bag"]), *base, "--prior-deg", "5"]) == 2
    assert "--prior-m" in _error_line(capsys)
    assert main(["eval", str(drive["bag"]), *base, "--ground-truth",
                 str(tmp_path / "gt.yaml")]) == 2
    assert "ground-truth calibration file not found" in _error_line(capsys)
    assert not (tmp_path / "out" / "metrics.json").exists()
