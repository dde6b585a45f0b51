"""Tests of the differentiable weighted EPnP (nclr_core.geometry.epnp)."""

import cv2
import numpy as np
import pytest
import torch

from nclr_core.geometry.epnp import solve_epnp

F64 = torch.float64
KITTI_K = ((721.5377, 0.0, 609.5593), (0.0, 721.5377, 172.854), (0.0, 0.0, 1.0))
IMAGE_W, IMAGE_H = 1242, 375


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batched linear algebra: BLAS threads only spin on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rotations(B: int, g: torch.Generator) -> torch.Tensor:
    q = torch.randn(B, 4, generator=g, dtype=F64)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack(
        (
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ),
        -1,
    ).reshape(B, 3, 3)


def _scene(B: int, N: int, seed: int, noise_px: float = 0.0, planar: bool = False):
    """Random poses and points in the camera frustum (depth 4-40 m), KITTI-like K.

    Returns x3d (B, N, 3) object frame, x2d (B, N, 2), K (B, 3, 3), R (B, 3, 3), t (B, 3).
    With planar=True the points lie on one random plane through the frustum.
    """
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor(KITTI_K, dtype=F64).expand(B, 3, 3).clone()
    depth = 4 + 36 * torch.rand(B, N, generator=g, dtype=F64)
    u = IMAGE_W * torch.rand(B, N, generator=g, dtype=F64)
    v = IMAGE_H * torch.rand(B, N, generator=g, dtype=F64)
    ray = torch.stack(((u - K[0, 0, 2]) / K[0, 0, 0], (v - K[0, 1, 2]) / K[0, 1, 1]), -1)
    p_cam = torch.cat((ray, torch.ones_like(u).unsqueeze(-1)), -1) * depth.unsqueeze(-1)
    if planar:  # intersect the rays with the plane n·p = n·c through the mean point c
        normal = torch.randn(B, 1, 3, generator=g, dtype=F64)
        normal[..., 2] = normal[..., 2].abs() + 1.0  # plane faces the camera
        c = p_cam.mean(1, keepdim=True)
        p_ray = p_cam / depth.unsqueeze(-1)
        p_cam = p_ray * ((normal * c).sum(-1, keepdim=True) / (normal * p_ray).sum(-1, True))
    R = _rotations(B, g)
    t = 5 * torch.randn(B, 3, generator=g, dtype=F64)
    x3d = (p_cam - t.unsqueeze(1)) @ R  # Rᵀ (p − t)
    q = p_cam @ K.mT
    x2d = q[..., :2] / q[..., 2:] + noise_px * torch.randn(B, N, 2, generator=g, dtype=F64)
    return x3d, x2d, K, R, t


def _rotation_error(R_est: torch.Tensor, R_true: torch.Tensor) -> torch.Tensor:
    """Angle (B,) in radians of R_trueᵀ R_est; precise near zero (uses the chord length)."""
    chord = (R_est - R_true).flatten(1).norm(dim=-1)
    return 2 * torch.asin((chord / (2 * 2**0.5)).clamp(max=1.0))


@pytest.mark.parametrize("N", [6, 10, 100, 2000])
def test_noise_free_pose_is_exact(N: int) -> None:
    x3d, x2d, K, R, t = _scene(4, N, seed=N)
    result = solve_epnp(x3d, x2d, K)
    assert result.valid.all()
    assert _rotation_error(result.R, R).max() < 1e-6
    assert (result.t - t).norm(dim=-1).max() < 1e-6
    assert result.reproj_error.max() < 1e-6
    assert torch.allclose(torch.linalg.det(result.R), torch.ones(4, dtype=F64))


def test_noise_free_closed_form_alone_is_exact() -> None:
    x3d, x2d, K, R, t = _scene(4, 50, seed=1)
    result = solve_epnp(x3d, x2d, K, refine_steps=0)
    assert _rotation_error(result.R, R).max() < 1e-6
    assert (result.t - t).norm(dim=-1).max() < 1e-6


def test_planar_points_are_exact() -> None:
    x3d, x2d, K, R, t = _scene(4, 30, seed=2, planar=True)
    centred = x3d - x3d.mean(1, keepdim=True)
    assert torch.linalg.svdvals(centred)[:, -1].max() < 1e-9  # the scene really is planar
    result = solve_epnp(x3d, x2d, K)
    assert result.valid.all()
    assert _rotation_error(result.R, R).max() < 1e-6
    assert (result.t - t).norm(dim=-1).max() < 1e-6


def _opencv_epnp_then_iterative(x3d: np.ndarray, x2d: np.ndarray, K: np.ndarray):
    _, rvec, tvec = cv2.solvePnP(x3d, x2d, K, None, flags=cv2.SOLVEPNP_EPNP)
    _, rvec, tvec = cv2.solvePnP(
        x3d, x2d, K, None, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    return cv2.Rodrigues(rvec)[0], tvec.ravel()


@pytest.mark.parametrize("N", [6, 40])
def test_noisy_median_error_no_worse_than_opencv(N: int) -> None:
    B = 50
    x3d, x2d, K, R, t = _scene(B, N, seed=100 + N, noise_px=1.0)
    result = solve_epnp(x3d, x2d, K)
    assert result.valid.all()
    cv_R, cv_t = zip(
        *(_opencv_epnp_then_iterative(x3d[b].numpy(), x2d[b].numpy(), K[b].numpy())
          for b in range(B)),
        strict=True,
    )
    cv_R = torch.from_numpy(np.stack(cv_R))
    cv_t = torch.from_numpy(np.stack(cv_t))
    ours_rot = _rotation_error(result.R, R).median()
    ours_trans = (result.t - t).norm(dim=-1).median()
    cv_rot = _rotation_error(cv_R, R).median()
    cv_trans = (cv_t - t).norm(dim=-1).median()
    assert ours_rot > 0 and ours_trans > 0  # the noise really perturbs the pose
    assert ours_rot <= cv_rot * (1 + 1e-3)
    assert ours_trans <= cv_trans * (1 + 1e-3)


def _random_weights(B: int, N: int, seed: int) -> torch.Tensor:
    return 0.5 + torch.rand(B, N, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_gradcheck_x2d_and_weights_with_refinement() -> None:
    x3d, x2d, K, _, _ = _scene(1, 10, seed=3, noise_px=1.0)
    weights = _random_weights(1, 10, seed=3)

    def pose(x2d: torch.Tensor, weights: torch.Tensor):
        result = solve_epnp(x3d, x2d, K, weights, refine_steps=5)
        return result.R, result.t, result.reproj_error

    assert torch.autograd.gradcheck(
        pose, (x2d.requires_grad_(), weights.requires_grad_()), eps=1e-6, atol=1e-5, rtol=1e-3
    )


def test_gradcheck_closed_form_all_inputs() -> None:
    x3d, x2d, K, _, _ = _scene(1, 8, seed=4, noise_px=1.0)
    weights = _random_weights(1, 8, seed=4)

    def pose(x3d, x2d, K, weights):
        result = solve_epnp(x3d, x2d, K, weights, refine_steps=0)
        return result.R, result.t

    inputs = tuple(x.requires_grad_() for x in (x3d, x2d, K, weights))
    assert torch.autograd.gradcheck(pose, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def _collinear(B: int, N: int):
    x3d, x2d, K, R, t = _scene(B, N, seed=5)
    s = torch.linspace(0.0, 1.0, N, dtype=F64)
    x3d = (torch.tensor([2.0, 0.5, 3.0], dtype=F64) * s.unsqueeze(-1)).expand(B, N, 3)
    q = (x3d @ R.mT + t.unsqueeze(1)) @ K.mT
    return x3d.contiguous(), q[..., :2] / q[..., 2:], K


def _degenerate_cases():
    x3d, x2d, K, _, _ = _scene(2, 3, seed=6)
    yield "three points", x3d, x2d, K, None
    x3d, x2d, K = _collinear(2, 10)
    yield "collinear", x3d, x2d, K, None
    x3d, x2d, K, _, _ = _scene(2, 10, seed=7)
    yield "all-zero weights", x3d, x2d, K, torch.zeros(2, 10, dtype=F64)
    weights = torch.zeros(2, 10, dtype=F64)
    weights[:, :3] = 1.0
    yield "three positive weights", x3d, x2d, K, weights
    yield "no points", x3d[:, :0], x2d[:, :0], K, None


@pytest.mark.parametrize("case", list(_degenerate_cases()), ids=lambda case: case[0])
def test_degenerate_inputs_are_invalid_and_finite(case) -> None:
    _, x3d, x2d, K, weights = case
    inputs = [x3d, x2d, K] + ([] if weights is None else [weights])
    inputs = [x.clone().requires_grad_() for x in inputs]
    result = solve_epnp(*inputs)
    assert not result.valid.any()
    for value in (result.R, result.t, result.reproj_error):
        assert torch.isfinite(value).all()
    (result.R.sum() + result.t.sum() + result.reproj_error.sum()).backward()
    for x in inputs:
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_degenerate_element_does_not_spoil_the_batch() -> None:
    x3d, x2d, K, R, t = _scene(2, 12, seed=8)
    weights = torch.ones(2, 12, dtype=F64)
    weights[1] = 0.0
    result = solve_epnp(x3d, x2d, K, weights)
    assert result.valid.tolist() == [True, False]
    assert _rotation_error(result.R[:1], R[:1]).item() < 1e-6
    assert torch.equal(result.R[1], torch.eye(3, dtype=F64))


def test_zero_weight_outliers_change_nothing() -> None:
    x3d, x2d, K, _, _ = _scene(3, 30, seed=9, noise_px=1.0)
    outliers = x2d.clone()
    outliers[:, :10] = torch.rand(3, 10, 2, generator=torch.Generator().manual_seed(9),
                                  dtype=F64) * torch.tensor([IMAGE_W, IMAGE_H], dtype=F64)
    weights = torch.ones(3, 30, dtype=F64)
    weights[:, :10] = 0.0
    clean = solve_epnp(x3d[:, 10:], x2d[:, 10:], K)
    masked = solve_epnp(x3d, outliers, K, weights)
    unmasked = solve_epnp(x3d, outliers, K)
    assert masked.valid.all()
    assert torch.allclose(masked.R, clean.R, atol=1e-9)
    assert torch.allclose(masked.t, clean.t, atol=1e-8)
    assert torch.allclose(masked.reproj_error, clean.reproj_error, atol=1e-8)
    assert not torch.allclose(unmasked.t, clean.t, atol=1e-3)  # the outliers do matter


def test_non_finite_points_are_ignored() -> None:
    x3d, x2d, K, _, _ = _scene(2, 12, seed=14, noise_px=1.0)
    broken_x3d, broken_x2d = x3d.clone().requires_grad_(), x2d.clone()
    with torch.no_grad():
        broken_x3d[0, 0, 1] = torch.nan
    broken_x2d[1, 0, 0] = torch.inf
    broken = solve_epnp(broken_x3d, broken_x2d, K)
    clean = solve_epnp(x3d[:, 1:], x2d[:, 1:], K)
    assert broken.valid.all()
    assert torch.allclose(broken.R, clean.R, atol=1e-9)
    broken.t.sum().backward()
    assert torch.isfinite(broken_x3d.grad).all()


def test_float32_inputs_give_float32_outputs() -> None:
    x3d, x2d, K, R, t = _scene(2, 20, seed=10)
    result = solve_epnp(x3d.float(), x2d.float(), K.float())
    assert result.R.dtype == result.t.dtype == result.reproj_error.dtype == torch.float32
    assert result.valid.dtype == torch.bool and result.valid.all()
    assert _rotation_error(result.R.double(), R).max() < 1e-3


def test_bad_inputs_raise() -> None:
    x3d, x2d, K, _, _ = _scene(2, 8, seed=11)
    with pytest.raises(ValueError, match="x3d"):
        solve_epnp(x3d[0], x2d, K)
    with pytest.raises(ValueError, match="x2d"):
        solve_epnp(x3d, x2d[:, :5], K)
    with pytest.raises(ValueError, match="K"):
        solve_epnp(x3d, x2d, K[0])
    with pytest.raises(ValueError, match="non-negative"):
        solve_epnp(x3d, x2d, K, -torch.ones(2, 8, dtype=F64))
