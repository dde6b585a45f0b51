"""`nclr-bag eval --checkpoint none --stages refine` on a KITTI-sized synthetic drive: the
training-free stage through the bag tools, offline and live through the node, and the
node's drift test against a mounting moved by 1 deg and 3 cm."""
import subprocess
import sys
from pathlib import Path

import pytest

from nclr_ros.bag_convert import convert
from nclr_ros.bag_eval import EvalOptions, evaluate

REPO = Path(__file__).resolve().parents[2]
FRAMES = 10  # the refine stage's default window


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bag_refine")
    subprocess.run(
        [sys.executable, str(REPO / "training" / "make_synthetic.py"), "--out",
         str(root / "synthetic"), "--frames", str(FRAMES), "--seed", "13"],
        check=True, capture_output=True, text=True)
    convert("synthetic", root / "synthetic", root / "bag")
    return root / "bag"


@pytest.mark.slow
@pytest.mark.parametrize("live", [False, True])
def test_refine_alone_finds_a_moved_mounting_and_reports_the_drift(bag, tmp_path, live):
    if live:
        pytest.importorskip("rmw_fastrtps_cpp", reason="rmw_fastrtps_cpp is not installed")
    options = EvalOptions(checkpoint=Path("none"), out=tmp_path / "eval", live=live,
                          prior_deg=1.0, prior_m=0.03, seed=2, stages="refine", threads=1)
    metrics = evaluate(bag, options)
    aggregate = metrics["aggregate"]
    assert aggregate["available"] and aggregate["stage"] == "refine", metrics["per_frame"][-1]
    assert aggregate["rre_geodesic_deg"] < 0.5 and aggregate["rte_m"] < 0.03
    assert set(metrics["stages"]) == {"refine"}
    assert all(r["accepted"] for r in metrics["per_frame"])
    # the installed calibration (the prior) is 1 deg off: the estimate says so
    assert metrics["drift"]["drifted"], metrics["drift"]
    assert "rot" in metrics["drift"]["drift"]


def test_learned_stages_need_a_checkpoint(bag, tmp_path):
    options = EvalOptions(checkpoint=Path("none"), out=tmp_path / "eval", prior_deg=1.0,
                          prior_m=0.03, stages="global,refine")
    with pytest.raises(ValueError, match="need a network"):
        evaluate(bag, options)


@pytest.mark.slow
def test_calibrate_writes_the_refined_calibration_from_a_rough_prior(bag, tmp_path):
    import numpy as np

    from nclr_core.data.rosbag.messages import BagTopics
    from nclr_core.data.rosbag.reader import BagFrames
    from nclr_core.geometry.metrics import pose_errors
    from nclr_core.io.calibration_files import (
        CalibrationRecord,
        load_calibration_yaml,
        write_calibration_files,
    )
    from nclr_core.online.pose import prior_at_distance
    from nclr_ros.bag_cli import main

    T_true = next(iter(BagFrames(bag, BagTopics(), slop=0.05)))["T_cam_lidar"]
    rough = prior_at_distance(T_true, 2.0, 0.1, np.random.default_rng(4))
    prior = write_calibration_files(CalibrationRecord(rough, "camera", "lidar"),
                                    tmp_path / "prior", "rough")["yaml"]
    assert main(["calibrate", str(bag), "--prior", str(prior), "--out",
                 str(tmp_path / "car")]) == 0
    written = load_calibration_yaml(tmp_path / "car" / "nclr_calibration.yaml")
    errors, before = pose_errors(written.T_cam_lidar, T_true), pose_errors(rough, T_true)
    assert errors["rre_geodesic_deg"] < before["rre_geodesic_deg"] / 4
    assert errors["rte_m"] < before["rte_m"] / 2
    assert written.quality["estimate_stage"] == "refine" and written.quality["drifted_from_prior"]
    # a missing prior file: one line, status 2
    assert main(["calibrate", str(bag), "--prior", str(tmp_path / "nope.yaml"), "--out",
                 str(tmp_path / "x")]) == 2
