"""EPnP and robust PnP against OpenCV, same problems, same run.

Problems: a KITTI-like camera (1242 x 375, f = 720 px), points drawn at random pixels and
depths of 4-40 m, expressed in an object frame with a random rotation and a translation of
up to 2 m; the observed pixels get Gaussian noise of 0, 1 or 3 px. Accuracy is the median
over the problems of the geodesic rotation error (degrees) and the translation error (m).
Throughput: one batch of 64 problems, ours in one batched call, OpenCV in a Python loop.
RANSAC: a share of the correspondences replaced by uniformly random pixels; the inference
solve `nclr_core.geometry.pnp_ransac.solve_pnp_ransac` (OpenCV USAC with graph-cut local
optimisation, then Levenberg–Marquardt on the inliers; it replaced a RANSAC over our batched
EPnP, 15x slower at 30 % outliers) against OpenCV's classic `solvePnPRansac` (EPnP) and its
MAGSAC++ variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from benchmarks.timing import measure, now
from nclr_core.geometry.epnp import solve_epnp
from nclr_core.geometry.metrics import rre_geodesic_deg, rte_m
from nclr_core.geometry.pnp_ransac import solve_pnp_ransac

WIDTH, HEIGHT, FOCAL = 1242, 375, 720.0
DEPTH_RANGE_M = (4.0, 40.0)
MAX_OFFSET_M = 2.0
RANSAC_THRESHOLD_PX = 8.0
RANSAC_ITERATIONS = 1000
RANSAC_CONFIDENCE = 0.999
RANSAC_NOISE_PX = 1.0
THROUGHPUT_BATCH = 64


@dataclass(frozen=True)
class Problems:
    """B PnP problems with N correspondences each (float64 NumPy).

    x3d (B, N, 3) object-frame points; x2d (B, N, 2) observed pixels; K (3, 3);
    R (B, 3, 3), t (B, 3): the true object -> camera pose.
    """

    x3d: np.ndarray
    x2d: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray


def intrinsics() -> np.ndarray:
    """(3, 3) K of the benchmark camera (principal point at the image centre)."""
    return np.array([[FOCAL, 0.0, (WIDTH - 1) / 2], [0.0, FOCAL, (HEIGHT - 1) / 2],
                     [0.0, 0.0, 1.0]])


def make_problems(batch: int, n: int, noise_px: float, seed: int,
                  outlier_ratio: float = 0.0) -> Problems:
    """Random problems; `outlier_ratio` of each problem's pixels replaced by random pixels."""
    rng = np.random.default_rng(seed)
    K = intrinsics()
    uv = rng.uniform((0.0, 0.0), (WIDTH - 1.0, HEIGHT - 1.0), (batch, n, 2))
    depth = rng.uniform(*DEPTH_RANGE_M, (batch, n, 1))
    rays = np.concatenate((uv, np.ones((batch, n, 1))), -1) @ np.linalg.inv(K).T
    x_cam = rays * depth
    R = Rotation.random(batch, random_state=rng.integers(2**31)).as_matrix()
    t = rng.uniform(-MAX_OFFSET_M, MAX_OFFSET_M, (batch, 3))
    x3d = np.einsum("bji,bnj->bni", R, x_cam - t[:, None, :])  # R^T (x_cam - t)
    x2d = uv + rng.normal(0.0, noise_px, uv.shape) if noise_px > 0 else uv.copy()
    n_out = int(round(outlier_ratio * n))
    if n_out:
        for b in range(batch):
            idx = rng.choice(n, n_out, replace=False)
            x2d[b, idx] = rng.uniform((0.0, 0.0), (WIDTH - 1.0, HEIGHT - 1.0), (n_out, 2))
    return Problems(x3d, x2d, K, R, t)


def ours_batched(p: Problems) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, 3), (B, 3) from one batched `solve_epnp` call."""
    b = len(p.x3d)
    K = torch.from_numpy(p.K).expand(b, 3, 3)
    with torch.no_grad():
        result = solve_epnp(torch.from_numpy(p.x3d), torch.from_numpy(p.x2d), K)
    return result.R.numpy(), result.t.numpy()


def opencv_loop(p: Problems, iterative: bool) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, 3), (B, 3): `cv2.solvePnP` EPNP per problem, then ITERATIVE from it if asked."""
    Rs, ts = [], []
    for x3d, x2d in zip(p.x3d, p.x2d, strict=True):
        ok, rvec, tvec = cv2.solvePnP(x3d, x2d, p.K, None, flags=cv2.SOLVEPNP_EPNP)
        if iterative and ok:
            ok, rvec, tvec = cv2.solvePnP(x3d, x2d, p.K, None, rvec, tvec,
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        Rs.append(cv2.Rodrigues(rvec)[0] if ok else np.eye(3))
        ts.append(tvec.reshape(3) if ok else np.zeros(3))
    return np.stack(Rs), np.stack(ts)


def _errors(p: Problems, R: np.ndarray, t: np.ndarray) -> dict[str, float]:
    return {"rotation_error_deg_median": float(np.median(rre_geodesic_deg(R, p.R))),
            "translation_error_m_median": float(np.median(rte_m(t, p.t)))}


SOLVERS = {
    "ours_epnp_gn": ours_batched,
    "opencv_epnp": lambda p: opencv_loop(p, iterative=False),
    "opencv_epnp_iterative": lambda p: opencv_loop(p, iterative=True),
}


def accuracy(sizes: tuple[int, ...], noises: tuple[float, ...], problems: int, seed: int
             ) -> list[dict[str, Any]]:
    """Median errors of each solver per (N, noise)."""
    rows = []
    for n in sizes:
        for noise in noises:
            p = make_problems(problems, n, noise, seed)
            row: dict[str, Any] = {"n": n, "noise_px": noise, "problems": problems}
            for name, solver in SOLVERS.items():
                row[name] = _errors(p, *solver(p))
            rows.append(row)
    return rows


def throughput(sizes: tuple[int, ...], repeats: int, warmup: int, seed: int
               ) -> list[dict[str, Any]]:
    """Problems per second for a batch of 64 at 1 px noise; ratios against ours."""
    rows = []
    for n in sizes:
        p = make_problems(THROUGHPUT_BATCH, n, 1.0, seed)
        row: dict[str, Any] = {"n": n, "batch": THROUGHPUT_BATCH}
        for name, solver in SOLVERS.items():
            timing = measure(lambda s=solver, p=p: s(p), repeats, warmup)
            row[name] = {"batch_s_median": timing.median_s,
                         "problems_per_s": THROUGHPUT_BATCH / timing.median_s}
        ours = row["ours_epnp_gn"]["problems_per_s"]
        row["speed_ratio_ours_over_opencv_epnp"] = ours / row["opencv_epnp"]["problems_per_s"]
        row["speed_ratio_ours_over_opencv_epnp_iterative"] = (
            ours / row["opencv_epnp_iterative"]["problems_per_s"])
        rows.append(row)
    return rows


def _ransac_ours(x3d: np.ndarray, x2d: np.ndarray, K: np.ndarray, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    r = solve_pnp_ransac(x3d, x2d, K, reproj_threshold_px=RANSAC_THRESHOLD_PX,
                         iterations=RANSAC_ITERATIONS, confidence=RANSAC_CONFIDENCE, seed=seed)
    return r.R, r.t


def _ransac_opencv(flags: int):
    def solve(x3d: np.ndarray, x2d: np.ndarray, K: np.ndarray, seed: int
              ) -> tuple[np.ndarray, np.ndarray]:
        cv2.setRNGSeed(seed)
        ok, rvec, tvec, _ = cv2.solvePnPRansac(
            x3d, x2d, K, None, iterationsCount=RANSAC_ITERATIONS,
            reprojectionError=RANSAC_THRESHOLD_PX, confidence=RANSAC_CONFIDENCE, flags=flags)
        if not ok:
            return np.eye(3), np.zeros(3)
        return cv2.Rodrigues(rvec)[0], tvec.reshape(3)
    return solve


RANSAC_SOLVERS = {
    "ours_ransac": _ransac_ours,
    "opencv_ransac": _ransac_opencv(cv2.SOLVEPNP_EPNP),
    "opencv_usac_magsac": _ransac_opencv(cv2.USAC_MAGSAC),
}


def ransac(n: int, outlier_ratios: tuple[float, ...], problems: int, seed: int
           ) -> list[dict[str, Any]]:
    """Median errors and seconds per problem of each robust solver per outlier ratio."""
    rows = []
    for ratio in outlier_ratios:
        p = make_problems(problems, n, RANSAC_NOISE_PX, seed, outlier_ratio=ratio)
        row: dict[str, Any] = {"n": n, "outlier_ratio": ratio, "noise_px": RANSAC_NOISE_PX,
                               "problems": problems, "threshold_px": RANSAC_THRESHOLD_PX}
        for name, solver in RANSAC_SOLVERS.items():
            Rs, ts, seconds = [], [], []
            for b in range(problems):  # each problem once: RANSAC is slow, problems vary
                t0 = now()
                R, t = solver(p.x3d[b], p.x2d[b], p.K, seed + b)
                seconds.append(now() - t0)
                Rs.append(R)
                ts.append(t)
            row[name] = {**_errors(p, np.stack(Rs), np.stack(ts)),
                         "seconds_per_problem_median": float(np.median(seconds))}
        row["speed_ratio_ours_over_opencv"] = (
            row["opencv_ransac"]["seconds_per_problem_median"]
            / row["ours_ransac"]["seconds_per_problem_median"])
        rows.append(row)
    return rows


def run(quick: bool, seed: int = 0) -> dict[str, Any]:
    """The EPnP section: accuracy, batch throughput, RANSAC."""
    sizes = (128, 1024, 4096)
    problems = 8 if quick else 64
    return {
        "accuracy": accuracy(sizes, (0.0, 1.0, 3.0), problems, seed),
        "throughput": throughput(sizes, repeats=1 if quick else 7, warmup=0 if quick else 1,
                                 seed=seed + 1),
        "ransac": ransac(512 if quick else 1024, (0.3, 0.6), 1 if quick else 16, seed + 2),
        "settings": {"image": [WIDTH, HEIGHT], "focal_px": FOCAL,
                     "depth_range_m": list(DEPTH_RANGE_M), "problems_per_cell": problems,
                     "ours_refine_steps": "solve_epnp default",
                     "torch_threads": torch.get_num_threads()},
    }
