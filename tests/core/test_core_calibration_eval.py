"""Calibration evaluation metrics layer: ground-truth predictions score perfectly, RANSAC
recovers the pose from exact matches, CSV / recall curves / PNG are written."""
import csv
import math

import numpy as np
import pytest
import torch

from nclr_core.data.pairs import overlap_ground_truth
from nclr_core.engine.calibration_eval import (
    RECALL_STEPS,
    correspondence_similarities,
    online_frame,
    plot_recall_curves,
    recall_curves,
    registration_outputs,
    similarity_summary,
    summarize,
    write_frames_csv,
)
from nclr_core.engine.evaluation import PretextAccumulator
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import make_transform
from nclr_core.inference import Calibrator, NetworkInput, SolverSettings
from nclr_core.models.calibration_net import CalibrationNet
from nclr_core.models.feature_grid import pixel_to_cell
from nclr_core.online.pipeline import Frame, OnlineCalibration, OnlineSettings

H, W, STRIDE = 64, 128, 4
K_NET = np.array([[60.0, 0.0, 63.5], [0.0, 60.0, 31.5], [0.0, 0.0, 1.0]])
# LiDAR x forward, camera z forward: a typical mount, 1.2 m off to the side after the motion
T_GT = make_transform(np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
                      np.array([1.2, -0.3, 0.4]))


def _frame(seed: int, n: int = 400) -> tuple[dict, dict]:
    """A batch of one frame and outputs equal to its ground truth (perfect predictions)."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack((rng.uniform(4, 30, n), rng.uniform(-15, 15, n), rng.uniform(-2, 1, n)))
    points = np.column_stack((xyz, rng.uniform(0, 1, n))).astype(np.float32)
    truth = overlap_ground_truth(points[:, :3].astype(np.float64), T_GT, K_NET, (H, W), STRIDE, 1)
    assert truth.point_overlap.sum() > 50
    inside = np.flatnonzero(truth.point_overlap)
    batch = {"points": torch.from_numpy(points), "K": torch.from_numpy(K_NET[None]).float(),
             "T_gt": torch.from_numpy(T_GT[None]).float(),
             "point_overlap": torch.from_numpy(truth.point_overlap),
             "point_pixel": torch.from_numpy(truth.point_pixel),
             "image_overlap": torch.from_numpy(truth.image_overlap[None])}
    outputs = {"T_pred": torch.from_numpy(T_GT[None]).float(),
               "pose_valid": torch.tensor([True]), "reproj_error": torch.tensor([0.0]),
               "matches": [{"point_index": torch.from_numpy(inside),
                            "pixels": torch.from_numpy(truth.point_pixel[inside]),
                            "weights": torch.ones(len(inside))}],
               "point_scores": torch.from_numpy(truth.point_overlap.astype(np.float32)),
               "image_scores": torch.from_numpy(truth.image_overlap[None].astype(np.float32))}
    return outputs, batch


def test_ground_truth_predictions_give_zero_errors_and_full_success():
    accumulator = PretextAccumulator()
    for seed in range(3):
        accumulator.add(*_frame(seed))
    summary = summarize(accumulator, "registration")
    assert summary["num_frames"] == 3
    for key in ("rre_euler_deg_mean", "rre_euler_deg_median", "rre_geodesic_deg_mean",
                "rte_m_mean", "rte_m_median", "match_err_px_mean"):
        assert summary[key] == pytest.approx(0.0, abs=1e-4), key
    for key in ("success_rate", "match_acc_5px", "point_overlap_iou", "image_overlap_iou"):
        assert summary[key] == 1.0, key
    curves = summary["recall_curves"]
    assert len(curves["recall_rte"]) == len(curves["rre_thresholds_deg"]) == RECALL_STEPS
    assert curves["recall_rte"][0] == 1.0  # every error is 0 <= the first threshold 0


def test_ransac_on_exact_matches_recovers_the_ground_truth_pose():
    outputs, batch = _frame(7)
    outputs["T_pred"] = torch.eye(4)[None]  # a wrong EPnP pose, to be replaced
    robust, extras = registration_outputs(outputs, batch, SolverSettings())
    accumulator = PretextAccumulator()
    accumulator.add(robust, batch)
    record = accumulator.records[0]
    assert record["pose_valid"] and record["success"]
    assert record["rte_m"] < 1e-5 and record["rre_geodesic_deg"] < 1e-4
    assert extras[0]["num_inliers"] == outputs["matches"][0]["point_index"].numel()
    assert extras[0]["epnp_rte_m"] == pytest.approx(np.linalg.norm(T_GT[:3, 3]), rel=1e-6)


def test_too_few_inliers_is_a_failed_frame():
    outputs, batch = _frame(8)
    pixels = outputs["matches"][0]["pixels"]
    generator = torch.Generator().manual_seed(0)
    outputs["matches"][0]["pixels"] = torch.rand(pixels.shape, generator=generator) * 100  # noise
    robust, _ = registration_outputs(outputs, batch, SolverSettings(reprojection_threshold_px=1))
    assert not bool(robust["pose_valid"][0])
    assert torch.equal(robust["T_pred"][0], torch.eye(4, dtype=torch.float64))


def test_recall_curve_counts_nan_as_not_recalled():
    records = [{"rte_m": 0.1, "rre_euler_deg": 1.0}, {"rte_m": 3.0, "rre_euler_deg": 30.0},
               {"rte_m": math.nan, "rre_euler_deg": math.nan}]
    curves = recall_curves(records, "registration")
    rte = dict(zip(curves["rte_thresholds_m"], curves["recall_rte"], strict=True))
    assert rte[0.0] == 0.0 and rte[1.0] == pytest.approx(1 / 3)
    assert rte[10.0] == pytest.approx(2 / 3)
    assert curves["recall_rre"][-1] == pytest.approx(1 / 3)  # 30° is beyond the 20° range
    with pytest.raises(ValueError, match="regime"):
        recall_curves(records, "bogus")


def test_csv_and_png_are_written(tmp_path):
    rows = [{"method": "nclr", "regime": "online", "rte_m": 0.1},
            {"method": "baseline", "regime": "online", "rte_m": 0.2, "accepted": False}]
    write_frames_csv(tmp_path / "frames.csv", rows)
    with open(tmp_path / "frames.csv", newline="") as handle:
        read = list(csv.DictReader(handle))
    assert read[0]["accepted"] == "" and read[1]["accepted"] == "False"
    curve = recall_curves([{"rte_m": 0.1, "rre_euler_deg": 1.0}], "online")
    plot_recall_curves(tmp_path / "recall.png", {"online": {"nclr": curve, "baseline": curve}})
    assert (tmp_path / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        write_frames_csv(tmp_path / "empty.csv", [])


# -- online regime through the real Calibrator, with an oracle network -------------------
NET_H, NET_W, IN_H, IN_W = 64, 128, 200, 600
POINT_RANGE = (-40.0, -40.0, -3.0, 40.0, 40.0, 3.0)
TINY_MODEL = {"fpn_channels": 16, "point_base_channels": 8, "voxel_size": 0.5,
              "point_range": POINT_RANGE, "channels": 16, "fusion_d_model": 32,
              "fusion_heads": 2, "fusion_layers": 1, "fusion_keypoints": 32,
              "max_match_points": 64, "min_match_points": 8, "min_match_cells": 16}
K_IN = np.array([[300.0, 0.0, 299.5], [0.0, 300.0, 99.5], [0.0, 0.0, 1.0]])


class OracleNet(CalibrationNet):
    """Tiny untrained network whose overlap scores and match pixels are the ground truth
    under T_GT, computed from the network-resolution K the Calibrator hands it."""

    def forward(self, batch, pose_loss_enabled=False):
        out = super().forward(batch, pose_loss_enabled)
        xyz = batch["points"][:, :3].double().numpy()
        K_net = batch["K"][0].double().numpy()
        truth = overlap_ground_truth(xyz, T_GT, K_net, (NET_H, NET_W), self.stride, 1)
        out["point_scores"] = torch.from_numpy(truth.point_overlap.astype(np.float32))
        out["image_scores"] = torch.from_numpy(truth.image_overlap[None].astype(np.float32))
        frame = out["matches"][0]
        index = frame["point_index"].numpy()
        frame["pixels"] = torch.from_numpy(truth.point_pixel[index])
        frame["weights"] = torch.from_numpy(truth.point_overlap[index].astype(np.float32))
        return out


def _online(calibrator: Calibrator, sample: dict, T_init: np.ndarray):
    """One frame through the online pipeline, expressed for the accumulator."""
    pipeline = OnlineCalibration(calibrator, OnlineSettings(min_frames=1), T_init)
    image = sample["image"]
    camera = CameraModel(sample["K"], image.shape[1], image.shape[0])
    outcome = pipeline.process(Frame(image, sample["points"], camera))
    record = outcome.record
    T_out = record.T_cam_lidar if record.accepted else T_init
    features = calibrator.features(image, sample["points"], camera)
    outputs, batch = online_frame(calibrator, features, outcome.network, sample, T_out,
                                  record.accepted, 1)
    return outputs, batch, record


def test_online_frame_with_oracle_matches_is_exact_and_accepted():
    torch.manual_seed(0)
    network = NetworkInput(NET_H, NET_W, 4000, POINT_RANGE)
    calibrator = Calibrator(OracleNet(**TINY_MODEL).eval(), network,
                            SolverSettings(reprojection_threshold_px=1.0))
    rng = np.random.default_rng(2)
    xyz = np.column_stack((rng.uniform(3, 30, 3000), rng.uniform(-20, 20, 3000),
                           rng.uniform(-2.5, 2.5, 3000)))
    sample = {"image": rng.integers(0, 256, (IN_H, IN_W, 3), dtype=np.uint8),
              "points": np.column_stack((xyz, rng.uniform(0, 1, 3000))).astype(np.float32),
              "K": K_IN, "T_cam_lidar": T_GT}
    T_init = make_transform(T_GT[:3, :3], T_GT[:3, 3] + [0.1, -0.05, 0.0])
    outputs, batch, record = _online(calibrator, sample, T_init)
    assert record.accepted and record.reason == ""
    accumulator = PretextAccumulator()
    accumulator.add(outputs, batch)
    accumulator.add_dense(outputs["dense_errors"])
    accumulator.records[-1].update(accepted=True, prior_rre_euler_deg=0.0, prior_rte_m=0.1,
                                   estimate_rre_euler_deg=0.0, estimate_rte_m=0.0)
    summary = summarize(accumulator, "online")
    # every ground-truth overlap point of the used points was matched for the dense metrics
    assert summary["dense_match_points"] == int(batch["point_overlap"].sum()) > 100
    assert summary["rte_m_mean"] < 1e-3 and summary["rre_geodesic_deg_mean"] < 1e-2
    assert summary["success_rate"] == 1.0 and summary["accepted_rate"] == 1.0
    assert summary["match_err_px_mean"] < 1e-3 and summary["match_acc_5px"] == 1.0
    assert summary["point_overlap_iou"] == 1.0 and summary["image_overlap_iou"] == 1.0

    # a prior beyond the Calibrator's bounds: the estimate is rejected, the prior stays
    far = make_transform(T_GT[:3, :3], T_GT[:3, 3] + [2.0, 0.0, 0.0])
    outputs, _, record = _online(calibrator, sample, far)
    assert not record.accepted and "prior" in record.reason
    np.testing.assert_array_equal(outputs["T_pred"][0].numpy(), far)
    assert np.linalg.norm(record.T_cam_lidar[:3, 3] - T_GT[:3, 3]) < 1e-3


def test_correspondence_similarities_pair_each_point_with_its_true_cell():
    _, batch = _frame(4)
    h, w = batch["image_overlap"].shape[1:]
    generator = torch.Generator().manual_seed(0)
    image_feats = torch.randn(1, 8, h, w, generator=generator)
    # each overlap point carries (3x) the feature of the cell holding its true projection
    cells = torch.round(pixel_to_cell(batch["point_pixel"].double(), STRIDE)).long()
    cells[:, 0].clamp_(max=w - 1)
    cells[:, 1].clamp_(max=h - 1)
    point_feats = torch.randn(len(batch["points"]), 8, generator=generator)
    inside = batch["point_overlap"]
    point_feats[inside] = 3 * image_feats[0, :, cells[inside, 1], cells[inside, 0]].T
    W = torch.diag(torch.linspace(0.5, 2.0, 8))
    outputs = {"point_feats": point_feats, "image_feats": image_feats}
    batch["offset"] = torch.tensor([len(batch["points"])])
    with_w, without_w = correspondence_similarities(outputs, batch, W, STRIDE)
    assert len(with_w) == len(without_w) == int(inside.sum())
    np.testing.assert_allclose(without_w, 1.0, atol=1e-6)  # identical directions
    f = torch.nn.functional.normalize(point_feats[inside].double(), dim=1)
    np.testing.assert_allclose(with_w, ((f @ W.double()) * f).sum(1).numpy(), atol=1e-6)
    summary = similarity_summary([with_w], [without_w])
    assert summary["num_pairs"] == len(with_w)
    assert summary["without_W_mean"] == pytest.approx(1.0) and summary["without_W_std"] < 1e-6


def test_roc_auc_on_hand_cases():
    from nclr_core.engine.evaluation import roc_auc

    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    # one positive tied with one negative, one clearly above: (1 + 0.5 + 1 + 1) / 4
    assert roc_auc(np.array([0.5, 0.5, 0.9, 0.1]), np.array([0, 1, 1, 0])) == 0.875
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
