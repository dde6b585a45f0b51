"""README "Your own vehicle, end to end" on a small synthetic bag: a rough prior -> the refine
stage calibrates the bag -> pre-training on the same bag with that calibration -> the
exported checkpoint runs in the node's pipeline (`nclr-bag calibrate --checkpoint`) and is
evaluated on the bag (`evaluate_calibration.py --dataset rosbag`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nclr_core.data.rosbag.messages import BagTopics
from nclr_core.data.rosbag.reader import BagFrames
from nclr_core.geometry.metrics import pose_errors
from nclr_core.io.calibration_files import (
    CalibrationRecord,
    load_calibration_yaml,
    write_calibration_files,
)
from nclr_core.online.pose import prior_at_distance
from nclr_ros.bag_cli import main as nclr_bag
from nclr_ros.bag_convert import convert

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "training" / "configs" / "synthetic_cpu.yaml"
# The CPU config shrunk to a few seconds a step on one core.
TINY = ["data.val_max_frames=1", "data.image_height=96", "data.image_width=320",
        "data.max_points=3000", "model.fpn_channels=16", "model.point_base_channels=8",
        "model.voxel_size=0.5", "model.channels=16", "model.fusion_d_model=32",
        "model.fusion_heads=2", "model.fusion_keypoints=32", "model.info_nce_points=64",
        "model.info_nce_cells=64", "model.max_negatives=128", "model.max_match_points=64",
        "train.batch_size=2", "train.max_steps=2"]


def _run(args: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_rough_prior_to_calibration_to_pretraining_to_the_node(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    # a 10-frame drive (the refine stage's window), KITTI-sized, as a bag
    _run([REPO / "training" / "make_synthetic.py", "--out", tmp_path / "synthetic",
          "--frames", "10", "--seed", "13"], tmp_path, env)
    bag = convert("synthetic", tmp_path / "synthetic", tmp_path / "drive", storage="mcap").path
    truth = next(iter(BagFrames(bag, BagTopics(), slop=0.05)))["T_cam_lidar"]

    # 1. a rough prior, 2 deg / 10 cm off, in the node's file format
    rough = prior_at_distance(truth, 2.0, 0.1, np.random.default_rng(4))
    prior = write_calibration_files(CalibrationRecord(rough, "camera_2", "velodyne"),
                                    tmp_path / "prior", "rough")["yaml"]
    # 2. the refine stage calibrates the bag
    assert nclr_bag(["calibrate", str(bag), "--prior", str(prior), "--out",
                     str(tmp_path / "car"), "--stages", "refine"]) == 0
    calibration = tmp_path / "car" / "nclr_calibration.yaml"
    calibrated = load_calibration_yaml(calibration).T_cam_lidar
    errors, before = pose_errors(calibrated, truth), pose_errors(rough, truth)
    assert errors["rre_geodesic_deg"] < before["rre_geodesic_deg"] / 4
    assert errors["rte_m"] < before["rte_m"] / 2

    # 3. pre-training on the same bag with that calibration (not the bag's /tf_static)
    sets = ["data.dataset=rosbag", f"data.root={bag}", f"data.calibration={calibration}",
            f"output_root={tmp_path / 'runs'}", *TINY]
    _run([REPO / "training" / "pretrain.py", "--config", CONFIG,
          *[arg for item in sets for arg in ("--set", item)]], tmp_path, env)
    (run,) = (tmp_path / "runs" / "synthetic_cpu").iterdir()
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["data"]["calibration"] == str(calibration)
    assert "8 training frames" in (run / "train.log").read_text()  # 80 % of 10 frames

    # 4. the vehicle's checkpoint in the node's pipeline, from the rough prior: learned
    # stages (two steps of training cannot be trusted yet: the node's acceptance decides),
    # then refine
    model = tmp_path / "my_car.pt"
    _run([REPO / "training" / "export_model.py", "--checkpoint",
          run / "checkpoints" / "last.pt", "--out", model], tmp_path, env)
    assert nclr_bag(["calibrate", str(bag), "--prior", str(prior), "--out",
                     str(tmp_path / "car_again"), "--checkpoint", str(model),
                     "--stages", "global,guided,joint,refine"]) == 0
    again = load_calibration_yaml(tmp_path / "car_again" / "nclr_calibration.yaml")
    assert again.frame_count > 0
    assert pose_errors(again.T_cam_lidar, truth)["rre_geodesic_deg"] < before[
        "rre_geodesic_deg"] / 4

    # 5. the vehicle's checkpoint evaluated on its bag against the calibration of step 2
    out = tmp_path / "eval"
    evaluate = [REPO / "training" / "evaluate_calibration.py", "--checkpoint", model,
                "--dataset", "rosbag", "--data", bag, "--split", bag.name, "--calibration",
                calibration, "--regime", "registration", "--max-frames", "2", "--out", out]
    _run(evaluate, tmp_path, env)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["split"]) == ("rosbag", [bag.name])
    assert metrics["registration"]["num_frames"] == 2
    wrong = subprocess.run([sys.executable, *map(str, evaluate[:8]), "other", *map(
        str, evaluate[9:])], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 2 and "no bag(s) ['other']" in wrong.stderr
