"""The reports of `nclr-bag eval`: per-pair rows, the summary, the error plot and the
overlay images, from the records of one pass over a bag (offline or live)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nclr_core.atomic_write import atomic_path, write_bytes_atomic
from nclr_core.data.rosbag.messages import BagError
from nclr_core.data.rosbag.reader import BagFrames
from nclr_core.engine.calibration_eval import recall_curves
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.metrics import pose_errors, registration_success
from nclr_core.geometry.se3 import quaternion_xyzw_from_matrix
from nclr_core.online.records import FrameRecord
from nclr_core.visualization import depth_overlay


def finite_points(points: np.ndarray) -> np.ndarray:
    """The node drops non-finite points before pairing; so do the offline pass and the
    overlays."""
    finite = np.isfinite(points).all(axis=1)
    return points if finite.all() else points[finite]


@dataclass
class Pass:
    """What one evaluation produced: records (one per processed pair, in order), counts and
    the final drift test against the prior (`drifted`, `drift`: the node's diagnostics
    values; None without a prior or an estimate)."""

    records: list[FrameRecord]
    counts: dict[str, int]
    drift: dict[str, Any] | None = None


def pose_errors_or_nan(T: np.ndarray | None, T_gt: np.ndarray) -> dict[str, float]:
    """Pose errors of T against T_gt; NaN when there is no pose (None)."""
    if T is None:
        return {"rre_euler_deg": math.nan, "rre_geodesic_deg": math.nan, "rte_m": math.nan}
    return {key: float(value) for key, value in pose_errors(T, T_gt).items()}


def frame_rows(records: list[FrameRecord], truths: list[np.ndarray]) -> list[dict[str, Any]]:
    """One CSV/JSON row per record: its fields, the per-frame estimate's errors and the
    aggregate's (`aggregate_*`, NaN before there is one)."""
    rows = []
    t0 = records[0].cloud_stamp if records else 0.0
    for index, (record, T_gt) in enumerate(zip(records, truths, strict=True)):
        row: dict[str, Any] = {"frame": index, "image_stamp": record.image_stamp,
                               "cloud_stamp": record.cloud_stamp,
                               "time_s": record.cloud_stamp - t0,
                               "valid": record.valid, "accepted": record.accepted,
                               "reason": record.reason, "num_inliers": record.num_inliers,
                               "reprojection_error_px": record.reprojection_error_px,
                               "overlap_ratio": record.overlap_ratio,
                               "latency_s": record.latency_s}
        row.update(pose_errors_or_nan(record.T_cam_lidar, T_gt))
        aggregate = pose_errors_or_nan(record.aggregate, T_gt)
        row.update({f"aggregate_{k}": v for k, v in aggregate.items()})
        row["aggregate_stage"] = record.aggregate_stage
        T = record.T_cam_lidar
        row.update({f"t_{axis}": (math.nan if T is None else float(T[i, 3]))
                    for i, axis in enumerate("xyz")})
        q = quaternion_xyzw_from_matrix(T[:3, :3]) if T is not None else [math.nan] * 4
        row.update({f"q_{axis}": float(v) for axis, v in zip("xyzw", q, strict=True)})
        rows.append(row)
    return rows


def stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return {"mean": math.nan, "median": math.nan, "max": math.nan}
    return {"mean": float(array.mean()), "median": float(np.median(array)),
            "max": float(array.max())}


def summarize(rows: list[dict[str, Any]], last: FrameRecord, T_gt_last: np.ndarray
              ) -> dict[str, Any]:
    """Per-frame summary (over valid estimates; recall and success over every frame, an
    invalid frame counting as a failure), the final estimate's errors and per-axis sigmas
    (`aggregate`) and each stage's final estimate and errors (`stages`), from the last
    record."""
    valid = [r for r in rows if r["valid"]]
    scored = [{"rre_euler_deg": r["rre_euler_deg"] if r["valid"] else math.nan,
               "rte_m": r["rte_m"] if r["valid"] else math.nan} for r in rows]
    success = registration_success([s["rre_euler_deg"] for s in scored],
                                   [s["rte_m"] for s in scored])
    frames: dict[str, Any] = {
        "num_frames": len(rows),
        "valid_rate": len(valid) / len(rows),
        "accepted_rate": sum(r["accepted"] for r in rows) / len(rows),
        "success_rate": float(np.mean(success)),
    }
    for key in ("rre_euler_deg", "rre_geodesic_deg", "rte_m"):
        for stat, value in stats([r[key] for r in valid]).items():
            frames[f"{key}_{stat}"] = value
    frames["recall_curves"] = recall_curves(scored, "online")
    final = last.aggregate
    aggregate: dict[str, Any] = {"available": final is not None}
    if final is not None:
        final_errors = pose_errors_or_nan(final, T_gt_last)
        aggregate.update(final_errors)
        aggregate["success"] = bool(registration_success(final_errors["rre_euler_deg"],
                                                         final_errors["rte_m"]))
        aggregate["stage"] = last.aggregate_stage
        aggregate["sigma_rot_deg"] = last.aggregate_sigma_rot_deg.tolist()
        aggregate["sigma_trans_m"] = last.aggregate_sigma_trans_m.tolist()
        aggregate["T_cam_lidar"] = final.tolist()
    aggregate["T_cam_lidar_ground_truth"] = np.asarray(T_gt_last).tolist()
    stages = {stage: {**pose_errors_or_nan(T, T_gt_last), "T_cam_lidar": T.tolist()}
              for stage, T in last.stage_estimates.items()}
    return {"per_frame_summary": frames, "aggregate": aggregate, "stages": stages}


def plot_errors_over_time(path: Path, rows: list[dict[str, Any]]) -> None:
    """RRE and RTE of the valid per-frame estimates and of the aggregate against time."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    time_s = np.array([r["time_s"] for r in rows])
    valid = np.array([r["valid"] for r in rows], dtype=bool)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for ax, key, unit in ((axes[0], "rre_euler_deg", "RRE (deg, Euler sum)"),
                          (axes[1], "rte_m", "RTE (m)")):
        per_frame = np.array([r[key] for r in rows], dtype=np.float64)
        ax.plot(time_s[valid], per_frame[valid], "o", ms=4, label="per-frame (valid)")
        ax.plot(time_s[~valid], per_frame[~valid], "x", ms=4, color="grey",
                label="per-frame (rejected)")
        ax.plot(time_s, [r[f"aggregate_{key}"] for r in rows], "-", lw=2, label="aggregate")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
    axes[1].set_xlabel("time since the first pair (s)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_overlays(frames: BagFrames, indices: list[int], T_est: np.ndarray | None,
                   truth: Callable[[dict], np.ndarray], folder: Path) -> list[Path]:
    """Per selected pair: the image with the points under the aggregated estimate (top;
    blank when there is none) above the same under the ground truth; PNG paths."""
    wanted = set(indices)
    paths = []
    for sample in frames:
        index = int(sample["frame_id"])
        if index not in wanted:
            continue
        camera: CameraModel = sample["camera"]
        points = finite_points(sample["points"])
        gt = depth_overlay(sample["image"], points, truth(sample), camera)
        est = (depth_overlay(sample["image"], points, T_est, camera) if T_est is not None
               else np.zeros_like(gt))
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.vstack((est, gt)), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot encode the overlay of frame {index}")
        path = folder / f"frame_{index:04d}.png"
        write_bytes_atomic(path, png.tobytes())
        paths.append(path)
        if len(paths) == len(wanted):
            break
    return paths


def spread(count: int, wanted: int) -> list[int]:
    if count == 0 or wanted == 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, min(wanted, count))})


def match_truths(bag: Path, records: list[FrameRecord], pairs: list[tuple[float, np.ndarray]]
                  ) -> list[np.ndarray]:
    """Ground truth of each record, found by its image stamp among the bag's pairs."""
    stamps = np.array([stamp for stamp, _ in pairs])
    truths = []
    for record in records:
        nearest = int(np.argmin(np.abs(stamps - record.image_stamp))) if len(stamps) else -1
        if nearest < 0 or abs(stamps[nearest] - record.image_stamp) > 1e-6:
            raise BagError(f"{bag}: the node calibrated a pair at {record.image_stamp:.6f} s "
                           f"that the bag's pairing does not have")
        truths.append(pairs[nearest][1])
    return truths
