"""The `joint` stage: one robust pose over the pooled matches of a window of frames.

Frames of one camera and LiDAR share `T_cam_lidar`, so their `FrameMatches` are pooled:
1. consensus: USAC RANSAC-PnP on the pool (at most `consensus_max_points` drawn from it);
   every match whose residual under that pose exceeds `consensus_threshold_px` is dropped
   as a gross outlier;
2. Levenberg–Marquardt on the kept matches with a robust kernel (Cauchy or Huber) on the
   residual whitened per image axis: learned matches are less precise along u than along v,
   so σ_u and σ_v are estimated apart (1.4826 · MAD), and re-estimated once after the first
   convergence over the matches within `inlier_sigmas`;
3. covariance of δ = (ω, ρ) (`nclr_core.online.pose`): the M-estimator sandwich H⁻¹ B H⁻¹,
   H the Hessian of the robust cost, B the spread of the per-match scores summed over
   clusters of neighbouring matches (image tiles of `cluster_tile_px` within a frame):
   learned matches err together over an object (measured: correlation 0.66 within 10 px,
   0.3 at 25–50 px, 0.1 at 100–200 px), so treating them as independent would understate
   the spread many times over; plus the pose errors that a frame's matches share
   (regional biases: invisible in the frame's residuals, independent between frames) and
   that every frame shares (a scene-long bias, never averaged away), both with σ measured
   for the matcher on a calibration drive; with enough frames, an axis whose frames
   disagree more than that is inflated to their spread;
4. a named warning for every camera axis whose σ exceeds the settings' bound.

The same solve on a single frame is the `guided` stage's per-frame pose.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from nclr_core.geometry.pnp_ransac import reprojection_errors, solve_pnp_ransac
from nclr_core.geometry.se3 import make_transform
from nclr_core.online.matches import FrameMatches
from nclr_core.online.pose import PoseEstimate

KERNELS = ("cauchy", "huber")
AXES = ("x (right)", "y (down)", "z (optical axis)")
MAD_TO_SIGMA = 1.4826
_LM_INITIAL = 1e-4  # initial damping, relative to diag(A)
_LM_FACTOR = 10.0
_LM_MAX_DAMPING = 1e8
_STEP_TOL = 1e-9  # rad / m: a step this small ends the iteration
_COST_TOL = 1e-8  # relative cost decrease this small ends the iteration
_SCALE_ROUNDS = 2  # LM to convergence, re-gate and re-estimate σ_u, σ_v, again
_MIN_SIGMA_PX = 1e-3


@dataclass(frozen=True)
class JointSettings:
    """Robust joint solve over pooled matches.

    Pixel quantities are in matching pixels (`FrameMatches.pixel_scale` input pixels each:
    network pixels for the network's matches), so one setting fits any camera.

    consensus_threshold_px: RANSAC threshold and gross-outlier gate (about 3 match σ).
    consensus_max_points: RANSAC draws its hypotheses on at most this many matches.
    ransac_iterations, ransac_confidence, seed: RANSAC budget, early stop, random state.
    kernel: "cauchy" | "huber"; kernel_scale: its scale in units of the whitened residual
        (2.3849 and 1.345: 95 % efficiency under Gaussian errors).
    max_iterations: LM iterations per round.
    min_inliers: fewer matches kept, or fewer inliers after the solve -> not solved.
    inlier_sigmas: a match whose whitened residual is below this counts as an inlier.
    cluster_tile_px: side of the image tiles whose matches count as one correlated cluster.
    frame_sigma_rot_deg, frame_sigma_trans_m: σ per camera axis of the pose error that the
        matches of one frame share (regional match biases: invisible in the frame's own
        residuals, independent from frame to frame); the matcher's, measured on a
        calibration drive.
    common_sigma_rot_deg, common_sigma_trans_m: σ per camera axis of the pose error shared
        by every frame of a window (the matcher's bias over a scene, which no window length
        averages away); measured likewise. The defaults are models/nclr_synthetic.pt's: the
        guided stage's errors on four synthetic drives of seed 5 (`make_synthetic.py`, 240
        frames; single frames and 24-frame windows from priors 10 deg / 25 cm away), split
        into a part that averages over frames and one that does not.
    min_frames_for_spread: with at least this many frames, the spread of the frames' own
        scores (frame-clustered sandwich) may inflate an axis whose σ it finds larger.
    warn_sigma_rot_deg, warn_sigma_trans_m: a camera axis whose σ exceeds these is named
        in a "poorly constrained" warning.
    """

    consensus_threshold_px: float = 12.0
    consensus_max_points: int = 4000
    ransac_iterations: int = 1000
    ransac_confidence: float = 0.999
    seed: int = 0
    kernel: str = "cauchy"
    kernel_scale: float = 2.3849
    max_iterations: int = 30
    min_inliers: int = 30
    inlier_sigmas: float = 3.0
    cluster_tile_px: float = 32.0
    frame_sigma_rot_deg: tuple[float, float, float] = (0.066, 0.645, 0.051)
    frame_sigma_trans_m: tuple[float, float, float] = (0.13, 0.02, 0.125)
    common_sigma_rot_deg: tuple[float, float, float] = (0.036, 0.255, 0.077)
    common_sigma_trans_m: tuple[float, float, float] = (0.066, 0.01, 0.092)
    min_frames_for_spread: int = 4
    warn_sigma_rot_deg: float = 0.1
    warn_sigma_trans_m: float = 0.03

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        positive = ("consensus_threshold_px", "kernel_scale", "inlier_sigmas",
                    "cluster_tile_px", "warn_sigma_rot_deg", "warn_sigma_trans_m")
        bad = [name for name in positive if not getattr(self, name) > 0]
        if bad:
            raise ValueError(f"joint settings {bad} must be positive")
        for name in ("frame_sigma_rot_deg", "frame_sigma_trans_m", "common_sigma_rot_deg",
                     "common_sigma_trans_m"):
            value = getattr(self, name)
            if len(value) != 3 or min(value) < 0:
                raise ValueError(f"{name} must be three values (x, y, z) >= 0, got {value}")
        if min(self.consensus_max_points, self.max_iterations) < 1 or self.min_inliers < 6:
            raise ValueError("consensus_max_points, max_iterations >= 1 and min_inliers >= 6")


@dataclass(frozen=True)
class JointResult:
    """The joint pose of a window, or why there is none.

    solved: a pose was found and passed the checks; reason: why not ("" when solved).
    estimate: the pose and the (6, 6) covariance of δ = (ω, ρ) (None when not solved).
    inlier_masks: per pooled frame, in input order, (K_f,) bool over its matches (all False
        when not solved).
    rms_px: RMS residual norm over the inliers, input px.
    sigma_px: (σ_u, σ_v) robust residual scales, input px (NaN when not solved).
    design_effect: trace of the clustered covariance over that of independent matches.
    warnings: one line per poorly constrained camera axis.
    """

    solved: bool
    reason: str
    estimate: PoseEstimate | None
    inlier_masks: tuple[np.ndarray, ...]
    rms_px: float
    sigma_px: tuple[float, float]
    design_effect: float
    warnings: tuple[str, ...]

    @property
    def inliers_per_frame(self) -> tuple[int, ...]:
        return tuple(int(mask.sum()) for mask in self.inlier_masks)


@dataclass(frozen=True)
class _Pool:
    """The concatenated matches: x (n, 3), uv (n, 2), v (n,) prior weights, frame (n,),
    the shared K and pixel scale (input pixels per matching pixel)."""

    x: np.ndarray
    uv: np.ndarray
    v: np.ndarray
    frame: np.ndarray
    K: np.ndarray
    scale: float

    def subset(self, keep: np.ndarray) -> _Pool:
        return _Pool(self.x[keep], self.uv[keep], self.v[keep], self.frame[keep], self.K,
                     self.scale)


def _pool(frames: Sequence[FrameMatches]) -> _Pool:
    if len(frames) == 0:
        raise ValueError("solve_joint needs at least one FrameMatches")
    K, scale = frames[0].K, frames[0].pixel_scale
    if any(not np.allclose(f.K, K) or not np.isclose(f.pixel_scale, scale) for f in frames):
        raise ValueError("solve_joint pools frames of one camera: every K and pixel_scale "
                         "must be equal")
    frame = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(frames)])
    return _Pool(np.concatenate([f.points for f in frames]),
                 np.concatenate([f.pixels for f in frames]),
                 np.concatenate([f.weights for f in frames]), frame, K, float(scale))


def _residuals_and_jacobian(R: np.ndarray, t: np.ndarray, pool: _Pool
                            ) -> tuple[np.ndarray, np.ndarray]:
    """r (n, 2) = π(K (R x + t)) − uv and J (n, 2, 6) = ∂r/∂(ω, ρ) for `[exp(ω×) R | t + ρ]`."""
    q = pool.x @ R.T
    p = q + t
    z = p[:, 2]
    proj = (p @ pool.K.T)[:, :2] / z[:, None]
    # ∂π/∂p = (K[:2] − π ⊗ K[2]) / z ; ∂p/∂ω = −[q]×, ∂p/∂ρ = I
    d_pi = (pool.K[None, :2, :] - proj[:, :, None] * pool.K[None, 2:3, :]) / z[:, None, None]
    # row a of d_pi times −[q]× is q × a
    qx, qy, qz = (q[:, None, k] for k in range(3))
    ax, ay, az = (d_pi[:, :, k] for k in range(3))
    d_rot = np.stack((qy * az - qz * ay, qz * ax - qx * az, qx * ay - qy * ax), axis=2)
    return proj - pool.uv, np.concatenate((d_rot, d_pi), axis=2)


def _kernel(s: np.ndarray, c: float, kind: str
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust cost φ(s), IRLS weight w = 2 φ'(s) and its derivative w'(s), for squared
    whitened residual norms s (n,) (φ(s) = s / 2 for small s, so w = 1 there)."""
    if kind == "cauchy":
        w = 1.0 / (1.0 + s / (c * c))
        return 0.5 * c * c * np.log1p(s / (c * c)), w, -w * w / (c * c)
    norm = np.maximum(np.sqrt(s), 1e-300)
    inside = norm <= c
    return (np.where(inside, 0.5 * s, c * norm - 0.5 * c * c),
            np.where(inside, 1.0, c / norm), np.where(inside, 0.0, -0.5 * c / norm**3))


def _robust_scales(r: np.ndarray, previous: np.ndarray | None, cut: float) -> np.ndarray:
    """(σ_u, σ_v): 1.4826 · MAD of each residual component of r (n, 2), over the matches
    within `cut` whitened by the `previous` scales when given (outliers inflate a MAD)."""
    if previous is not None:
        inside = np.sqrt(((r / previous) ** 2).sum(1)) < cut
        r = r[inside] if inside.sum() >= 6 else r
    mad = np.median(np.abs(r - np.median(r, axis=0)), axis=0)
    return np.maximum(MAD_TO_SIGMA * mad, _MIN_SIGMA_PX)


def _levenberg_marquardt(R: np.ndarray, t: np.ndarray, pool: _Pool, sigma: np.ndarray,
                         s: JointSettings) -> tuple[np.ndarray, np.ndarray]:
    """Minimise Σ vᵢ φ(‖rᵢ / σ‖²) over the pose from (R, t); steps that raise the cost are
    rejected and the damping grows."""
    def evaluate(R_: np.ndarray, t_: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        r, J = _residuals_and_jacobian(R_, t_, pool)
        r, J = r / sigma, J / sigma[None, :, None]
        cost, w, _ = _kernel((r * r).sum(1), s.kernel_scale, s.kernel)
        root = np.sqrt(pool.v * w)[:, None]
        return float((pool.v * cost).sum()), r * root, J * root[:, :, None]

    value, wr, wJ = evaluate(R, t)
    damping = _LM_INITIAL
    for _ in range(s.max_iterations):
        rows = wJ.reshape(-1, 6)
        A = rows.T @ rows
        g = rows.T @ wr.reshape(-1)
        step = -np.linalg.solve(A + damping * np.diag(np.diag(A)) + 1e-12 * np.eye(6), g)
        R_new = Rotation.from_rotvec(step[:3]).as_matrix() @ R
        t_new = t + step[3:]
        new_value, wr_new, wJ_new = evaluate(R_new, t_new)
        if new_value <= value:
            converged = np.abs(step).max() < _STEP_TOL or value - new_value <= _COST_TOL * value
            R, t, value, wr, wJ = R_new, t_new, new_value, wr_new, wJ_new
            damping = max(damping / _LM_FACTOR, 1e-12)
            if converged:
                break
        else:
            damping *= _LM_FACTOR
            if damping > _LM_MAX_DAMPING:
                break
    return R, t


def _clusters(pool: _Pool, tile_px: float) -> np.ndarray:
    """(n,) cluster id of each match: its frame and its image tile (tile_px matching px)."""
    tiles = np.floor(pool.uv / (tile_px * pool.scale)).astype(np.int64)
    tiles -= tiles.min(0)
    span = tiles.max(0) + 1
    keys = (pool.frame * span[1] + tiles[:, 1]) * span[0] + tiles[:, 0]
    return np.unique(keys, return_inverse=True)[1]


def _covariance(J: np.ndarray, r: np.ndarray, pool: _Pool, s: JointSettings
                ) -> tuple[np.ndarray, float] | None:
    """(6, 6) cluster-robust sandwich covariance of δ and the design effect, from whitened
    residuals r (n, 2) and Jacobians J (n, 2, 6) at the solution; None when the matches do
    not constrain all six directions.

    H = Σ vᵢ (wᵢ JᵢᵀJᵢ + 2 wᵢ' gᵢ gᵢᵀ), gᵢ = Jᵢᵀ rᵢ (Gauss–Newton with the kernel's
    curvature; Gauss–Newton alone if that is not positive definite); scores ψᵢ = vᵢ wᵢ gᵢ
    summed per cluster c (`_clusters`): B = Σ_c ψ_c ψ_cᵀ · G / (G − 1) · (n − 1) / (n − 6)
    (the usual small-sample correction for G clusters). For independent matches each match
    is its own cluster and this is the Gauss–Newton inverse times the robust residual
    variance.
    """
    _, w, dw = _kernel((r * r).sum(1), s.kernel_scale, s.kernel)
    g = np.einsum("nki,nk->ni", J, r)
    A = np.einsum("n,nki,nkj->ij", pool.v * w, J, J)
    H = A + 2.0 * np.einsum("n,ni,nj->ij", pool.v * dw, g, g)
    scale = np.abs(np.diag(A)).max()
    if not np.all(np.linalg.eigvalsh(H) > 1e-12 * scale):
        H = A
    if not np.all(np.linalg.eigvalsh(H) > 1e-12 * scale):
        return None
    H_inv = np.linalg.inv(H)
    scores = (pool.v * w)[:, None] * g
    n = len(r)
    correction = (n - 1) / max(n - 6, 1)
    independent = H_inv @ (scores.T @ scores) @ H_inv * correction
    cluster = _clusters(pool, s.cluster_tile_px)
    count = int(cluster.max()) + 1
    summed = np.zeros((count, 6))
    np.add.at(summed, cluster, scores)
    clustered = H_inv @ (summed.T @ summed) @ H_inv * correction * count / max(count - 1, 1)
    design = float(np.trace(clustered) / max(np.trace(independent), 1e-300))
    return clustered, design


def _pose_floor(pool: _Pool, weights: np.ndarray, s: JointSettings) -> np.ndarray:
    """(6, 6) covariance of the frames' shared pose errors: each frame's (independent, σ
    `frame_sigma_*`) enters with its share of the solve's weight, a_f = Σ_{i∈f} wᵢ / Σ wᵢ,
    so F equal frames divide its variance by F; the window's shared one (`common_sigma_*`)
    does not average away."""
    frame_var = np.square(np.r_[np.radians(s.frame_sigma_rot_deg), s.frame_sigma_trans_m])
    common_var = np.square(np.r_[np.radians(s.common_sigma_rot_deg), s.common_sigma_trans_m])
    share = np.bincount(pool.frame, weights=weights) / max(weights.sum(), 1e-300)
    return np.diag(frame_var * float(np.sum(share**2)) + common_var)


def _frame_spread(J: np.ndarray, r: np.ndarray, pool: _Pool, covariance: np.ndarray,
                  s: JointSettings) -> np.ndarray:
    """`covariance` with each axis inflated where the frames' own scores spread more than
    it allows: the frame-clustered sandwich H⁻¹ (Σ_f ψ_f ψ_fᵀ) H⁻¹ · F / (F − 1) estimates
    the frame-to-frame part from the window itself (few frames: noisy, so it only raises)."""
    frames = np.unique(pool.frame)
    if len(frames) < s.min_frames_for_spread:
        return covariance
    _, w, _ = _kernel((r * r).sum(1), s.kernel_scale, s.kernel)
    scores = (pool.v * w)[:, None] * np.einsum("nki,nk->ni", J, r)
    summed = np.zeros((int(pool.frame.max()) + 1, 6))
    np.add.at(summed, pool.frame, scores)
    A_inv = np.linalg.inv(np.einsum("n,nki,nkj->ij", pool.v * w, J, J))
    spread = A_inv @ (summed.T @ summed) @ A_inv * len(frames) / (len(frames) - 1)
    gain = np.sqrt(np.maximum(np.diag(spread) / np.maximum(np.diag(covariance), 1e-300), 1.0))
    return covariance * np.outer(gain, gain)


def _warnings(estimate: PoseEstimate, s: JointSettings) -> tuple[str, ...]:
    lines = []
    for axis, sigma in zip(AXES, estimate.sigma_rot_deg, strict=True):
        if sigma > s.warn_sigma_rot_deg:
            lines.append(f"rotation about the camera {axis} poorly constrained: "
                         f"sigma {sigma:.3f} deg > {s.warn_sigma_rot_deg} deg")
    for axis, sigma in zip(AXES, estimate.sigma_trans_m, strict=True):
        if sigma > s.warn_sigma_trans_m:
            lines.append(f"translation along the camera {axis} poorly constrained: "
                         f"sigma {sigma:.3f} m > {s.warn_sigma_trans_m} m")
    return tuple(lines)


def _consensus(pool: _Pool, s: JointSettings) -> tuple[np.ndarray, np.ndarray] | None:
    """RANSAC pose (R, t) on at most consensus_max_points usable matches, or None."""
    usable = np.flatnonzero(pool.v > 0)
    if len(usable) > s.consensus_max_points:
        rng = np.random.default_rng(s.seed)
        usable = np.sort(rng.choice(usable, s.consensus_max_points, replace=False))
    result = solve_pnp_ransac(pool.x[usable], pool.uv[usable], pool.K,
                              s.consensus_threshold_px * pool.scale, s.ransac_iterations,
                              s.ransac_confidence, s.seed)
    return (result.R, result.t) if result.valid else None


def solve_joint(frames: Sequence[FrameMatches], settings: JointSettings | None = None,
                T_start: np.ndarray | None = None) -> JointResult:
    """One robust `T_cam_lidar` over the pooled matches of `frames` (see the module doc).

    With `T_start` (4, 4), a pose already close (the running estimate, or the previous
    round of the guided stage), the consensus is the gate under it; RANSAC runs only when
    that keeps fewer than `min_inliers` matches or half of them.
    """
    s = settings or JointSettings()
    pool = _pool(frames)
    none = tuple(np.zeros(len(f), dtype=bool) for f in frames)

    def failed(reason: str) -> JointResult:
        return JointResult(False, reason, None, none, math.nan, (math.nan, math.nan),
                           math.nan, ())

    usable = int((pool.v > 0).sum())
    if usable < s.min_inliers:
        return failed(f"only {usable} usable matches, fewer than min_inliers={s.min_inliers}")
    gate = s.consensus_threshold_px * pool.scale
    kept = np.zeros(len(pool.x), dtype=bool)
    if T_start is not None:
        R, t = np.asarray(T_start, np.float64)[:3, :3], np.asarray(T_start, np.float64)[:3, 3]
        kept = (pool.v > 0) & (reprojection_errors(pool.x, pool.uv, pool.K, R, t) < gate)
    if kept.sum() < max(s.min_inliers, 0.5 * usable):
        start = _consensus(pool, s)
        if start is None:
            return failed("RANSAC found no consensus on the pooled matches")
        R, t = start
        kept = (pool.v > 0) & (reprojection_errors(pool.x, pool.uv, pool.K, R, t) < gate)
    sigma = None
    for _ in range(_SCALE_ROUNDS):  # the gate and σ re-evaluated at the last solution
        if kept.sum() < s.min_inliers:
            return failed(f"{int(kept.sum())} matches within the consensus threshold, fewer "
                          f"than min_inliers={s.min_inliers}")
        sub = pool.subset(kept)
        sigma = _robust_scales(_residuals_and_jacobian(R, t, sub)[0], sigma, s.inlier_sigmas)
        R, t = _levenberg_marquardt(R, t, sub, sigma, s)
        kept = (pool.v > 0) & (reprojection_errors(pool.x, pool.uv, pool.K, R, t) < gate)
    if kept.sum() < s.min_inliers:
        return failed(f"{int(kept.sum())} matches within the consensus threshold of the "
                      f"solution, fewer than min_inliers={s.min_inliers}")
    sub = pool.subset(kept)
    r, J = _residuals_and_jacobian(R, t, sub)
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(J)) and np.all(np.isfinite(t))):
        return failed("the solve left the camera's front (non-finite residuals)")
    r, J = r / sigma, J / sigma[None, :, None]
    spread = _covariance(J, r, sub, s)
    if spread is None:
        return failed("the pooled matches do not constrain all six pose directions")
    covariance, design = spread
    _, w, _ = _kernel((r * r).sum(1), s.kernel_scale, s.kernel)
    covariance = _frame_spread(J, r, sub, covariance + _pose_floor(sub, sub.v * w, s), s)
    inlier = np.zeros(len(pool.x), dtype=bool)
    inlier[kept] = np.sqrt((r * r).sum(1)) < s.inlier_sigmas
    if inlier.sum() < s.min_inliers:
        return failed(f"{int(inlier.sum())} inliers after the robust solve, fewer than "
                      f"min_inliers={s.min_inliers}")
    masks = tuple(inlier[pool.frame == f] for f in range(len(frames)))
    norms = np.linalg.norm(r * sigma, axis=1)
    rms = float(np.sqrt(np.mean(norms[inlier[kept]] ** 2)))
    estimate = PoseEstimate(make_transform(R, t), 0.5 * (covariance + covariance.T))
    return JointResult(True, "", estimate, masks, rms,
                       (float(sigma[0]), float(sigma[1])), design, _warnings(estimate, s))
