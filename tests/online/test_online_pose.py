"""The uncertainty convention of `nclr_core.online.pose` and the exact-distance prior."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nclr_core.geometry.metrics import pose_errors
from nclr_core.geometry.se3 import make_transform
from nclr_core.online.pose import (
    PoseEstimate,
    apply_delta,
    at_least,
    pose_delta,
    prior_at_distance,
)


def _pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_transform(Rotation.from_rotvec(rng.normal(size=3)).as_matrix(),
                          rng.normal(size=3))


def test_delta_rotates_about_camera_axes_and_translates_in_the_camera_frame():
    T = _pose(0)
    moved = apply_delta(T, np.array([0.0, 0.0, 0.1, 0.0, 0.0, 0.25]))
    # the relative rotation is 0.1 rad about the camera's z (optical) axis
    relative = moved[:3, :3] @ T[:3, :3].T
    assert np.allclose(Rotation.from_matrix(relative).as_rotvec(), [0.0, 0.0, 0.1])
    assert np.allclose(moved[:3, 3], T[:3, 3] + [0.0, 0.0, 0.25])


def test_pose_delta_inverts_apply_delta():
    T = _pose(1)
    delta = np.array([0.02, -0.01, 0.03, 0.1, -0.2, 0.05])
    assert np.allclose(pose_delta(T, apply_delta(T, delta)), delta, atol=1e-12)


def test_sigmas_are_the_roots_of_the_covariance_diagonal():
    cov = np.diag([np.radians(0.1) ** 2, np.radians(0.2) ** 2, np.radians(0.3) ** 2,
                   0.01 ** 2, 0.02 ** 2, 0.03 ** 2])
    estimate = PoseEstimate(np.eye(4), cov)
    assert np.allclose(estimate.sigma_rot_deg, [0.1, 0.2, 0.3])
    assert np.allclose(estimate.sigma_trans_m, [0.01, 0.02, 0.03])
    with pytest.raises(ValueError, match="covariance"):
        PoseEstimate(np.eye(4), np.full((6, 6), np.nan))


@pytest.mark.parametrize("deg, metres", [(10.0, 0.25), (5.0, 0.2), (0.0, 0.0)])
def test_prior_is_exactly_as_far_as_asked(deg, metres):
    T = _pose(2)
    prior = prior_at_distance(T, deg, metres, np.random.default_rng(7))
    errors = pose_errors(prior, T)
    assert errors["rre_geodesic_deg"] == pytest.approx(deg, abs=1e-9)
    assert errors["rte_m"] == pytest.approx(metres, abs=1e-12)
    with pytest.raises(ValueError, match="prior"):
        prior_at_distance(T, 190.0, 0.1, np.random.default_rng(0))


def test_at_least_raises_each_sigma_to_the_floor_and_keeps_correlations():
    covariance = np.array([[4.0, 2.0], [2.0, 4.0]])
    full = np.zeros((6, 6))
    full[:2, :2] = covariance
    full[2:, 2:] = np.eye(4) * 9.0
    floor = np.diag([16.0, 1.0, 1.0, 1.0, 1.0, 25.0])
    raised = at_least(full, floor)
    assert np.allclose(np.sqrt(np.diag(raised)), [4, 2, 3, 3, 3, 5])
    correlation = raised[0, 1] / np.sqrt(raised[0, 0] * raised[1, 1])
    assert correlation == pytest.approx(0.5)  # as before
    # nothing measured (an infinite covariance): the floor stands
    assert np.array_equal(at_least(np.diag(np.full(6, np.inf)), floor), floor)
