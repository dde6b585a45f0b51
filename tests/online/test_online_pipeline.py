"""The per-frame policy of `OnlineCalibration` (acceptance, weighting, aggregation, drift).

The Calibrator's per-frame results are scripted here: the policy is what is under test.
"""
import dataclasses
import math

import numpy as np
import pytest
from scripted_calibrator import FRAME, T_TRUE, ScriptedCalibrator
from scripted_calibrator import result as _result

from nclr_core.geometry.camera import CameraModel
from nclr_core.inference import Matches
from nclr_core.online.pipeline import Frame, OnlineCalibration, OnlineSettings
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
    _, records = _run([_result(None, valid=False, reason="RANSAC-PnP found no valid pose")])
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
    with pytest.raises(ValueError, match="need a network"):
        OnlineCalibration(None, OnlineSettings(stages=("global",)))


def test_intensities_reach_the_network_in_zero_one():
    calibrator = ScriptedCalibrator([_result(T_TRUE)])
    pipeline = OnlineCalibration(calibrator, OnlineSettings(min_frames=1))
    points = FRAME.points.copy()
    points[:, 3] = np.linspace(0.0, 255.0, len(points))
    pipeline.process(dataclasses.replace(FRAME, points=points))
    assert calibrator.points[:, 3].max() == pytest.approx(1.0)
    assert pipeline.intensity.full_scale == 255


def _matched(T, rng, valid=True, offset_px=0.0):
    """A scripted global result whose RANSAC inliers are 300 matches of the pose T (2 px
    noise), shifted by offset_px (a wrong frame)."""
    from online_scene import K, seen_points

    points, uv = seen_points(rng, 300, T=T)
    pixels = uv + rng.normal(0.0, 2.0, uv.shape) + offset_px
    matches = Matches(np.arange(300), points, pixels, np.ones(300), np.ones(300, bool))
    return dataclasses.replace(_result(T, valid=valid), matches=matches), K


def test_the_joint_stage_pools_only_accepted_frames():
    from online_scene import HEIGHT, WIDTH
    from online_scene import T_TRUE as T_SCENE

    rng = np.random.default_rng(3)
    good = [_matched(T_SCENE, rng) for _ in range(3)]
    bad, K = _matched(T_SCENE, rng, valid=False, offset_px=40.0)
    camera = CameraModel(K, WIDTH, HEIGHT)
    frame = Frame(np.zeros((HEIGHT, WIDTH, 3), np.uint8), np.zeros((10, 4), np.float32), camera)
    pipeline = OnlineCalibration(
        ScriptedCalibrator([bad] + [result for result, _ in good]),
        OnlineSettings(stages=("global", "joint"), min_frames=3, outlier_translation_m=1.0))
    records = [pipeline.process(frame).record for _ in range(4)]
    joint = pipeline.estimates()["joint"]
    assert joint.solved and joint.num_frames == 3  # the invalid frame was not pooled
    assert records[-1].aggregate_stage == "joint"
    assert np.linalg.norm(joint.T_cam_lidar[:3, 3] - T_SCENE[:3, 3]) < 0.05
    assert np.all(joint.pose.sigma_trans_m > 0)
    assert set(records[-1].stage_estimates) == {"global", "joint"}


def test_guided_needs_a_reference_pose():
    pipeline, records = _run([_result(T_TRUE)], OnlineSettings(stages=("guided",)))
    assert records[0].stage == "guided" and not records[0].solved
    assert "no reference pose" in records[0].reason


def test_a_window_claims_no_more_than_its_frames_own_precision():
    from nclr_core.online.pipeline import _WindowStage
    from nclr_core.temporal_estimator import TemporalEstimator

    own = np.diag([np.radians(0.2) ** 2] * 3 + [0.15 ** 2] * 3)  # each frame's covariance
    single = _WindowStage("guided", TemporalEstimator(window=50, min_frames=1))
    assert single.add(T_TRUE, 100.0, own)
    # one frame: its spread measures nothing, its own covariance stands
    np.testing.assert_allclose(single.estimate.pose.covariance, own)

    # 30 frames that agree far better than each claims: sigma >= own / sqrt(30)
    window = _WindowStage("guided", TemporalEstimator(window=50, min_frames=1,
                                                      outlier_translation_m=1.0))
    rng = np.random.default_rng(0)
    for dx in rng.normal(0.0, 0.001, 30):
        window.add(_shifted(dx), 100.0, own)
    sigma = window.estimate.pose.sigma_trans_m
    assert np.allclose(sigma, 0.15 / np.sqrt(30), rtol=1e-6)
    # without the frames' own covariances the window's spread alone decides (as global)
    spread_only = _WindowStage("global", TemporalEstimator(window=50, min_frames=1,
                                                           outlier_translation_m=1.0))
    for dx in rng.normal(0.0, 0.001, 30):
        spread_only.add(_shifted(dx), 100.0)
    assert spread_only.estimate.pose.sigma_trans_m[0] < 0.001


def test_a_guided_translation_too_imprecise_to_publish_keeps_the_prior_translation():
    from nclr_core.online.pipeline import _WindowStage
    from nclr_core.temporal_estimator import TemporalEstimator

    prior = prior_at_distance(T_TRUE, 10.0, 0.25, np.random.default_rng(0))
    single_frame = np.diag([np.radians(0.3) ** 2] * 3 + [0.02 ** 2, 0.02 ** 2, 0.15 ** 2])
    stage = _WindowStage("guided", TemporalEstimator(window=50, min_frames=1),
                         max_sigma_trans_m=0.05, prior=prior, prior_sigma_trans_m=0.5 / 3)
    assert stage.add(_shifted(0.1), 100.0, single_frame)
    published = stage.estimate
    np.testing.assert_allclose(published.T_cam_lidar[:3, :3], T_TRUE[:3, :3])  # rotation
    np.testing.assert_array_equal(published.T_cam_lidar[:3, 3], prior[:3, 3])  # prior's t
    assert np.allclose(published.pose.sigma_trans_m, 0.5 / 3)
    assert np.allclose(published.pose.sigma_rot_deg, 0.3)
    assert "translation kept from the prior" in published.warnings[0]
    # precise enough (many frames): the estimated translation is published
    for _ in range(99):
        stage.add(_shifted(0.1), 100.0, single_frame)
    assert np.allclose(stage.estimate.T_cam_lidar, _shifted(0.1)) and not stage.estimate.warnings
    # without a prior there is nothing to keep: the estimate is published as it is
    alone = _WindowStage("guided", TemporalEstimator(window=50, min_frames=1),
                         max_sigma_trans_m=0.05)
    alone.add(_shifted(0.1), 100.0, single_frame)
    assert np.allclose(alone.estimate.T_cam_lidar, _shifted(0.1))
