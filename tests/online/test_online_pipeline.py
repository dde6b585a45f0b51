"""The per-frame policy of `OnlineCalibration` (acceptance, weighting, aggregation, drift).

The Calibrator's per-frame results are scripted here: the policy is what is under test.
"""
import dataclasses
import math

import numpy as np
import pytest
from scripted_calibrator import FRAME, T_TRUE, ScriptedCalibrator
from scripted_calibrator import result as _result

from nclr_core.online.pipeline import OnlineCalibration, OnlineSettings
from nclr_core.online.pose import prior_at_distance
from nclr_core.online.records import FrameRecord


def _shifted(dx):
    T = T_TRUE.copy()
    T[0, 3] += dx
    return T


def _run(results, settings=None, prior=None):
    pipeline = OnlineCalibration(ScriptedCalibrator(results), settings or OnlineSettings(
        min_frames=2, outlier_translation_m=1.0, outlier_rotation_deg=10.0), prior)
    records = [pipeline.process(FRAME).record for _ in results]
    return pipeline, records


def test_invalid_per_frame_poses_never_enter_the_window():
    pipeline, records = _run([_result(_shifted(0.3), valid=False, reason="5 RANSAC inliers"),
                              _result(T_TRUE), _result(T_TRUE)])
    assert records[0].solved and not records[0].valid and not records[0].accepted
    assert records[0].reason == "5 RANSAC inliers"
    assert records[0].aggregate is None and records[1].aggregate is None
    assert np.allclose(records[2].aggregate, T_TRUE)
    assert np.allclose(pipeline.estimate().T_cam_lidar, T_TRUE)


def test_estimates_are_weighted_by_their_inliers():
    pipeline, _ = _run([_result(T_TRUE, inliers=300), _result(_shifted(0.4), inliers=100)])
    assert pipeline.estimate().T_cam_lidar[0, 3] == pytest.approx(T_TRUE[0, 3] + 0.1)


def test_bad_input_is_a_record_without_a_pose():
    pipeline, records = _run([ValueError("none of the 10 points lies inside the range")])
    record = records[0]
    assert not record.solved and not record.valid and not record.accepted
    assert "inside the range" in record.reason and math.isnan(record.overlap_ratio)
    assert not pipeline.estimate().solved


def test_an_unsolved_frame_has_no_pose_not_an_identity():
    _, records = _run([_result(np.eye(4), valid=False, reason="RANSAC-PnP found no valid pose")])
    assert records[0].T_cam_lidar is None and not records[0].solved


def test_poses_outside_the_prior_bounds_are_refused():
    settings = OnlineSettings(min_frames=1, max_rotation_from_prior_deg=2.0,
                              max_translation_from_prior_m=0.1)
    _, records = _run([_result(_shifted(0.3)), _result(T_TRUE)], settings, prior=T_TRUE)
    assert records[0].valid and not records[0].accepted
    assert records[0].reason == "outside the prior bounds of the window"
    assert records[1].accepted and np.allclose(records[1].aggregate, T_TRUE)


def test_the_estimate_carries_the_covariance_of_the_window_mean():
    rng = np.random.default_rng(0)
    poses = [_shifted(dx) for dx in rng.normal(0.0, 0.02, 30)]
    pipeline, records = _run([_result(T) for T in poses])
    sigma = pipeline.estimate().pose.sigma_trans_m
    assert sigma[0] == pytest.approx(np.std(poses, axis=0)[0, 3] / np.sqrt(30), rel=0.1)
    assert np.allclose(records[-1].aggregate_sigma_trans_m, sigma)
    assert set(records[-1].stage_estimates) == {"global"}


def test_drift_is_reported_when_the_installed_calibration_is_off():
    rng = np.random.default_rng(1)
    moved = prior_at_distance(T_TRUE, 1.0, 0.03, rng)  # the mounting moved by 1 deg, 3 cm
    poses = [_shifted(dx) for dx in rng.normal(0.0, 0.003, 20)]
    pipeline, _ = _run([_result(T) for T in poses], prior=moved)
    report = pipeline.drift()
    assert report.drifted and any(axis.startswith("rotation") for axis in report.axes)
    assert np.degrees(np.linalg.norm(np.radians(report.difference_deg))) == pytest.approx(1.0)
    assert "deg" in report.describe()
    steady, _ = _run([_result(T) for T in poses], prior=T_TRUE)
    assert not steady.drift().drifted


def test_frame_record_text_round_trip_is_exact():
    _, records = _run([_result(T_TRUE), _result(_shifted(0.01)), ValueError("bad")])
    for record in records:
        back = FrameRecord.from_values(record.to_values())
        assert back.to_values() == record.to_values()
    with pytest.raises(ValueError, match="lacks valid"):
        FrameRecord.from_values({k: v for k, v in records[0].to_values().items()
                                 if k != "valid"})


def test_settings_name_unknown_stages():
    with pytest.raises(ValueError, match="stages"):
        OnlineSettings(stages=("global", "magic"))
    with pytest.raises(ValueError, match="needs a network"):
        OnlineCalibration(None, OnlineSettings(stages=("global",)))


def test_intensities_reach_the_network_in_zero_one():
    class Recording(ScriptedCalibrator):
        def calibrate(self, image, points, camera, T_init=None):
            self.seen = points[:, 3].copy()
            return super().calibrate(image, points, camera, T_init)

    calibrator = Recording([_result(T_TRUE)])
    pipeline = OnlineCalibration(calibrator, OnlineSettings(min_frames=1))
    points = FRAME.points.copy()
    points[:, 3] = np.linspace(0.0, 255.0, len(points))
    pipeline.process(dataclasses.replace(FRAME, points=points))
    assert calibrator.seen.max() == pytest.approx(1.0) and pipeline.intensity.full_scale == 255
