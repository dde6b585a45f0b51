"""`OnlineCalibration`: the one object that turns a stream of image/cloud pairs into
`T_cam_lidar` with its uncertainty. The node, `nclr-bag eval` and `evaluate_calibration.py`
call it and nothing deeper (as ROS image_pipeline's camera_calibration keeps its algorithm
apart from its node).

Stages (`OnlineSettings.stages`, in this order when enabled):
- `global`: the network's matching over the whole cloud and RANSAC-PnP
  (`nclr_core.inference.Calibrator`): a per-frame pose, the only stage that needs no prior.

The per-frame policy, pinned by tests (tests/online/test_online_pipeline.py):
0. cloud intensities are brought to [0, 1] (`OnlineSettings.intensity_full_scale`);
1. a frame the Calibrator refuses as bad input gives a record with the reason and no pose;
2. a per-frame pose is *valid* when it passed the Calibrator's checks (inliers, |t|, and with
   a prior the distance to it);
3. a valid pose is *accepted* when the stage's window (`TemporalEstimator`: the prior
   bounds again, a sliding window of `window` poses) takes it, weighted by its RANSAC
   inlier count;
4. the stage's estimate is the window's robust weighted mean once it holds `min_frames`
   poses, with the covariance of that mean (`TemporalEstimator`);
5. the pipeline's estimate is that of the last enabled stage that is solved.

Drift (`drift()`): with an installed calibration (the prior), the estimate has drifted when
some axis of their difference exceeds both `drift_sigmas` times the estimate's sigma on that
axis and the floors `drift_min_rotation_deg` / `drift_min_translation_m`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from nclr_core.data.intensity import IntensityNormalizer
from nclr_core.geometry.camera import CameraModel
from nclr_core.inference import CalibrationResult, Calibrator
from nclr_core.online.pose import pose_delta
from nclr_core.online.records import NO_SIGMA, CalibrationEstimate, FrameRecord
from nclr_core.temporal_estimator import TemporalEstimator

STAGES = ("global",)
AXES = ("x", "y", "z")


@dataclass(frozen=True)
class OnlineSettings:
    """What the pipeline does (the per-frame solve's settings are the Calibrator's).

    stages: enabled stages, a subset of STAGES.
    window, min_frames: poses kept per stage / needed before a stage has an estimate.
    outlier_rotation_deg, outlier_translation_m: the window's outlier floors.
    max_rotation_from_prior_deg, max_translation_from_prior_m: with a prior, poses farther
        from it are refused (None: no bound).
    drift_sigmas, drift_min_rotation_deg, drift_min_translation_m: the drift test.
    intensity_full_scale: the LiDAR's intensity full scale (e.g. 255.0), divided out so the
        stages see [0, 1] (`nclr_core.data.intensity`); None: found from the clouds.
    """

    stages: tuple[str, ...] = ("global",)
    window: int = 50
    min_frames: int = 3
    outlier_rotation_deg: float = 1.0
    outlier_translation_m: float = 0.05
    max_rotation_from_prior_deg: float | None = 15.0
    max_translation_from_prior_m: float | None = 0.5
    drift_sigmas: float = 3.0
    drift_min_rotation_deg: float = 0.1
    drift_min_translation_m: float = 0.01
    intensity_full_scale: float | None = None

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        unknown = [s for s in stages if s not in STAGES]
        if not stages or unknown or len(set(stages)) != len(stages):
            raise ValueError(f"stages must be distinct names among {', '.join(STAGES)}, "
                             f"got {list(stages)}")
        object.__setattr__(self, "stages", tuple(s for s in STAGES if s in stages))
        if self.window < 1 or self.min_frames < 1:
            raise ValueError("window and min_frames must be at least 1")
        if not self.drift_sigmas > 0:
            raise ValueError("drift_sigmas must be positive")


@dataclass(frozen=True)
class Frame:
    """One synchronised pair: image (H, W, 3) uint8 RGB as `camera` describes it; points
    (N, 4) float32 x y z intensity, LiDAR frame; header stamps in seconds."""

    image: np.ndarray
    points: np.ndarray
    camera: CameraModel
    image_stamp: float = 0.0
    cloud_stamp: float = 0.0


@dataclass(frozen=True)
class FrameOutcome:
    """A processed frame: its record, the network's per-frame outputs (overlap scores and
    mask; None when the network did not run) and, when the frame was refused as bad input,
    why (else "")."""

    record: FrameRecord
    network: CalibrationResult | None
    bad_input: str = ""


@dataclass(frozen=True)
class DriftReport:
    """The estimate against the installed calibration, per camera axis.

    drifted: some axis differs by more than the test allows; axes: the names of those axes
    ("rotation x", "translation z", ...); difference_deg / difference_m (3,) estimate minus
    installed (δ of `nclr_core.online.pose`), sigma_rot_deg / sigma_trans_m (3,).
    """

    drifted: bool
    axes: tuple[str, ...]
    difference_deg: np.ndarray
    difference_m: np.ndarray
    sigma_rot_deg: np.ndarray
    sigma_trans_m: np.ndarray

    def describe(self) -> str:
        """One line: each axis' difference and sigma."""
        parts = [f"rot {a} {d:+.3f}±{s:.3f} deg" for a, d, s in
                 zip(AXES, self.difference_deg, self.sigma_rot_deg, strict=True)]
        parts += [f"trans {a} {d * 100:+.1f}±{s * 100:.1f} cm" for a, d, s in
                  zip(AXES, self.difference_m, self.sigma_trans_m, strict=True)]
        return ", ".join(parts)


@dataclass
class _WindowStage:
    """A per-frame stage's window of accepted poses and its estimate."""

    name: str
    window: TemporalEstimator
    estimate: CalibrationEstimate = field(init=False)

    def __post_init__(self) -> None:
        self.estimate = CalibrationEstimate.unsolved(self.name, "no frame accepted yet")

    def add(self, T_cam_lidar: np.ndarray, weight: float) -> bool:
        """Offer a valid per-frame pose; True when the window took it."""
        if not self.window.add(T_cam_lidar, weight=weight):
            return False
        aggregate = self.window.estimate()
        if aggregate is None:
            self.estimate = CalibrationEstimate.unsolved(
                self.name, f"{len(self.window)} of {self.window.min_frames} frames needed",
                len(self.window))
        else:
            self.estimate = CalibrationEstimate(True, aggregate.pose, self.name,
                                                aggregate.num_inliers)
        return True


class OnlineCalibration:
    """Online calibration over a stream of frames (see the module docstring).

    Args:
        calibrator: the network's per-frame calibrator (needed by `global`).
        settings: stages, window and drift test.
        prior: (4, 4) installed / rough T_cam_lidar, or None (only `global` works then).
    """

    def __init__(self, calibrator: Calibrator | None, settings: OnlineSettings | None = None,
                 prior: np.ndarray | None = None) -> None:
        self.settings = settings or OnlineSettings()
        if "global" in self.settings.stages and calibrator is None:
            raise ValueError("stage 'global' needs a network (a checkpoint)")
        if prior is not None:
            prior = np.asarray(prior, dtype=np.float64)
            if prior.shape != (4, 4) or not np.all(np.isfinite(prior)):
                raise ValueError(f"prior must be a finite (4, 4) transform, got {prior.shape}")
        self.calibrator = calibrator
        self.prior = prior
        self.intensity = IntensityNormalizer(self.settings.intensity_full_scale)
        self._stages: dict[str, _WindowStage] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every frame (e.g. after the sensors were moved)."""
        s = self.settings
        with_prior = self.prior is not None
        self._stages = {name: _WindowStage(name, TemporalEstimator(
            window=s.window, min_frames=s.min_frames,
            outlier_rotation_deg=s.outlier_rotation_deg,
            outlier_translation_m=s.outlier_translation_m, T_init=self.prior,
            max_rotation_from_prior_deg=s.max_rotation_from_prior_deg if with_prior else None,
            max_translation_from_prior_m=s.max_translation_from_prior_m if with_prior
            else None)) for name in s.stages}

    # -- frames ---------------------------------------------------------------------------
    def process(self, frame: Frame) -> FrameOutcome:
        """Run the enabled stages on one frame; the record says what became of it.

        Raises nothing for bad input: a frame the Calibrator refuses (ValueError) is a record
        with the reason and no pose.
        """
        start = time.monotonic()
        stage = self._stages["global"]
        try:
            points = self.intensity(frame.points)
            result = self.calibrator.calibrate(frame.image, points, frame.camera, self.prior)
        except ValueError as err:
            return FrameOutcome(self._record(frame, start, stage="global", T=None,
                                             valid=False, accepted=False, reason=str(err),
                                             inliers=0, error_px=math.nan,
                                             overlap=math.nan), None, str(err))
        quality = result.quality
        solved = not np.array_equal(result.T_cam_lidar, np.eye(4))
        accepted = quality.valid and stage.add(
            result.T_cam_lidar, weight=float(max(quality.num_inliers, 1)))
        reason = "" if accepted else (
            quality.reason or "outside the prior bounds of the window")
        record = self._record(frame, start, stage="global",
                              T=result.T_cam_lidar if solved else None,
                              valid=quality.valid, accepted=accepted, reason=reason,
                              inliers=quality.num_inliers,
                              error_px=quality.reprojection_error_px,
                              overlap=quality.overlap_ratio)
        return FrameOutcome(record, result)

    def _record(self, frame: Frame, start: float, *, stage: str, T: np.ndarray | None,
                valid: bool, accepted: bool, reason: str, inliers: int, error_px: float,
                overlap: float) -> FrameRecord:
        estimate = self.estimate()
        pose = estimate.pose
        return FrameRecord(
            frame.image_stamp, frame.cloud_stamp, stage, T, valid, accepted, reason, inliers,
            error_px, overlap, estimate.T_cam_lidar,
            aggregate_stage=estimate.stage if estimate.solved else "",
            aggregate_sigma_rot_deg=NO_SIGMA.copy() if pose is None else pose.sigma_rot_deg,
            aggregate_sigma_trans_m=NO_SIGMA.copy() if pose is None else pose.sigma_trans_m,
            stage_estimates={name: e.T_cam_lidar for name, e in self.estimates().items()
                             if e.solved},
            latency_s=time.monotonic() - start)

    # -- estimates ------------------------------------------------------------------------
    def estimates(self) -> dict[str, CalibrationEstimate]:
        """Each enabled stage's current estimate, in stage order."""
        return {name: stage.estimate for name, stage in self._stages.items()}

    def estimate(self) -> CalibrationEstimate:
        """The pipeline's estimate: the last enabled stage's that is solved (else the last
        stage's, unsolved, with its reason)."""
        estimates = list(self.estimates().values())
        solved = [e for e in estimates if e.solved]
        return solved[-1] if solved else estimates[-1]

    def drift(self) -> DriftReport | None:
        """The estimate against the prior (the installed calibration); None without a prior
        or an estimate."""
        estimate = self.estimate()
        if self.prior is None or not estimate.solved:
            return None
        s = self.settings
        delta = pose_delta(self.prior, estimate.T_cam_lidar)
        diff_deg, diff_m = np.degrees(delta[:3]), delta[3:]
        sig_deg, sig_m = estimate.pose.sigma_rot_deg, estimate.pose.sigma_trans_m
        rot = (np.abs(diff_deg) > s.drift_sigmas * sig_deg) & \
            (np.abs(diff_deg) > s.drift_min_rotation_deg)
        trans = (np.abs(diff_m) > s.drift_sigmas * sig_m) & \
            (np.abs(diff_m) > s.drift_min_translation_m)
        axes = tuple(f"rotation {a}" for a, hit in zip(AXES, rot, strict=True) if hit) + \
            tuple(f"translation {a}" for a, hit in zip(AXES, trans, strict=True) if hit)
        return DriftReport(bool(axes), axes, diff_deg, diff_m, sig_deg, sig_m)
