"""Robust PnP for inference (nclr_core.geometry.pnp_ransac): OpenCV USAC + LM on the inliers."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from nclr_core.geometry.metrics import rre_geodesic_deg
from nclr_core.geometry.pnp_ransac import reprojection_errors, solve_pnp_ransac

K = np.array([[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 1242, 375


def _problem(n: int, outliers: float, seed: int, noise_px: float = 1.0):
    """Points seen at depth 4-40 m under a random pose; the first outliers·n pixels are
    replaced by uniform ones. Returns x3d (n, 3), x2d (n, 2), R, t, truth mask (n,)."""
    rng = np.random.default_rng(seed)
    uv = rng.uniform((0, 0), (WIDTH - 1, HEIGHT - 1), (n, 2))
    depth = rng.uniform(4.0, 40.0, n)
    cam = np.column_stack(((uv - K[:2, 2]) / np.diag(K)[:2], np.ones(n))) * depth[:, None]
    R = Rotation.random(random_state=seed).as_matrix()
    t = rng.uniform(-2.0, 2.0, 3)
    x3d = (cam - t) @ R  # Rᵀ (p − t)
    x2d = uv + rng.normal(0.0, noise_px, uv.shape)
    k = round(outliers * n)
    x2d[:k] = rng.uniform((0, 0), (WIDTH - 1, HEIGHT - 1), (k, 2))
    return x3d, x2d, R, t, np.arange(n) >= k


@pytest.mark.parametrize("outliers", [0.3, 0.6])
def test_recovers_the_pose_and_its_inliers(outliers: float) -> None:
    x3d, x2d, R, t, truth = _problem(400, outliers, seed=int(100 * outliers))
    result = solve_pnp_ransac(x3d, x2d, K, reproj_threshold_px=5.0)
    assert result.valid
    assert rre_geodesic_deg(result.R, R) < 0.05
    assert np.linalg.norm(result.t - t) < 0.02
    assert (result.inliers & truth).sum() >= 0.98 * truth.sum()
    assert (result.inliers & ~truth).sum() <= 0.02 * (~truth).sum()
    assert 0.5 < result.reproj_error < 2.0  # RMS norm of 1 px noise per axis: about 1.4
    errors = reprojection_errors(x3d, x2d, K, result.R, result.t)
    np.testing.assert_array_equal(result.inliers, errors < 5.0)


def test_the_lm_refit_reaches_the_least_squares_optimum_of_the_inliers() -> None:
    x3d, x2d, _, _, truth = _problem(300, 0.0, seed=3, noise_px=2.0)
    result = solve_pnp_ransac(x3d, x2d, K, reproj_threshold_px=20.0)
    assert result.inliers.all()
    # at the optimum, a small rotation of either sign does not lower the squared error
    cost = np.sum(reprojection_errors(x3d, x2d, K, result.R, result.t) ** 2)
    for axis in np.eye(3):
        for sign in (1, -1):
            turned = Rotation.from_rotvec(sign * 1e-4 * axis).as_matrix() @ result.R
            assert np.sum(reprojection_errors(x3d, x2d, K, turned, result.t) ** 2) > cost


def test_deterministic_for_a_seed_and_accepts_tensors() -> None:
    x3d, x2d, _, _, _ = _problem(200, 0.5, seed=12)
    a = solve_pnp_ransac(x3d, x2d, K, seed=3)
    b = solve_pnp_ransac(torch.from_numpy(x3d).float(), torch.from_numpy(x2d), torch.from_numpy(K),
                         seed=3)
    np.testing.assert_array_equal(a.inliers, solve_pnp_ransac(x3d, x2d, K, seed=3).inliers)
    assert b.valid and rre_geodesic_deg(a.R, b.R) < 1e-3


def test_too_few_or_non_finite_points_are_not_valid() -> None:
    x3d, x2d, _, _, _ = _problem(5, 0.0, seed=13)
    result = solve_pnp_ransac(x3d, x2d, K)
    assert not result.valid and not result.inliers.any()
    np.testing.assert_array_equal(result.R, np.eye(3))
    x3d, x2d, _, _, _ = _problem(50, 0.0, seed=14)
    x2d[:46] = np.nan
    assert not solve_pnp_ransac(x3d, x2d, K).valid
    with pytest.raises(ValueError, match="x2d"):
        solve_pnp_ransac(x3d, x2d[:3], K)
    with pytest.raises(ValueError, match="K"):
        solve_pnp_ransac(x3d, x2d, K[:2])
    with pytest.raises(ValueError, match="threshold"):
        solve_pnp_ransac(x3d, x2d, K, reproj_threshold_px=0.0)
