"""Online evaluation protocol: windows, calls, exact priors, worse-than-prior, coverage."""
import math

import numpy as np
import pytest
from scripted_calibrator import CAMERA, ScriptedCalibrator
from scripted_calibrator import result as _result

from nclr_core.engine.online_eval import (
    call_row,
    make_windows,
    run_calls,
    summarize_calls,
    summarize_rows,
)
from nclr_core.geometry.metrics import rre_geodesic_deg
from nclr_core.geometry.se3 import make_transform
from nclr_core.online.pipeline import OnlineCalibration, OnlineSettings
from nclr_core.online.pose import PoseEstimate, apply_delta
from nclr_core.online.records import CalibrationEstimate

T_A = make_transform(np.eye(3), [0.1, 0.0, 0.0])
T_B = make_transform(np.eye(3), [0.0, 0.2, 0.0])


def _sample(T, frame_id):
    return {"image": np.zeros((CAMERA.height, CAMERA.width, 3), np.uint8),
            "points": np.zeros((5, 4), np.float32), "K": CAMERA.K, "T_cam_lidar": T,
            "sequence": "00", "frame_id": frame_id}


def test_windows_group_frames_that_share_a_calibration():
    samples = [_sample(T_A, "0"), _sample(T_A, "1"), _sample(T_B, "2"), _sample(T_A, "3")]
    assert [w.indices for w in make_windows(samples, False)] == [(0,), (1,), (2,), (3,)]
    assert [w.indices for w in make_windows(samples, True)] == [(0, 1, 3), (2,)]
    assert [w.indices for w in make_windows(samples, True, 2)] == [(0, 1), (3,), (2,)]


def test_calls_per_window_use_priors_at_the_exact_distance():
    samples = [_sample(T_A, str(i)) for i in range(3)]
    windows = make_windows(samples, True)
    offsets = iter(np.linspace(-0.01, 0.01, 100))

    def make_pipeline(prior):
        results = [_result(apply_delta(T_A, np.r_[0, 0, 0, next(offsets), 0, 0]))
                   for _ in range(3)]
        return OnlineCalibration(ScriptedCalibrator(results), OnlineSettings(min_frames=1),
                                 prior)

    calls = list(run_calls(windows, samples.__getitem__, make_pipeline, 5.0, 0.2, 2, seed=0))
    assert len(calls) == 2 * 3 and all(len(c.outcomes) == 3 for c in calls)
    for call in calls:
        assert rre_geodesic_deg(call.prior[:3, :3], T_A[:3, :3]) == pytest.approx(5.0)
        assert np.linalg.norm(call.prior[:3, 3] - T_A[:3, 3]) == pytest.approx(0.2)
        assert call.estimate.solved
    summary, rows = summarize_calls(calls)
    assert summary["num_calls"] == 6 and summary["accepted_rate"] == 1.0
    assert summary["worse_than_prior_rate"] == 0.0
    assert summary["better_than_prior_rotation_rate"] == 1.0
    assert summary["estimate_rte_m_median"] < 0.011
    assert set(summary["stages"]) == {"global"}
    assert {r["judged_by"] for r in rows} == {"pipeline", "global"} and len(rows) == 12


def _call(estimate, prior_offset_m=0.2):
    class Call:  # the parts of a CallResult that call_row reads
        window = make_windows([_sample(T_A, "0")], False)[0]
        call = 0
        T_gt = T_A
        prior = make_transform(np.eye(3), T_A[:3, 3] + [prior_offset_m, 0, 0])
    return call_row(Call(), estimate, "pipeline")


def test_a_refused_call_keeps_the_prior_and_is_not_worse():
    row = _call(CalibrationEstimate.unsolved("global", "no frame accepted"))
    assert not row["accepted"] and not row["worse_than_prior"]
    assert row["estimate_rte_m"] == pytest.approx(0.2) and math.isnan(row["covered_3sigma"])


def test_worse_than_prior_and_coverage():
    sigma = np.diag([1e-6] * 3 + [0.01 ** 2] * 3)
    worse = CalibrationEstimate(True, PoseEstimate(make_transform(
        np.eye(3), T_A[:3, 3] + [0.0, 0.3, 0.0]), sigma), "global")
    row = _call(worse)
    assert row["worse_than_prior"] and row["covered_3sigma"] == 0.0
    close = CalibrationEstimate(True, PoseEstimate(make_transform(
        np.eye(3), T_A[:3, 3] + [0.02, 0.0, 0.0]), sigma), "global")
    row = _call(close)
    assert not row["worse_than_prior"] and row["covered_3sigma"] == 1.0
    assert row["sigma_trans_x_m"] == pytest.approx(0.01)


def test_an_infinite_sigma_is_not_counted_as_covered():
    unknown = CalibrationEstimate(True, PoseEstimate(make_transform(
        np.eye(3), T_A[:3, 3] + [0.0, 0.3, 0.0]), np.diag([np.inf] * 6)), "guided")
    row = _call(unknown)
    assert row["accepted"] and math.isnan(row["covered_3sigma"])
    summary = summarize_rows([row])
    assert math.isnan(summary["coverage_3sigma"]) and summary["coverage_3sigma_calls"] == 0
