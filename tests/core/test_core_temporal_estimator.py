"""Temporal estimator: robust to outliers, windowed, prior-bounded, resettable."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nclr_core.temporal_estimator import TemporalEstimator


def _transform(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


T_TRUE = _transform([0.01, -1.2, 0.02], [0.06, -0.08, -0.27])


def _noisy(rng, rot_sigma_rad=0.002, trans_sigma_m=0.01):
    return T_TRUE @ _transform(rng.normal(0, rot_sigma_rad, 3), rng.normal(0, trans_sigma_m, 3))


def _errors(T):
    rot = np.rad2deg(Rotation.from_matrix(T[:3, :3].T @ T_TRUE[:3, :3]).magnitude())
    return rot, np.linalg.norm(T[:3, 3] - T_TRUE[:3, 3])


def test_needs_min_frames():
    est = TemporalEstimator(min_frames=3)
    est.add(T_TRUE)
    est.add(T_TRUE)
    assert est.estimate() is None
    est.add(T_TRUE)
    assert np.allclose(est.estimate().T_cam_lidar, T_TRUE)


def test_outliers_are_rejected_and_noise_averaged():
    rng = np.random.default_rng(0)
    est = TemporalEstimator(window=60)
    for _ in range(40):
        est.add(_noisy(rng))
    for _ in range(15):  # gross failures: 20-40 deg, 1-3 m off
        est.add(T_TRUE @ _transform(rng.uniform(0.35, 0.7, 3), rng.uniform(1, 3, 3)))
    result = est.estimate()
    rot_err, trans_err = _errors(result.T_cam_lidar)
    assert result.num_frames == 55 and result.num_inliers == 40
    assert rot_err < 0.1 and trans_err < 0.01  # better than a single frame's noise
    assert 0.05 < result.rotation_spread_deg < 0.5
    assert 0.005 < result.translation_spread_m < 0.05
    # A plain mean would be dragged far off by the failures:
    naive_t = np.mean([T_TRUE[:3, 3]] * 40 + [T_TRUE[:3, 3] + 2] * 15, axis=0)
    assert np.linalg.norm(naive_t - T_TRUE[:3, 3]) > 0.5


def test_window_forgets_old_estimates_and_reset_clears():
    est = TemporalEstimator(window=5, min_frames=1)
    old = _transform([0, 0, 0], [1, 2, 3])
    for _ in range(5):
        est.add(old)
    for _ in range(5):
        est.add(T_TRUE)
    assert np.allclose(est.estimate().T_cam_lidar, T_TRUE)
    est.reset()
    assert len(est) == 0 and est.estimate() is None


def test_prior_bound_refuses_far_estimates():
    est = TemporalEstimator(min_frames=1, T_init=T_TRUE, max_rotation_from_prior_deg=10,
                            max_translation_from_prior_m=0.25)
    assert est.add(T_TRUE @ _transform([0, 0.1, 0], [0.1, 0, 0]))  # 5.7 deg, 0.1 m
    assert not est.add(T_TRUE @ _transform([0, 0.3, 0], [0, 0, 0]))  # 17 deg
    assert not est.add(T_TRUE @ _transform([0, 0, 0], [0, 0.3, 0]))  # 0.3 m
    assert est.num_rejected_by_prior == 2 and len(est) == 1


def test_weights_pull_the_mean():
    est = TemporalEstimator(min_frames=1, outlier_translation_m=1.0)
    est.add(_transform([0, 0, 0], [0, 0, 0]), weight=3.0)
    est.add(_transform([0, 0, 0], [0.4, 0, 0]), weight=1.0)
    assert est.estimate().T_cam_lidar[0, 3] == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [np.eye(3), np.full((4, 4), np.nan)])
def test_bad_input_is_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        TemporalEstimator().add(bad)


def test_covariance_of_the_mean_matches_the_scatter_of_means():
    """Monte Carlo: the reported sigma of a 20-frame mean is the spread of such means."""
    rng = np.random.default_rng(1)
    errors, sigmas = [], []
    for _ in range(200):
        est = TemporalEstimator(window=20, min_frames=2, outlier_rotation_deg=5.0,
                                outlier_translation_m=1.0)
        for _ in range(20):
            est.add(_noisy(rng, 0.004, 0.02))
        result = est.estimate()
        errors.append(result.T_cam_lidar[:3, 3] - T_TRUE[:3, 3])
        sigmas.append(result.pose.sigma_trans_m)
    measured = np.std(np.asarray(errors), axis=0)
    reported = np.mean(np.asarray(sigmas), axis=0)
    assert np.allclose(reported, measured, rtol=0.2)
    assert np.allclose(reported, 0.02 / np.sqrt(20), rtol=0.2)


def test_one_estimate_has_unknown_covariance():
    est = TemporalEstimator(min_frames=1)
    est.add(T_TRUE)
    assert np.all(np.isinf(est.estimate().pose.sigma_rot_deg))
