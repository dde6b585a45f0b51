"""Pose metrics on hand-computed cases: RRE (Euler-sum and geodesic), RTE, success, recall."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nclr_core.geometry import metrics
from nclr_core.geometry.se3 import make_transform


def _rot(axis: str, degrees: float) -> np.ndarray:
    return Rotation.from_euler(axis, degrees, degrees=True).as_matrix()


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_pure_ten_degree_rotation_gives_ten_in_both_forms(axis: str) -> None:
    R_pred, R_gt = _rot(axis, 10.0), np.eye(3)
    assert metrics.rre_euler_deg(R_pred, R_gt) == pytest.approx(10.0, abs=1e-9)
    assert metrics.rre_geodesic_deg(R_pred, R_gt) == pytest.approx(10.0, abs=1e-9)
    # The error is relative: rotating both by the same R changes nothing.
    R = _rot("y", 33.0) @ _rot("x", -71.0)
    assert metrics.rre_geodesic_deg(R @ R_pred, R @ R_gt) == pytest.approx(10.0, abs=1e-9)


def test_euler_sum_and_geodesic_differ_for_mixed_rotations() -> None:
    # R_diff = R_pred^T R_gt = Rz(10 deg) Rx(10 deg), extrinsic 'xzy' angles (10, 10, 0).
    R_gt = _rot("z", 10.0) @ _rot("x", 10.0)
    assert metrics.rre_euler_deg(np.eye(3), R_gt) == pytest.approx(20.0, abs=1e-9)
    # Quaternion product of two 10 deg turns about perpendicular axes: w = cos^2(5 deg).
    geodesic = 2.0 * np.degrees(np.arccos(np.cos(np.radians(5.0)) ** 2))
    assert geodesic == pytest.approx(14.1, abs=0.05)
    assert metrics.rre_geodesic_deg(np.eye(3), R_gt) == pytest.approx(geodesic, abs=1e-9)


def test_rre_uses_the_relative_rotation_pred_transpose_gt() -> None:
    # R_pred^T R_gt for R_pred = Rz(30), R_gt = Rz(30) Rx(4): exactly Rx(4).
    R_pred = _rot("z", 30.0)
    R_gt = R_pred @ _rot("x", 4.0)
    assert metrics.rre_euler_deg(R_pred, R_gt) == pytest.approx(4.0, abs=1e-9)
    # The other order, R_gt R_pred^T = Rz(30) Rx(4) Rz(-30), mixes x and y: Euler sum differs.
    assert metrics.rre_euler_deg(np.eye(3), R_gt @ R_pred.T) > 4.5


def test_rte_and_batching() -> None:
    t_gt = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    t_pred = np.array([[4.0, 6.0, 3.0], [0.0, 0.0, 1.5]])
    np.testing.assert_allclose(metrics.rte_m(t_pred, t_gt), [5.0, 1.5])
    R_pred = np.stack([_rot("x", 10.0), _rot("y", 3.0), np.eye(3)])
    rre = metrics.rre_euler_deg(R_pred, np.broadcast_to(np.eye(3), (3, 3, 3)))
    assert rre.shape == (3,)
    np.testing.assert_allclose(rre, [10.0, 3.0, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match="must both be"):
        metrics.rte_m(t_pred, t_gt[0])


def test_pose_errors_single_pose_is_json_serialisable() -> None:
    T_gt = make_transform(np.eye(3), [0.0, 0.0, 0.0])
    T_pred = make_transform(_rot("z", 10.0), [0.3, 0.4, 0.0])
    errors = metrics.pose_errors(T_pred, T_gt)
    assert errors["rre_euler_deg"] == pytest.approx(10.0)
    assert errors["rre_geodesic_deg"] == pytest.approx(10.0)
    assert errors["rte_m"] == pytest.approx(0.5)
    assert all(isinstance(value, float) for value in errors.values())
    json.dumps(errors)
    batched = metrics.pose_errors(np.stack([T_pred, T_gt]), np.stack([T_gt, T_gt]))
    np.testing.assert_allclose(batched["rte_m"], [0.5, 0.0])


def test_registration_success_thresholds_are_strict() -> None:
    rre = np.array([4.9, 5.0, 1.0, 1.0, np.nan])
    rte = np.array([1.9, 1.0, 2.0, 0.1, 0.1])
    assert metrics.registration_success(rre, rte).tolist() == [True, False, False, True, False]
    assert metrics.registration_success(rre, rte, max_rre_deg=10.0, max_rte_m=3.0).tolist() == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_recall_curve_counts_failures_in_the_denominator() -> None:
    errors = np.array([0.5, 1.0, 2.0, 8.0, np.nan])
    recall = metrics.recall_curve(errors, [0.0, 1.0, 5.0, 10.0])
    np.testing.assert_allclose(recall, [0.0, 0.4, 0.6, 0.8])
    with pytest.raises(ValueError, match="at least one"):
        metrics.recall_curve([], [1.0])
