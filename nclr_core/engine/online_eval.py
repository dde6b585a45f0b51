"""Online-calibration evaluation: windows of frames, priors at an exact distance, calls.

The protocol (METHOD.md §1, §9; issues 13-14):
- a **window** is a run of frames calibrated together (they share `T_cam_lidar`): one frame
  alone, or with `group_by_calibration` every frame sharing a calibration (same
  `T_cam_lidar`, `K` and image size), split into chunks of `window_frames` when given;
- a **call** runs `nclr_core.online.pipeline.OnlineCalibration` over a window's frames in
  order from one prior, placed exactly `prior_deg` degrees (about a random axis) and
  `prior_m` metres (in a random direction) from the truth; each window gets
  `priors_per_frame` × (its frame count) calls, so single frames and windows are judged on
  as many priors per frame, or `priors_per_window` calls (long drives);
- a call's **output** is the pipeline's final estimate when it is solved, else the prior (the
  vehicle keeps what it had): `accepted` says which. It is *worse than the prior* when it is
  farther from the truth in rotation or in translation; its 3σ *covers* the truth when every
  axis of the error δ (`nclr_core.online.pose`) lies within 3 of its sigmas.

`run_calls` returns one `CallResult` per call; `summarize_calls` turns them into the figures
of `metrics.json` (`online`): per call and, under `stages`, per stage. The network forward
does not depend on the prior, so `FeatureCache` runs it once per frame for all its calls.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.metrics import rre_geodesic_deg
from nclr_core.inference import Calibrator, NetworkFeatures
from nclr_core.online.pipeline import Frame, FrameOutcome, OnlineCalibration
from nclr_core.online.pose import pose_delta, prior_at_distance
from nclr_core.online.records import CalibrationEstimate

Sample = dict[str, Any]
NO_CHECKPOINT = "none"  # what the evaluation CLIs take for "no network" (refine alone)


class FeatureCache:
    """A Calibrator whose forward (`features`) is kept for the last `capacity` frame images
    (by identity: the evaluation holds each sample's image for all its calls); everything
    else is the wrapped Calibrator's."""

    def __init__(self, calibrator: Calibrator, capacity: int) -> None:
        self.calibrator = calibrator
        self.capacity = max(int(capacity), 1)
        self._kept: OrderedDict[int, tuple[np.ndarray, NetworkFeatures]] = OrderedDict()

    def features(self, image: np.ndarray, points: np.ndarray, camera: CameraModel
                 ) -> NetworkFeatures:
        key = id(image)
        if key not in self._kept:
            self._kept[key] = (image, self.calibrator.features(image, points, camera))
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)
        return self._kept[key][1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.calibrator, name)


@dataclass(frozen=True)
class Window:
    """Reader indices (in order) of frames that share one `T_cam_lidar`, and a name."""

    indices: tuple[int, ...]
    name: str


def _calibration_key(sample: Sample) -> tuple:
    return (np.round(np.asarray(sample["T_cam_lidar"], np.float64), 9).tobytes(),
            np.round(np.asarray(sample["K"], np.float64), 6).tobytes(),
            sample["image"].shape[:2])


def make_windows(samples: Sequence[Sample], group_by_calibration: bool,
                 window_frames: int | None = None) -> list[Window]:
    """Windows over `samples` (reader order): one per frame, or per calibration group split
    into chunks of `window_frames` (None: the whole group)."""
    if window_frames is not None and window_frames < 1:
        raise ValueError(f"window_frames must be >= 1, got {window_frames}")
    if not group_by_calibration:
        return [Window((i,), _frame_name(s)) for i, s in enumerate(samples)]
    groups: dict[tuple, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(_calibration_key(sample), []).append(i)
    windows = []
    for g, indices in enumerate(groups.values()):
        size = window_frames or len(indices)
        for start in range(0, len(indices), size):
            chunk = tuple(indices[start:start + size])
            windows.append(Window(chunk, f"group{g}:{_frame_name(samples[chunk[0]])}"
                                         f"+{len(chunk) - 1}"))
    return windows


def _frame_name(sample: Sample) -> str:
    return "/".join(str(sample[k]) for k in ("sequence", "frame_id") if k in sample)


@dataclass(frozen=True)
class CallResult:
    """One call: its window, prior, per-frame outcomes and each stage's final estimate.

    T_gt, prior: (4, 4); outcomes: one per frame of the window; estimates: stage -> final
    estimate; estimate: the pipeline's final estimate.
    """

    window: Window
    call: int
    T_gt: np.ndarray
    prior: np.ndarray
    outcomes: tuple[FrameOutcome, ...]
    estimates: dict[str, CalibrationEstimate]
    estimate: CalibrationEstimate


def run_calls(windows: Sequence[Window], load: Callable[[int], Sample],
              make_pipeline: Callable[[np.ndarray], OnlineCalibration], prior_deg: float,
              prior_m: float, priors_per_frame: int, seed: int,
              priors_per_window: int | None = None) -> Iterator[CallResult]:
    """Every call of every window (see the module docstring), in order.

    Args:
        load: reader index -> sample (`image`, `points`, `K`, `T_cam_lidar`; optional
            `camera` (CameraModel), `stamp`, `camera_stamp`).
        make_pipeline: prior (4, 4) -> a fresh OnlineCalibration from that prior.
    """
    if priors_per_frame < 1 or (priors_per_window is not None and priors_per_window < 1):
        raise ValueError(f"priors_per_frame and priors_per_window must be >= 1, got "
                         f"{priors_per_frame}, {priors_per_window}")
    for w, window in enumerate(windows):
        samples = [load(i) for i in window.indices]
        T_gt = np.asarray(samples[0]["T_cam_lidar"], dtype=np.float64)
        calls = priors_per_window or priors_per_frame * len(samples)
        for call in range(calls):
            rng = np.random.default_rng([seed, w, call])
            prior = prior_at_distance(T_gt, prior_deg, prior_m, rng)
            pipeline = make_pipeline(prior)
            outcomes = tuple(pipeline.process(sample_frame(s)) for s in samples)
            yield CallResult(window, call, T_gt, prior, outcomes, pipeline.estimates(),
                             pipeline.estimate())


def sample_frame(sample: Sample) -> Frame:
    """The pipeline's `Frame` of a reader sample (its `camera`, else a pinhole of `K`)."""
    image = sample["image"]
    camera = sample.get("camera") or CameraModel(np.asarray(sample["K"], np.float64),
                                                 image.shape[1], image.shape[0])
    stamp = float(sample.get("stamp", 0.0))
    return Frame(image, sample["points"], camera, float(sample.get("camera_stamp", stamp)),
                 stamp, sample.get("ring"))


def _errors(T: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    return (float(rre_geodesic_deg(T[:3, :3], T_gt[:3, :3])),
            float(np.linalg.norm(T[:3, 3] - T_gt[:3, 3])))


def call_row(result: CallResult, estimate: CalibrationEstimate, judged_by: str
             ) -> dict[str, Any]:
    """One call judged by `estimate` (`judged_by`: "pipeline" or a stage's name): the
    output's and the prior's errors, acceptance, worse/better than the prior, sigmas and 3σ
    coverage."""
    prior_rot, prior_trans = _errors(result.prior, result.T_gt)
    accepted = estimate.solved
    T_out = estimate.T_cam_lidar if accepted else result.prior
    rot, trans = _errors(T_out, result.T_gt)
    row: dict[str, Any] = {
        "window": result.window.name, "call": result.call,
        "frames": len(result.window.indices), "judged_by": judged_by,
        "stage": estimate.stage,
        "accepted": accepted, "reason": estimate.reason,
        "prior_rre_geodesic_deg": prior_rot, "prior_rte_m": prior_trans,
        "estimate_rre_geodesic_deg": rot, "estimate_rte_m": trans,
        "worse_than_prior": _farther({"estimate_rre_geodesic_deg": rot, "estimate_rte_m": trans},
                                     {"estimate_rre_geodesic_deg": prior_rot,
                                      "estimate_rte_m": prior_trans}),
        "better_than_prior_rotation": bool(rot < prior_rot),
    }
    sigma = np.full(6, math.nan)
    covered = math.nan
    if accepted:
        pose = estimate.pose
        sigma = np.concatenate((np.radians(pose.sigma_rot_deg), pose.sigma_trans_m))
        if np.all(np.isfinite(sigma)):  # an infinite sigma claims nothing to cover
            error = pose_delta(pose.T_cam_lidar, result.T_gt)
            covered = float(np.all(np.abs(error) <= 3.0 * sigma))
    for i, axis in enumerate("xyz"):
        row[f"sigma_rot_{axis}_deg"] = float(np.degrees(sigma[i]))
        row[f"sigma_trans_{axis}_m"] = float(sigma[3 + i])
    row["covered_3sigma"] = covered
    return row


def _quantile(values: list[float], q: float) -> float:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(np.quantile(array, q)) if array.size else math.nan


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Figures over calls (each judged by one estimate, see `call_row`)."""
    if not rows:
        raise ValueError("no calls were evaluated")
    out: dict[str, Any] = {"num_calls": len(rows),
                           "accepted_rate": float(np.mean([r["accepted"] for r in rows]))}
    for key in ("estimate_rre_geodesic_deg", "estimate_rte_m", "prior_rre_geodesic_deg",
                "prior_rte_m"):
        values = [r[key] for r in rows]
        out[f"{key}_median"] = _quantile(values, 0.5)
        out[f"{key}_p90"] = _quantile(values, 0.9)
    out["worse_than_prior_rate"] = float(np.mean([r["worse_than_prior"] for r in rows]))
    out["better_than_prior_rotation_rate"] = float(
        np.mean([r["better_than_prior_rotation"] for r in rows]))
    covered = [r["covered_3sigma"] for r in rows
               if r["accepted"] and np.isfinite(r["covered_3sigma"])]
    out["coverage_3sigma"] = float(np.mean(covered)) if covered else math.nan
    out["coverage_3sigma_calls"] = len(covered)
    accepted = [r for r in rows if r["accepted"]]
    out["sigma_rot_deg_median"] = [_quantile([r[f"sigma_rot_{a}_deg"] for r in accepted], 0.5)
                                   for a in "xyz"]
    out["sigma_trans_m_median"] = [_quantile([r[f"sigma_trans_{a}_m"] for r in accepted], 0.5)
                                   for a in "xyz"]
    return out


def summarize_calls(results: Sequence[CallResult]) -> tuple[dict[str, Any], list[dict]]:
    """(summary, rows): the pipeline's figures over calls, `aggregate` (the median call's
    errors and sigmas, as `nclr-bag eval` reports one drive), and `stages` (the same per
    stage); rows: one per call judged by the pipeline, then one per call and stage."""
    rows = [call_row(r, r.estimate, "pipeline") for r in results]
    summary = summarize_rows(rows)
    summary["aggregate"] = {
        "rre_geodesic_deg": summary["estimate_rre_geodesic_deg_median"],
        "rte_m": summary["estimate_rte_m_median"],
        "sigma_rot_deg": summary["sigma_rot_deg_median"],
        "sigma_trans_m": summary["sigma_trans_m_median"],
        "coverage_3sigma": summary["coverage_3sigma"],
    }
    summary["stages"] = {}
    previous: list[dict[str, Any]] | None = None
    for stage in results[0].estimates:
        per_stage = [call_row(r, r.estimates[stage], stage) for r in results]
        summary["stages"][stage] = summarize_rows(per_stage)
        if previous is not None:  # does a stage ever make its input worse?
            summary["stages"][stage]["worse_than_previous_stage_rate"] = float(np.mean(
                [_farther(now, before) for now, before in zip(per_stage, previous,
                                                              strict=True)]))
        previous = per_stage
        rows += per_stage
    return summary, rows


def _farther(row: dict[str, Any], than: dict[str, Any]) -> bool:
    """`row`'s output is farther from the truth than `than`'s, in rotation or translation
    (beyond 1e-9; refused outputs are the prior)."""
    return bool(row["estimate_rre_geodesic_deg"] > than["estimate_rre_geodesic_deg"] + 1e-9
                or row["estimate_rte_m"] > than["estimate_rte_m"] + 1e-9)
