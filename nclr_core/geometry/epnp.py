"""Differentiable, batched, weighted EPnP (Lepetit, Moreno-Noguer & Fua, IJCV 2009).

Solves for the pose `(R, t)` that maps object points into the camera frame,
`x2d ≈ π(K (R x3d + t))`, for a batch of problems at once:

1. four control points: the weighted centroid plus the principal axes scaled by the
   standard deviations; each point gets barycentric coordinates `α` (4 numbers);
2. the weighted `2N × 12` linear system `M x = 0` in normalised image coordinates is reduced
   to `MᵀM` (12 × 12); its four eigenvectors of least eigenvalue span the solution;
3. β candidates for one, two and three null-space vectors from the control-point distance
   constraints, each refined by Gauss–Newton on the four β's (as in the paper);
4. for each candidate: the depth sign fix, then `R, t` by weighted absolute orientation
   (Horn's quaternion form: always a proper rotation, det = +1);
5. the paper's planar variant (three control points on the two largest axes, `2N × 9`,
   β candidates for one and two vectors) runs alongside; of all candidates, the one with the
   least weighted reprojection error is kept, so (near-)coplanar points need no threshold;
6. `refine_steps` unrolled Levenberg–Marquardt-damped Gauss–Newton steps on the pose
   (left se(3) increments) minimising the weighted reprojection error in pixels.

Everything is computed in float64 and is differentiable. `torch.linalg.eigh` has an unstable
backward when eigenvalues (nearly) coincide; `_safe_eigh` replaces `1 / (λᵢ − λⱼ)` by a
Lorentzian-broadened version, exact to ~1e-12 relative for well-separated eigenvalues and
finite for degenerate ones. Every square root, division and projection is floored so that
degenerate inputs (fewer than four usable points, collinear points, zero weights) give finite
values and gradients; they are reported through `valid`, never by NaN.
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_TINY = 1e-30  # floor inside square roots and divisions: keeps gradients finite
_EIG_BROADENING = 1e-9  # eigen-gap broadening in the eigh backward, relative to max |λ|
_AXIS_FLOOR = 1e-12  # control-point axis variance floor, relative to the largest variance
_MIN_POINTS = 4  # fewest points with weight > 0 that define a pose
_COLLINEAR_RATIO = 1e-10  # 2nd / 1st principal variance below this: points are collinear
_MIN_DEPTH = 1e-6  # metres; depth floor inside projections
_SOLVE_DAMPING = 1e-12  # relative ridge on the small β linear systems
_BETA_STEPS = 5  # Gauss–Newton steps on the four β's
_LM_INITIAL = 1e-6  # initial Levenberg–Marquardt damping, relative to diag(JᵀWJ)
_LM_FACTOR = 10.0  # damping divided on an accepted step, multiplied on a rejected one
_ACCEPT_SLACK = 1e-9  # relative cost increase still accepted (rounding noise at convergence)


class EPnPResult(NamedTuple):
    """Batched pose estimate; tensors are in the dtype of `x3d`.

    R: (B, 3, 3) rotation, object frame -> camera frame (identity where not valid).
    t: (B, 3) translation in metres (zero where not valid).
    valid: (B,) bool: at least four points with weight > 0, not collinear, a finite result,
        and every point with weight > 0 in front of the camera.
    reproj_error: (B,) weighted RMS reprojection error in pixels,
        `sqrt(Σ wᵢ ‖π(K(R xᵢ + t)) − uᵢ‖² / Σ wᵢ)`.
    """

    R: Tensor
    t: Tensor
    valid: Tensor
    reproj_error: Tensor


class _SafeEigh(torch.autograd.Function):
    """`torch.linalg.eigh` with a backward that stays finite for repeated eigenvalues."""

    @staticmethod
    def forward(ctx, A: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        lam, V = torch.linalg.eigh(A)
        ctx.save_for_backward(lam, V)
        return lam, V

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lam: Tensor, g_V: Tensor) -> Tensor:  # noqa: D102
        lam, V = ctx.saved_tensors
        # gap[..., j, i] = λ_i − λ_j; dv_i = Σ_j v_j (v_jᵀ dA v_i) / (λ_i − λ_j).
        gap = lam.unsqueeze(-2) - lam.unsqueeze(-1)
        scale = lam.abs().amax(-1, keepdim=True).unsqueeze(-1)
        eps = (_EIG_BROADENING * scale) ** 2 + _TINY
        inv_gap = gap / (gap * gap + eps)
        inner = inv_gap * (V.transpose(-1, -2) @ g_V) + torch.diag_embed(g_lam)
        g_A = V @ inner @ V.transpose(-1, -2)
        return 0.5 * (g_A + g_A.transpose(-1, -2))


def _safe_eigh(A: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric `A` (..., n, n)."""
    return _SafeEigh.apply(A)


def _safe_sqrt(x: Tensor) -> Tensor:
    return torch.sqrt(x.clamp_min(_TINY))


def _skew(v: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix `[v]×`."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        (zero, -z, y, z, zero, -x, -y, x, zero), dim=-1
    ).reshape(*v.shape[:-1], 3, 3)


def _exp_so3(omega: Tensor) -> Tensor:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation; smooth (and finite) at 0."""
    theta2 = (omega * omega).sum(-1)
    small = theta2 < 1e-12
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    W = _skew(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a[..., None, None] * W + b[..., None, None] * (W @ W)


def _quaternion_to_rotation(q: Tensor) -> Tensor:
    """(..., 4) unit quaternion (w, x, y, z) -> (..., 3, 3) rotation."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        (
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ),
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def _ridge_solve(A: Tensor, b: Tensor, relative: float) -> Tensor:
    """Solve `(A + λI) x = b` for symmetric PSD `A` (..., n, n), λ = relative · mean diag."""
    n = A.shape[-1]
    diag_mean = torch.diagonal(A, dim1=-2, dim2=-1).mean(-1).detach()
    lam = (relative * diag_mean + _TINY)[..., None, None]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    return torch.linalg.solve(A + lam * eye, b.unsqueeze(-1)).squeeze(-1)


def _not_worse(cost_new: Tensor, cost: Tensor) -> Tensor:
    """Step acceptance test (bool, detached).

    The slack makes steps at convergence always accepted, so the unrolled iteration stays one
    smooth function there instead of flipping between 'step' and 'no step' with rounding.
    """
    return (cost_new <= cost * (1.0 + _ACCEPT_SLACK) + _TINY).detach()


def _check_inputs(x3d: Tensor, x2d: Tensor, K: Tensor, weights: Tensor | None) -> None:
    if x3d.ndim != 3 or x3d.shape[-1] != 3:
        raise ValueError(f"solve_epnp: x3d must be (B, N, 3), got {tuple(x3d.shape)}")
    B, N = x3d.shape[:2]
    if tuple(x2d.shape) != (B, N, 2):
        raise ValueError(f"solve_epnp: x2d must be ({B}, {N}, 2), got {tuple(x2d.shape)}")
    if tuple(K.shape) != (B, 3, 3):
        raise ValueError(f"solve_epnp: K must be ({B}, 3, 3), got {tuple(K.shape)}")
    if weights is not None:
        if tuple(weights.shape) != (B, N):
            raise ValueError(
                f"solve_epnp: weights must be ({B}, {N}), got {tuple(weights.shape)}"
            )
        if bool((weights < 0).any()):
            raise ValueError("solve_epnp: weights must be non-negative")


def _principal_frame(X: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Weighted centroid c0 (B, 3), centred points (B, N, 3), principal variances (B, 3)
    ascending and principal axes (B, 3, 3) as columns, for X (B, N, 3) and w (B, N) summing
    to 1 (or all zero)."""
    c0 = (w.unsqueeze(-1) * X).sum(1)
    D = X - c0.unsqueeze(1)
    var, axes = _safe_eigh(torch.einsum("bn,bni,bnj->bij", w, D, D))
    return c0, D, var, axes


def _control_points(c0: Tensor, D: Tensor, var: Tensor, axes: Tensor, n_cp: int
                    ) -> tuple[Tensor, Tensor]:
    """Control points and barycentric coordinates.

    n_cp = 4 uses all three principal axes; n_cp = 3 the two largest (the paper's planar
    case: exact when the points are coplanar). Returns Cw (B, n_cp, 3), centroid first, and
    alpha (B, N, n_cp) with `X = alpha @ Cw` (in the plane of the two axes when n_cp = 3).
    """
    floor = _AXIS_FLOOR * var[:, -1:].detach() + _TINY
    sigma = _safe_sqrt(torch.maximum(var, floor))[:, 4 - n_cp:]
    axes = axes[..., 4 - n_cp:]
    Cw = torch.cat((c0.unsqueeze(1), c0.unsqueeze(1) + (axes * sigma.unsqueeze(1)).mT), 1)
    a = (D @ axes) / sigma.unsqueeze(1)
    alpha = torch.cat((1.0 - a.sum(-1, keepdim=True), a), -1)
    return Cw, alpha


def _weighted_mtm(alpha: Tensor, xn: Tensor, w: Tensor) -> Tensor:
    """`MᵀWM` (B, 3k, 3k) of the EPnP system for alpha (B, N, k) barycentric coordinates,
    normalised image coordinates xn (B, N, 2) and weights w (B, N)."""
    one = torch.ones_like(xn[..., 0])
    zero = torch.zeros_like(one)
    e_u = torch.stack((one, zero, -xn[..., 0]), -1)
    e_v = torch.stack((zero, one, -xn[..., 1]), -1)
    e = torch.stack((e_u, e_v), -2)  # (B, N, 2, 3)
    rows = (alpha[..., None, :, None] * e.unsqueeze(-2)).flatten(-2).flatten(1, 2)  # (B, 2N, 3k)
    w_rows = rows * w.repeat_interleave(2, dim=1).unsqueeze(-1)
    return w_rows.mT @ rows


def _beta_candidates(gram: Tensor, rho: Tensor) -> Tensor:
    """Initial β's for 1, 2 and (with six distance pairs) 3 null-space vectors.

    gram: (B, P, k, k) with gram[p, m, n] = dv_m · dv_n for control-point pair p;
    rho: (B, P) squared object-frame distances. Returns (B, C, k), zero-padded, with
    C = 3 when P = 6 (four control points) and C = 2 when P = 3 (three).
    """
    B, P, k = gram.shape[:3]
    pad = gram.new_zeros(B, k)
    # N = 1: closed-form least squares on the distances, β = Σ ‖dv‖‖dc‖ / Σ ‖dv‖².
    g00 = gram[:, :, 0, 0]
    beta1 = (_safe_sqrt(g00) * _safe_sqrt(rho)).sum(-1) / (g00.sum(-1) + _TINY)
    candidates = [torch.cat((beta1.unsqueeze(-1), pad[:, 1:]), -1)]
    # N = 2: linearised unknowns (β11, β12, β22).
    L2 = torch.stack((g00, 2 * gram[:, :, 0, 1], gram[:, :, 1, 1]), -1)
    b2 = _ridge_solve(L2.mT @ L2, (L2.mT @ rho.unsqueeze(-1)).squeeze(-1), _SOLVE_DAMPING)
    sign12 = torch.where(b2[:, 1] >= 0, 1.0, -1.0).to(b2)
    c2 = torch.stack((_safe_sqrt(b2[:, 0]), sign12 * _safe_sqrt(b2[:, 2])), -1)
    candidates.append(torch.cat((c2, pad[:, 2:]), -1))
    if P >= 6:
        # N = 3: linearised unknowns (β11, β12, β13, β22, β23, β33), six equations.
        L3 = torch.stack(
            (
                g00, 2 * gram[:, :, 0, 1], 2 * gram[:, :, 0, 2],
                gram[:, :, 1, 1], 2 * gram[:, :, 1, 2], gram[:, :, 2, 2],
            ),
            -1,
        )
        b3 = _ridge_solve(
            L3.mT @ L3, (L3.mT @ rho.unsqueeze(-1)).squeeze(-1), _SOLVE_DAMPING
        )
        b3_1 = _safe_sqrt(b3[:, 0])
        c3 = torch.stack((b3_1, b3[:, 1] / b3_1, b3[:, 2] / b3_1), -1)
        candidates.append(torch.cat((c3, pad[:, 3:]), -1))
    return torch.stack(candidates, 1)


def _refine_betas(beta: Tensor, gram: Tensor, rho: Tensor) -> Tensor:
    """Gauss–Newton on Σ_p (βᵀ G_p β − ρ_p)² over the four β's.

    beta: (B, C, 4) initial values per candidate; gram (B, 6, 4, 4); rho (B, 6).
    A step is kept only where it lowers the cost. Returns (B, C, 4).
    """
    gram = gram.unsqueeze(1)  # (B, 1, 6, 4, 4)
    rho = rho.unsqueeze(1)  # (B, 1, 6)

    def residual(b: Tensor) -> tuple[Tensor, Tensor]:
        gb = (gram @ b[:, :, None, :, None]).squeeze(-1)  # (B, C, 6, 4)
        return (gb * b.unsqueeze(2)).sum(-1) - rho, gb

    r, gb = residual(beta)
    for _ in range(_BETA_STEPS):
        J = 2.0 * gb  # d r_p / d β = 2 G_p β
        step = _ridge_solve(J.mT @ J, (J.mT @ r.unsqueeze(-1)).squeeze(-1), _SOLVE_DAMPING)
        new = beta - step
        r_new, gb_new = residual(new)
        better = _not_worse((r_new * r_new).sum(-1), (r * r).sum(-1))
        beta = torch.where(better.unsqueeze(-1), new, beta)
        r = torch.where(better.unsqueeze(-1), r_new, r)
        gb = torch.where(better[..., None, None], gb_new, gb)
    return beta


def _absolute_orientation(Cw: Tensor, Cc: Tensor, alpha_cov: Tensor, alpha_mean: Tensor
                          ) -> tuple[Tensor, Tensor]:
    """Weighted R, t with `P ≈ R X + t` over all points, via Horn's quaternion method.

    Cw: (B, 4, 3) object-frame control points; Cc: (B, C, 4, 3) camera-frame control points
    per candidate; alpha_cov: (B, 4, 4) = Σ wᵢ (αᵢ − ᾱ)(αᵢ − ᾱ)ᵀ; alpha_mean: (B, 4) = ᾱ.
    Since xᵢ = αᵢ Cw and pᵢ = αᵢ Cc, the cross-covariance is Cwᵀ A Cc: O(1) per candidate.
    Returns R (B, C, 3, 3) (always det = +1) and t (B, C, 3).
    """
    S = torch.einsum("bpi,bpq,bcqj->bcij", Cw, alpha_cov, Cc)  # Σ w (x − x̄)(p − p̄)ᵀ
    sxx, sxy, sxz = S[..., 0, 0], S[..., 0, 1], S[..., 0, 2]
    syx, syy, syz = S[..., 1, 0], S[..., 1, 1], S[..., 1, 2]
    szx, szy, szz = S[..., 2, 0], S[..., 2, 1], S[..., 2, 2]
    N = torch.stack(
        (
            sxx + syy + szz, syz - szy, szx - sxz, sxy - syx,
            syz - szy, sxx - syy - szz, sxy + syx, szx + sxz,
            szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy,
            sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz,
        ),
        -1,
    ).reshape(*S.shape[:-2], 4, 4)
    _, vecs = _safe_eigh(N)
    R = _quaternion_to_rotation(vecs[..., -1])
    x_mean = alpha_mean.unsqueeze(1) @ Cw  # (B, 1, 3)
    p_mean = (alpha_mean[:, None, None, :] @ Cc).squeeze(-2)  # (B, C, 3)
    t = p_mean - (R @ x_mean.unsqueeze(-1)).squeeze(-1)
    return R, t


def _project(X: Tensor, R: Tensor, t: Tensor, K: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Camera points, pixels and depths.

    X: (..., N, 3) object points; R (..., 3, 3); t (..., 3); K (..., 3, 3).
    Returns p (..., N, 3) camera-frame points, uv (..., N, 2) pixels (depth floored at
    _MIN_DEPTH) and the raw depth (..., N).
    """
    p = X @ R.mT + t.unsqueeze(-2)
    q = p @ K.mT
    depth = q[..., 2]
    uv = q[..., :2] / depth.clamp_min(_MIN_DEPTH).unsqueeze(-1)
    return p, uv, depth


def _weighted_rms(uv: Tensor, x2d: Tensor, w: Tensor) -> Tensor:
    """Weighted RMS pixel error (...,) for uv, x2d (..., N, 2) and w (..., N) summing to 1."""
    return _safe_sqrt((w * ((uv - x2d) ** 2).sum(-1)).sum(-1))


def _gauss_newton(R: Tensor, t: Tensor, X: Tensor, x2d: Tensor, K: Tensor, w: Tensor,
                  steps: int) -> tuple[Tensor, Tensor]:
    """Unrolled damped Gauss–Newton on the pose; left increments `T ← Exp(δ) T`, δ = (ω, v).

    R (B, 3, 3), t (B, 3), X (B, N, 3), x2d (B, N, 2), K (B, 3, 3), w (B, N) summing to 1.
    A step is kept only where it does not raise the weighted error; the damping adapts.
    """
    damping = w.new_full(w.shape[:1], _LM_INITIAL)
    p, uv, depth = _project(X, R, t, K)
    cost = (w * ((uv - x2d) ** 2).sum(-1)).sum(-1)
    for _ in range(steps):
        z = depth.clamp_min(_MIN_DEPTH)[..., None, None]
        # d uv / d p = (K[:2] − uv ⊗ K[2]) / z ; d p / d δ = [−[p]×, I]
        J_p = (K[:, None, :2, :] - uv.unsqueeze(-1) * K[:, None, 2:3, :]) / z  # (B, N, 2, 3)
        # row a of J_p times −[p]× is p × a
        J_rot = torch.linalg.cross(p.unsqueeze(-2).expand_as(J_p), J_p, dim=-1)
        J = torch.cat((J_rot, J_p), -1).flatten(1, 2)  # (B, 2N, 6)
        w_J = J * w.repeat_interleave(2, dim=1).unsqueeze(-1)
        H = w_J.mT @ J
        g = (w_J.mT @ (uv - x2d).flatten(1, 2).unsqueeze(-1)).squeeze(-1)
        diag = torch.diagonal(H, dim1=-2, dim2=-1).detach()
        H_damped = H + torch.diag_embed(damping.unsqueeze(-1) * diag + _TINY)
        delta = -torch.linalg.solve(H_damped, g.unsqueeze(-1)).squeeze(-1)
        dR = _exp_so3(delta[:, :3])
        R_new = dR @ R
        t_new = (dR @ t.unsqueeze(-1)).squeeze(-1) + delta[:, 3:]
        p_new, uv_new, depth_new = _project(X, R_new, t_new, K)
        cost_new = (w * ((uv_new - x2d) ** 2).sum(-1)).sum(-1)
        better = _not_worse(cost_new, cost)
        damping = torch.where(better, damping / _LM_FACTOR, damping * _LM_FACTOR)
        R = torch.where(better[:, None, None], R_new, R)
        t = torch.where(better[:, None], t_new, t)
        p = torch.where(better[:, None, None], p_new, p)
        uv = torch.where(better[:, None, None], uv_new, uv)
        depth = torch.where(better[:, None], depth_new, depth)
        cost = torch.where(better, cost_new, cost)
    return R, t


def _pose_candidates(c0: Tensor, D: Tensor, var: Tensor, axes: Tensor, xn: Tensor, w: Tensor,
                     n_cp: int) -> tuple[Tensor, Tensor]:
    """Closed-form EPnP pose candidates with n_cp (4, or 3 for the planar case) control points.

    c0, D, var, axes: from `_principal_frame`; xn: (B, N, 2) normalised image coordinates;
    w: (B, N) weights summing to 1. Returns R (B, C, 3, 3) and t (B, C, 3).
    """
    Cw, alpha = _control_points(c0, D, var, axes, n_cp)
    _, vecs = _safe_eigh(_weighted_mtm(alpha, xn, w))
    k = n_cp  # null-space vectors used: 4 in the general case, 3 in the planar one
    null = vecs[..., :k].mT.reshape(-1, k, n_cp, 3)  # (B, vector, control point, xyz)
    pair_i, pair_j = (list(ix) for ix in zip(*combinations(range(n_cp), 2), strict=True))
    dv = null[:, :, pair_i] - null[:, :, pair_j]  # (B, k, P, 3)
    gram = torch.einsum("bmpx,bnpx->bpmn", dv, dv)
    rho = ((Cw[:, pair_i] - Cw[:, pair_j]) ** 2).sum(-1)
    betas = _refine_betas(_beta_candidates(gram, rho), gram, rho)  # (B, C, k)
    Cc = torch.einsum("bcm,bmpx->bcpx", betas, null)  # (B, C, n_cp, 3)

    alpha_mean = (w.unsqueeze(-1) * alpha).sum(1)  # (B, n_cp)
    centred = alpha - alpha_mean.unsqueeze(1)
    alpha_cov = torch.einsum("bn,bnp,bnq->bpq", w, centred, centred)
    mean_depth = (alpha_mean[:, None, None, :] @ Cc[..., 2:]).squeeze(-1).squeeze(-1)
    sign = torch.where(mean_depth < 0, -1.0, 1.0).to(Cc).detach()
    return _absolute_orientation(Cw, Cc * sign[..., None, None], alpha_cov, alpha_mean)


def solve_epnp(x3d: Tensor, x2d: Tensor, K: Tensor, weights: Tensor | None = None,
               refine_steps: int = 5) -> EPnPResult:
    """Weighted EPnP + unrolled Gauss–Newton, batched and differentiable.

    Args:
        x3d: (B, N, 3) points in the object frame (metres), e.g. LiDAR points.
        x2d: (B, N, 2) their pixels (u = column, v = row).
        K: (B, 3, 3) camera intrinsics.
        weights: (B, N) non-negative per-point weights; None means all ones. Points with
            weight 0, or with a non-finite coordinate, have no influence at all.
        refine_steps: unrolled Gauss–Newton steps on the pose after the closed form.

    Returns:
        EPnPResult with R (B, 3, 3) and t (B, 3) such that `x2d ≈ π(K (R x3d + t))`,
        valid (B,) and reproj_error (B,) — the weighted RMS reprojection error in pixels.
        Gradients flow to x3d, x2d, K and weights through the closed form and the refinement.

    Limitation: with exactly four non-coplanar points (a four-dimensional null space) the
    paper's N = 4 relinearisation is not implemented and the closed form misses in about one
    random problem in ten; that shows as a large reproj_error, not as valid=False.
    """
    _check_inputs(x3d, x2d, K, weights)
    if refine_steps < 0:
        raise ValueError(f"solve_epnp: refine_steps must be >= 0, got {refine_steps}")
    out_dtype = x3d.dtype
    X = x3d.to(torch.float64)
    uv = x2d.to(torch.float64)
    Kd = K.to(torch.float64)
    w = torch.ones_like(X[..., 0]) if weights is None else weights.to(torch.float64)
    # A point with a non-finite coordinate is ignored, as if its weight were zero.
    finite = torch.isfinite(X).all(-1) & torch.isfinite(uv).all(-1) & torch.isfinite(w)
    X = torch.where(finite.unsqueeze(-1), X, torch.zeros_like(X))
    uv = torch.where(finite.unsqueeze(-1), uv, torch.zeros_like(uv))
    w = torch.where(finite, w, torch.zeros_like(w))
    w_sum = w.sum(-1, keepdim=True)
    wn = w / w_sum.clamp_min(_TINY)

    c0, D, var, axes = _principal_frame(X, wn)
    h = torch.cat((uv, torch.ones_like(uv[..., :1])), -1) @ torch.linalg.inv(Kd).mT
    xn = h[..., :2] / h[..., 2:]
    # General (4 control points) and planar (3) candidates compete on reprojection error.
    poses = [_pose_candidates(c0, D, var, axes, xn, wn, n_cp) for n_cp in (4, 3)]
    R_c = torch.cat([pose[0] for pose in poses], 1)
    t_c = torch.cat([pose[1] for pose in poses], 1)

    _, uv_c, _ = _project(X.unsqueeze(1), R_c, t_c, Kd.unsqueeze(1))
    err_c = _weighted_rms(uv_c, uv.unsqueeze(1), wn.unsqueeze(1))
    best = torch.nan_to_num(err_c.detach(), nan=torch.inf).argmin(-1)
    rows = torch.arange(X.shape[0], device=X.device)
    R, t = _gauss_newton(R_c[rows, best], t_c[rows, best], X, uv, Kd, wn, refine_steps)

    _, uv_f, depth = _project(X, R, t, Kd)
    err = _weighted_rms(uv_f, uv, wn)
    usable = w > 0
    valid = (
        (usable.sum(-1) >= _MIN_POINTS)
        & (var[:, 1] > _COLLINEAR_RATIO * var[:, 2])
        & ((depth > 0) | ~usable).all(-1)
        & torch.isfinite(err)
        & torch.isfinite(R).flatten(1).all(-1)
        & torch.isfinite(t).all(-1)
    )
    eye = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(R)
    R = torch.where(valid[:, None, None], R, eye)
    t = torch.where(valid[:, None], t, torch.zeros_like(t))
    err = torch.nan_to_num(err, nan=0.0, posinf=0.0)
    return EPnPResult(R.to(out_dtype), t.to(out_dtype), valid, err.to(out_dtype))
