"""`OnlineCalibration`: the one object that turns a stream of image/cloud pairs into
`T_cam_lidar` with its uncertainty. The node, `nclr-bag eval` and `evaluate_calibration.py`
call it and nothing deeper (as ROS image_pipeline's camera_calibration keeps its algorithm
apart from its node).

Stages (`OnlineSettings.stages`, run in this order when enabled); the learned ones share
one network forward per frame (`Calibrator.features`):
- `global`: the network's matching over the whole cloud and RANSAC-PnP
  (`Calibrator.solve_global`): a per-frame pose, the only stage that needs no prior;
- `guided`: matching inside windows around the projections of a reference pose, shrunk and
  re-projected each round (`nclr_core.online.guided`): per-frame matches and pose. The
  reference is the prior when there is one (guiding from a running estimate drags the
  windows along its own bias, measured), else the pipeline's estimate once it exists;
- `joint`: one robust solve with its covariance over the pooled matches of the last
  `joint_window` frames (`nclr_core.online.joint`): the guided frames whose matching held,
  or without `guided` the global frames' RANSAC inliers;
- `refine`: training-free alignment of LiDAR contours with image edges over the last
  `refine_window` frames (`nclr_core.online.refine`), from the estimate of the stages before
  it (or the prior), once the window is full and every `refine_every` frames after; needs
  no network (`stages: refine` alone runs without a checkpoint). A refused refinement keeps
  its last solved estimate.

The per-frame policy, pinned by tests (tests/online/test_online_pipeline.py):
0. cloud intensities are brought to [0, 1] (`OnlineSettings.intensity_full_scale`);
1. a frame the network refuses as bad input gives a record with the reason and no pose;
2. a per-frame pose is *valid* when it passed its stage's checks (global: the Calibrator's
   inliers, |t| and prior distance; guided: the matching held, `GuidedResult.poolable`);
3. a valid pose is *accepted* when its stage's window (`TemporalEstimator`: the prior
   bounds again, a sliding window of `window` poses) takes it, weighted by its inlier
   count; a frame's record reports its last per-frame stage (guided when enabled);
4. a per-frame stage's estimate is its window's robust weighted mean once it holds
   `min_frames` poses, with the covariance of that mean, never below the frames' own
   precision when they report one (guided: their mean covariance / inliers; one frame: its
   own); a guided translation less precise than `guided.max_sigma_trans_m` on some axis is
   not published: with a prior, its translation stays (warned; a single frame's translation
   along the optical axis is about 15 cm uncertain, no better than a rough prior); the
   joint stage's is its solve over at least `min_frames` pooled frames;
5. the refine stage's estimate is its last solved refinement; with `refine` alone a frame's
   record says only that it joined the window (accepted, no per-frame pose);
6. the pipeline's estimate is that of the last enabled stage that is solved.

Drift (`drift()`): with an installed calibration (the prior), the estimate has drifted when
some axis of their difference exceeds both `drift_sigmas` times the estimate's sigma on that
axis and the floors `drift_min_rotation_deg` / `drift_min_translation_m`.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from nclr_core.data.intensity import IntensityNormalizer
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import make_transform
from nclr_core.inference import CalibrationResult, Calibrator
from nclr_core.online.guided import GuidedResult, GuidedSettings, match_guided
from nclr_core.online.joint import JointSettings, solve_joint
from nclr_core.online.matches import FrameMatches
from nclr_core.online.pose import PoseEstimate, at_least, pose_delta
from nclr_core.online.records import NO_SIGMA, CalibrationEstimate, FrameRecord
from nclr_core.online.refine import RefineFrame, RefineSettings, refine
from nclr_core.temporal_estimator import TemporalEstimator

STAGES = ("global", "guided", "joint", "refine")
PER_FRAME_STAGES = ("global", "guided")
NETWORK_STAGES = ("global", "guided", "joint")
AXES = ("x", "y", "z")


@dataclass(frozen=True)
class OnlineSettings:
    """What the pipeline does (the global solve's settings are the Calibrator's).

    stages: enabled stages, a subset of STAGES.
    window, min_frames: poses kept per per-frame stage / needed before a stage has an
        estimate (the joint stage: frames pooled).
    outlier_rotation_deg, outlier_translation_m: the per-frame windows' outlier floors.
    max_rotation_from_prior_deg, max_translation_from_prior_m: with a prior, poses farther
        from it are refused (None: no bound).
    guided, joint: the guided and joint stages' settings; joint_window: frames pooled.
    refine: the refine stage's settings; refine_window: frames it aligns at once;
        refine_every: frames between two refinements once the window is full.
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
    guided: GuidedSettings = field(default_factory=GuidedSettings)
    joint: JointSettings = field(default_factory=JointSettings)
    joint_window: int = 24
    refine: RefineSettings = field(default_factory=RefineSettings)
    refine_window: int = 10
    refine_every: int = 10
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
        if min(self.window, self.min_frames, self.joint_window, self.refine_window,
               self.refine_every) < 1:
            raise ValueError("window, min_frames, joint_window, refine_window and "
                             "refine_every must be at least 1")
        if not self.drift_sigmas > 0:
            raise ValueError("drift_sigmas must be positive")


@dataclass(frozen=True)
class Frame:
    """One synchronised pair: image (H, W, 3) uint8 RGB as `camera` describes it; points
    (N, 4) float32 x y z intensity, LiDAR frame; header stamps in seconds; the laser ring
    of each point (N,) when the source gives one (the refine stage uses it)."""

    image: np.ndarray
    points: np.ndarray
    camera: CameraModel
    image_stamp: float = 0.0
    cloud_stamp: float = 0.0
    ring: np.ndarray | None = None


@dataclass(frozen=True)
class FrameOutcome:
    """A processed frame: its record, the network's per-frame outputs (the global solve:
    overlap scores and mask, matches; None when the network did not run) and, when the
    frame was refused as bad input, why (else "")."""

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
    """A per-frame stage's window of accepted poses and its estimate.

    When every pose in the window came with its own covariance (the guided stage's solve),
    the estimate claims no more than those frames' own precision: each axis' σ is at least
    that of their mean covariance divided by the inlier count (the frames taken as
    independent); one frame alone, whose spread measures nothing, gets its own covariance.

    With `max_sigma_trans_m` and a `prior`, a translation less precise than that on some
    axis is not published: the estimate keeps the prior's translation (with σ
    `prior_sigma_trans_m` per axis) and says so in its warnings; its rotation stands.
    """

    name: str
    window: TemporalEstimator
    max_sigma_trans_m: float | None = None
    prior: np.ndarray | None = None
    prior_sigma_trans_m: float = math.inf
    estimate: CalibrationEstimate = field(init=False)
    covariances: deque = field(init=False)

    def __post_init__(self) -> None:
        self.estimate = CalibrationEstimate.unsolved(self.name, "no frame accepted yet")
        self.covariances = deque(maxlen=self.window.window)

    def add(self, T_cam_lidar: np.ndarray, weight: float,
            covariance: np.ndarray | None = None) -> bool:
        """Offer a valid per-frame pose (and its (6, 6) covariance, when the stage has one);
        True when the window took it."""
        if not self.window.add(T_cam_lidar, weight=weight):
            return False
        self.covariances.append(covariance)
        aggregate = self.window.estimate()
        if aggregate is None:
            self.estimate = CalibrationEstimate.unsolved(
                self.name, f"{len(self.window)} of {self.window.min_frames} frames needed",
                len(self.window))
            return True
        pose = aggregate.pose
        if all(c is not None for c in self.covariances):
            floor = np.mean(np.stack(self.covariances), axis=0) / aggregate.num_inliers
            pose = PoseEstimate(pose.T_cam_lidar, at_least(pose.covariance, floor))
        self.estimate = self._published(pose, aggregate.num_inliers)
        return True

    def _published(self, pose: PoseEstimate, num_frames: int) -> CalibrationEstimate:
        """The estimate of `pose`, its translation replaced by the prior's where it is too
        imprecise to publish (see the class docstring)."""
        sigma = float(pose.sigma_trans_m.max())
        if self.max_sigma_trans_m is None or self.prior is None or \
                sigma <= self.max_sigma_trans_m:
            return CalibrationEstimate(True, pose, self.name, num_frames)
        covariance = np.zeros((6, 6))
        covariance[:3, :3] = pose.covariance[:3, :3]
        covariance[3:, 3:] = np.eye(3) * self.prior_sigma_trans_m ** 2
        kept = PoseEstimate(make_transform(pose.T_cam_lidar[:3, :3], self.prior[:3, 3]),
                            covariance)
        return CalibrationEstimate(True, kept, self.name, num_frames, warnings=(
            f"translation kept from the prior: the estimate's sigma {sigma:.3f} m > "
            f"{self.max_sigma_trans_m} m",))


@dataclass(frozen=True)
class _PerFrame:
    """One per-frame stage's outcome on a frame (the record's fields)."""

    stage: str
    T: np.ndarray | None
    valid: bool
    accepted: bool
    reason: str
    inliers: int
    error_px: float


class OnlineCalibration:
    """Online calibration over a stream of frames (see the module docstring).

    Args:
        calibrator: the network's per-frame calibrator (needed by every stage but refine).
        settings: stages, windows and drift test.
        prior: (4, 4) installed / rough T_cam_lidar, or None (then `guided` waits for the
            global stage's estimate; `refine` alone needs one).
    """

    def __init__(self, calibrator: Calibrator | None, settings: OnlineSettings | None = None,
                 prior: np.ndarray | None = None) -> None:
        self.settings = settings or OnlineSettings()
        learned = [s for s in self.settings.stages if s in NETWORK_STAGES]
        if calibrator is None and learned:
            raise ValueError(f"stages {', '.join(learned)} need a network (a checkpoint)")
        if prior is None and not learned:
            raise ValueError("the refine stage alone needs a prior to start from")
        if prior is not None:
            prior = np.asarray(prior, dtype=np.float64)
            if prior.shape != (4, 4) or not np.all(np.isfinite(prior)):
                raise ValueError(f"prior must be a finite (4, 4) transform, got {prior.shape}")
        self.calibrator = calibrator
        self.prior = prior
        self.intensity = IntensityNormalizer(self.settings.intensity_full_scale)
        self.reset()

    def reset(self) -> None:
        """Forget every frame (e.g. after the sensors were moved)."""
        s = self.settings
        with_prior = self.prior is not None
        bound = s.max_translation_from_prior_m
        self._windows = {name: _WindowStage(name, TemporalEstimator(
            window=s.window, min_frames=s.min_frames,
            outlier_rotation_deg=s.outlier_rotation_deg,
            outlier_translation_m=s.outlier_translation_m, T_init=self.prior,
            max_rotation_from_prior_deg=s.max_rotation_from_prior_deg if with_prior else None,
            max_translation_from_prior_m=bound if with_prior else None),
            # the guided stage's own precision to stand alone; a prior bound is a 3σ bound
            max_sigma_trans_m=s.guided.max_sigma_trans_m if name == "guided" else None,
            prior=self.prior, prior_sigma_trans_m=math.inf if bound is None else bound / 3.0)
            for name in s.stages if name in PER_FRAME_STAGES}
        self._pool: deque[FrameMatches] = deque(maxlen=s.joint_window)
        self._joint = CalibrationEstimate.unsolved("joint", "no frame pooled yet")
        self._refine_frames: deque[RefineFrame] = deque(maxlen=s.refine_window)
        self._since_refine = 0
        self._refined = CalibrationEstimate.unsolved("refine", "window not full yet")

    # -- frames ---------------------------------------------------------------------------
    def process(self, frame: Frame) -> FrameOutcome:
        """Run the enabled stages on one frame; the record says what became of it.

        Raises nothing for bad input: a frame the network refuses (ValueError) is a record
        with the reason and no pose.
        """
        start = time.monotonic()
        try:
            points = self.intensity(frame.points)
            if self.calibrator is None:
                return FrameOutcome(self._record(frame, start, self._refine(frame, points),
                                                 math.nan), None)
            features = self.calibrator.features(frame.image, points, frame.camera)
        except ValueError as err:
            refused = _PerFrame(self.settings.stages[0], None, False, False, str(err), 0,
                                math.nan)
            return FrameOutcome(self._record(frame, start, refused, math.nan), None, str(err))
        network = self.calibrator.solve_global(features, points, frame.camera, self.prior)
        per_frame = self._global(network) if "global" in self._windows else None
        poolable: FrameMatches | None = None
        if per_frame is not None and per_frame.accepted:
            poolable = FrameMatches.from_global(network, frame.camera, features.pixel_scale)
        if "guided" in self._windows:
            per_frame, poolable = self._guided(features, points, frame.camera)
        if "joint" in self.settings.stages:
            self._update_joint(poolable)
        if "refine" in self.settings.stages:
            self._refine(frame, points)
        return FrameOutcome(self._record(frame, start, per_frame,
                                         network.quality.overlap_ratio), network)

    def _global(self, network: CalibrationResult) -> _PerFrame:
        quality = network.quality
        accepted = quality.valid and self._windows["global"].add(
            network.T_cam_lidar, weight=float(max(quality.num_inliers, 1)))
        return _PerFrame("global", network.T_cam_lidar, quality.valid, accepted,
                         "" if accepted else quality.reason or _OUTSIDE_PRIOR_BOUNDS,
                         quality.num_inliers, quality.reprojection_error_px)

    def _guided(self, features, points: np.ndarray, camera: CameraModel
                ) -> tuple[_PerFrame, FrameMatches | None]:
        """The guided stage's per-frame outcome and the matches it adds to the pool."""
        reference = self.prior if self.prior is not None else self.estimate().T_cam_lidar
        if reference is None:
            return _PerFrame("guided", None, False, False, "no reference pose yet (no prior, "
                             "no estimate)", 0, math.nan), None
        guided: GuidedResult = match_guided(features, points, camera, reference,
                                            self.settings.guided)
        inliers = int(guided.inliers.sum())
        T = None if guided.estimate is None else guided.estimate.T_cam_lidar
        accepted = guided.poolable and self._windows["guided"].add(
            T, weight=float(max(inliers, 1)), covariance=guided.estimate.covariance)
        reason = "" if accepted else guided.reason or _OUTSIDE_PRIOR_BOUNDS
        matches = guided.matches if guided.poolable else None
        return _PerFrame("guided", T, guided.poolable, accepted, reason, inliers,
                         math.nan), matches

    def _update_joint(self, matches: FrameMatches | None) -> None:
        """Pool a frame's matches (when it has any) and solve the window again."""
        if matches is None:
            return
        self._pool.append(matches)
        if len(self._pool) < self.settings.min_frames:
            self._joint = CalibrationEstimate.unsolved(
                "joint", f"{len(self._pool)} of {self.settings.min_frames} frames pooled",
                len(self._pool))
            return
        start = self._joint.T_cam_lidar if self._joint.solved else self.prior
        result = solve_joint(list(self._pool), self.settings.joint, start)
        self._joint = (CalibrationEstimate(True, result.estimate, "joint", len(self._pool),
                                           warnings=result.warnings) if result.solved
                       else CalibrationEstimate.unsolved("joint", result.reason,
                                                         len(self._pool)))

    def _refine(self, frame: Frame, points: np.ndarray) -> _PerFrame:
        """Add the frame to the refine window; refine when due. The frame's record with
        refine alone: it joined the window."""
        self._refine_frames.append(RefineFrame(frame.image, points, frame.camera, frame.ring))
        self._since_refine += 1
        s = self.settings
        if len(self._refine_frames) == s.refine_window and self._since_refine >= \
                s.refine_every:
            self._since_refine = 0
            before = [e for name, e in self.estimates().items() if name != "refine"
                      and e.solved]
            start = before[-1].T_cam_lidar if before else self.prior
            if start is not None:
                result = refine(list(self._refine_frames), start, s.refine)
                if result.solved:
                    self._refined = CalibrationEstimate(True, result.estimate, "refine",
                                                        result.frames_used)
                elif not self._refined.solved:
                    self._refined = CalibrationEstimate.unsolved("refine", result.reason,
                                                                 result.frames_used)
        return _PerFrame("refine", None, True, True, "", 0, math.nan)

    def _record(self, frame: Frame, start: float, per_frame: _PerFrame | None,
                overlap: float) -> FrameRecord:
        if per_frame is None:  # the joint stage alone: no per-frame pose
            per_frame = _PerFrame("", None, False, False, "", 0, math.nan)
        estimate = self.estimate()
        pose = estimate.pose
        return FrameRecord(
            frame.image_stamp, frame.cloud_stamp, per_frame.stage, per_frame.T,
            per_frame.valid, per_frame.accepted, per_frame.reason, per_frame.inliers,
            per_frame.error_px, overlap, estimate.T_cam_lidar,
            aggregate_stage=estimate.stage if estimate.solved else "",
            aggregate_sigma_rot_deg=NO_SIGMA.copy() if pose is None else pose.sigma_rot_deg,
            aggregate_sigma_trans_m=NO_SIGMA.copy() if pose is None else pose.sigma_trans_m,
            stage_estimates={name: e.T_cam_lidar for name, e in self.estimates().items()
                             if e.solved},
            latency_s=time.monotonic() - start)

    # -- estimates ------------------------------------------------------------------------
    def estimates(self) -> dict[str, CalibrationEstimate]:
        """Each enabled stage's current estimate, in stage order."""
        out = {name: stage.estimate for name, stage in self._windows.items()}
        if "joint" in self.settings.stages:
            out["joint"] = self._joint
        if "refine" in self.settings.stages:
            out["refine"] = self._refined
        return out

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


_OUTSIDE_PRIOR_BOUNDS = "outside the prior bounds of the window"
