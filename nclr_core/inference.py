"""Calibrator: one image + one LiDAR cloud in, `T_cam_lidar`, overlap and quality out.

What the ROS node and the offline tools call; NumPy in, NumPy out, never imports rclpy.

Per frame, `Calibrator.features` runs the network once and `Calibrator.solve_global` (the
online pipeline's `global` stage) solves on its matches; `Calibrator.calibrate` is the two:
1. the frame is fitted to the network as in training (`nclr_core.network_input`);
2. `CalibrationNet` predicts the point and image overlap and the soft matches; its features,
   overlap scores and similarity are kept (`NetworkFeatures`) for the later stages
   (`nclr_core.online.guided`), which need no second forward;
3. the matched pixels are mapped back to the input image through the inverse of the affine
   pixel map that the resize and crop applied to K (`A = K_net K_in^-1`, exact);
4. *(decision)* the network sees the raw (distorted) image, as delivered by the camera; the
   matched raw pixels are undistorted with the camera model (`CameraModel.undistort_points`)
   and the pose is solved by RANSAC-PnP with the input camera's K;
5. with a prior `T_init` (METHOD.md §1, online calibration), *(decision)* matches whose point
   the prior puts behind the camera are left out of the solve, and an estimate farther from
   the prior than the configured bounds is marked not valid. The network sees no prior; in
   a street that looks alike ahead and behind it also matches points behind the vehicle,
   and RANSAC then often prefers the pose turned by about 180° (`RESULTS.md`).

Points that are not fed to the network (outside the point range, or beyond `max_points`)
get overlap score 0 and `point_used = False`. The image overlap mask is at the input size:
255 where the predicted image overlap score exceeds the model's θ_i, else 0 (pixels cropped
away before the network are 0).

Aggregation over frames is `nclr_core.temporal_estimator.TemporalEstimator`; its owner (the
node) feeds it the valid `CalibrationResult.T_cam_lidar`s.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nclr_core.checkpoint import load_checkpoint
from nclr_core.data.collate import batch_to, collate_pairs
from nclr_core.data.config import checkpoint_data_config
from nclr_core.data.transforms import NormalizeImage
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.metrics import rre_geodesic_deg
from nclr_core.geometry.pnp_ransac import solve_pnp_ransac
from nclr_core.geometry.se3 import make_transform, transform_points
from nclr_core.models.calibration_net import CalibrationNet, build_calibration_net
from nclr_core.network_input import (
    NetworkInput,
    check_frame,
    fit_image,
    mask_at_input,
    select_points,
    to_input_pixels,
)


@dataclass(frozen=True)
class SolverSettings:
    """Robust pose solve and acceptance of one frame's estimate.

    reprojection_threshold_px: RANSAC inlier threshold in input-image pixels.
    ransac_iterations, ransac_confidence, seed: RANSAC budget, early-stop confidence, seed.
    min_inliers: fewer RANSAC inliers -> not valid.
    max_translation_m: sanity bound on |t| of T_cam_lidar (sensors on one vehicle), metres.
    max_rotation_from_prior_deg, max_translation_from_prior_m: with a `T_init`, estimates
        farther from it are not valid (None: no bound).
    """

    reprojection_threshold_px: float = 8.0
    ransac_iterations: int = 1000
    ransac_confidence: float = 0.999
    min_inliers: int = 12
    max_translation_m: float = 10.0
    max_rotation_from_prior_deg: float | None = 15.0
    max_translation_from_prior_m: float | None = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.reprojection_threshold_px > 0:
            raise ValueError("reprojection_threshold_px must be positive")
        if self.ransac_iterations < 1 or not 0 < self.ransac_confidence < 1:
            raise ValueError("ransac_iterations must be >= 1 and ransac_confidence in (0, 1)")
        if self.min_inliers < 4:
            raise ValueError(f"min_inliers must be at least 4, got {self.min_inliers}")
        if not self.max_translation_m > 0:
            raise ValueError("max_translation_m must be positive")


@dataclass(frozen=True)
class CalibrationQuality:
    """How much one frame's estimate can be trusted.

    overlap_ratio: share of the network's points with S^P > θ_p.
    num_points_used: points fed to the network; num_matches: soft matches solved on.
    num_inliers: RANSAC inliers; reprojection_error_px: RMS over the inliers, input pixels.
    rotation_from_prior_deg, translation_from_prior_m: distance to `T_init` (NaN without).
    valid: the estimate passed every check; reason: why not ("" when valid).
    """

    overlap_ratio: float
    num_points_used: int
    num_matches: int
    num_inliers: int
    reprojection_error_px: float
    rotation_from_prior_deg: float
    translation_from_prior_m: float
    valid: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Matches:
    """The network's point-to-pixel matches of one frame (K of them).

    point_index (K,) into the input points; points (K, 3) LiDAR frame, metres; pixels (K, 2)
    raw input-image pixels (u, v); weights (K,); inliers (K,) bool (RANSAC).
    """

    point_index: np.ndarray
    points: np.ndarray
    pixels: np.ndarray
    weights: np.ndarray
    inliers: np.ndarray


@dataclass(frozen=True)
class CalibrationResult:
    """One frame's calibration.

    T_cam_lidar (4, 4) float64, None when no pose was solved (`solved`); a solved pose may
    still be not valid (`quality.valid`, `quality.reason`). point_overlap (N,) float32 S^P
    of the input points (0 where not used); point_used (N,) bool; image_overlap_mask
    (H, W) uint8, 255 in the predicted overlap.
    """

    T_cam_lidar: np.ndarray | None
    point_overlap: np.ndarray
    point_used: np.ndarray
    image_overlap_mask: np.ndarray
    matches: Matches
    quality: CalibrationQuality

    @property
    def solved(self) -> bool:
        """A pose was solved (it may still have failed a check)."""
        return self.T_cam_lidar is not None


@dataclass(frozen=True)
class NetworkFeatures:
    """One network forward on one frame: what every matching stage reads.

    used: (M,) int64 indices of the input points fed to the network, ascending.
    A: (3, 3) affine pixel map, network px = A @ input px (homogeneous).
    K_net: (3, 3) `A @ camera.K`, the network image's intrinsics.
    point_feats: (M, C) float32 tensor F^P of the used points; image_feats: (C, h, w) F^I,
        cell (i, j) centred at `feature_grid.cell_centers` (network px), stride `stride`.
    point_scores: (M,) float32 S^P; image_scores: (h, w) float32 S^I.
    similarity: the model's aligned similarity, (N, C) x (L, C) tensors -> (N, L) scaled
        F̃ᴾ W_f F̃ᴵᵀ / τ (the logits of the soft matching).
    network_matches: the network's own soft matches: `point_index` (K,) into `used`,
        `pixels` (K, 2) float64 network px, `weights` (K,) float64.
    image_hw: (H, W) of the input image; num_points: N, input points.
    cell_convention: where the cells' centres are (`feature_grid.cell_centers`).
    fine_image_feats: (C_f, h2, w2) the fine stage's image map, None without one.
    """

    used: np.ndarray
    A: np.ndarray
    K_net: np.ndarray
    point_feats: torch.Tensor
    image_feats: torch.Tensor
    point_scores: np.ndarray
    image_scores: np.ndarray
    similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    stride: int
    network_matches: dict[str, np.ndarray]
    image_hw: tuple[int, int]
    num_points: int
    cell_convention: str
    fine_image_feats: torch.Tensor | None

    @property
    def pixel_scale(self) -> float:
        """Input-image pixels per network pixel (the resize keeps the aspect ratio)."""
        return 1.0 / float(self.A[0, 0])


def _checked_prior(T_init: np.ndarray | None) -> np.ndarray | None:
    """The prior as a float64 (4, 4) array, or None; ValueError when it is not one."""
    if T_init is None:
        return None
    T_init = np.asarray(T_init, dtype=np.float64)
    if T_init.shape != (4, 4) or not np.all(np.isfinite(T_init)):
        raise ValueError(f"T_init must be a finite (4, 4) transform, got {T_init.shape}")
    return T_init


class Calibrator:
    """NCLR LiDAR-camera calibration of single frames (see the module docstring)."""

    def __init__(
        self,
        model: CalibrationNet,
        network_input: NetworkInput,
        settings: SolverSettings | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not model.use_overlap:
            raise ValueError("the Calibrator needs a model with overlap detection "
                             "(use_overlap=True)")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.network_input = network_input
        self.settings = settings or SolverSettings()
        self._normalize = NormalizeImage()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        settings: SolverSettings | None = None,
    ) -> Calibrator:
        """Load a pre-training checkpoint (`model` state dict + resolved `config`; its data
        section read by `checkpoint_data_config`)."""
        payload = load_checkpoint(path, map_location=device)
        config = payload.get("config")
        if not isinstance(config, dict) or "model" not in config:
            raise ValueError(f"{path}: checkpoint has no config with 'model' and 'data'")
        if "model" not in payload:
            raise ValueError(f"{path}: checkpoint has no 'model' state dict")
        try:
            network_input = NetworkInput.from_config(checkpoint_data_config(config))
        except ValueError as err:  # ConfigError included
            raise ValueError(f"{path}: {err}") from err
        try:
            model = build_calibration_net(config["model"], network_input.point_range)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: the stored config does not build a model: {err}") from err
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as err:
            raise ValueError(f"{path}: weights do not fit the configured model: {err}") from err
        return cls(model, network_input, settings, device)

    # -- the frame ------------------------------------------------------------------------
    @torch.inference_mode()
    def features(self, image: np.ndarray, points: np.ndarray, camera: CameraModel
                 ) -> NetworkFeatures:
        """One network forward on a frame (arguments as in `calibrate`).

        Raises:
            ValueError: bad input, or no point inside the network's point range.
        """
        check_frame(image, points, camera)
        used = select_points(points, self.network_input, self.settings.seed)
        if len(used) == 0:
            raise ValueError(f"none of the {len(points)} points lies inside the network's "
                             f"point range {self.network_input.point_range}")
        net_image, A = fit_image(image, camera.K, self.network_input, self._normalize)
        sample = {"image": net_image, "points": points[used], "K": A @ camera.K}
        out = self.model(batch_to(collate_pairs([sample]), self.device))
        frame = out["matches"][0]
        matches = {"point_index": frame["point_index"].cpu().numpy(),
                   "pixels": frame["pixels"].double().cpu().numpy(),
                   "weights": frame["weights"].double().cpu().numpy()}
        return NetworkFeatures(
            used=used, A=A, K_net=A @ camera.K,
            point_feats=out["point_feats"], image_feats=out["image_feats"][0],
            point_scores=out["point_scores"].float().cpu().numpy(),
            image_scores=out["image_scores"][0].float().cpu().numpy(),
            similarity=self.model.alignment.similarity, stride=self.model.stride,
            network_matches=matches, image_hw=image.shape[:2], num_points=len(points),
            cell_convention=self.model.cell_convention,
            fine_image_feats=(out["fine_image_feats"][0] if "fine_image_feats" in out
                              else None))

    def calibrate(
        self,
        image: np.ndarray,
        points: np.ndarray,
        camera: CameraModel,
        T_init: np.ndarray | None = None,
    ) -> CalibrationResult:
        """Calibrate one frame: `solve_global(features(image, points, camera), ...)`.

        Args:
            image: (H, W, 3) uint8 RGB, raw (possibly distorted) as described by `camera`.
            points: (N, 4) float32 x y z intensity, LiDAR frame, all finite.
            camera: intrinsics, size (must match the image) and distortion.
            T_init: optional (4, 4) prior T_cam_lidar; estimates beyond the settings' bounds
                from it are not valid.
        Raises:
            ValueError: bad input, or no point inside the network's point range.
        """
        T_init = _checked_prior(T_init)
        return self.solve_global(self.features(image, points, camera), points, camera, T_init)

    def solve_global(
        self,
        features: NetworkFeatures,
        points: np.ndarray,
        camera: CameraModel,
        T_init: np.ndarray | None = None,
    ) -> CalibrationResult:
        """The `global` stage: RANSAC-PnP on the network's own matches of `features` (the
        forward on these `points` and `camera`; see `calibrate` for the arguments)."""
        T_init = _checked_prior(T_init)
        n, used = features.num_points, features.used
        point_overlap = np.zeros(n, dtype=np.float32)
        point_overlap[used] = features.point_scores
        point_used = np.zeros(n, dtype=bool)
        point_used[used] = True
        mask = mask_at_input(features.image_scores, features.A, features.image_hw,
                             self.network_input, features.stride, self.model.image_threshold,
                             features.cell_convention)

        frame = features.network_matches
        index = used[frame["point_index"]]
        pixels = to_input_pixels(features.A, frame["pixels"])
        weights = frame["weights"]
        T, inliers, error, reason = self._solve(points[index, :3].astype(np.float64), pixels,
                                                weights, camera, T_init)
        rot_prior, trans_prior = math.nan, math.nan
        if T_init is not None and not reason:
            rot_prior = float(rre_geodesic_deg(T_init[:3, :3], T[:3, :3]))
            trans_prior = float(np.linalg.norm(T_init[:3, 3] - T[:3, 3]))
            reason = self._prior_reason(rot_prior, trans_prior)
        quality = CalibrationQuality(
            overlap_ratio=float(np.mean(features.point_scores > self.model.point_threshold)),
            num_points_used=len(used),
            num_matches=len(index),
            num_inliers=int(inliers.sum()),
            reprojection_error_px=error,
            rotation_from_prior_deg=rot_prior,
            translation_from_prior_m=trans_prior,
            valid=not reason,
            reason=reason,
        )
        matches = Matches(index, points[index, :3].copy(), pixels, weights, inliers)
        return CalibrationResult(T, point_overlap, point_used, mask, matches, quality)

    def _solve(self, x3d: np.ndarray, pixels: np.ndarray, weights: np.ndarray,
               camera: CameraModel, T_init: np.ndarray | None
               ) -> tuple[np.ndarray | None, np.ndarray, float, str]:
        """RANSAC-PnP on undistorted matches: (T_cam_lidar or None when nothing was solved,
        inliers (K,), RMS px, reason).

        x3d (K, 3) LiDAR frame; pixels (K, 2) input image; weights (K,); with a prior T_init
        (4, 4), points it puts behind the camera are not used.
        """
        s = self.settings
        x2d = camera.undistort_points(pixels) if camera.distortion != "none" else pixels
        usable = np.all(np.isfinite(x2d), axis=1) & (weights > 0)
        behind = ""
        if T_init is not None:
            in_front = transform_points(T_init, x3d)[:, 2] > 0
            behind = f" ({int((usable & ~in_front).sum())} more behind the camera under the prior)"
            usable &= in_front
        inliers = np.zeros(len(x3d), dtype=bool)
        if usable.sum() < s.min_inliers:
            return None, inliers, math.nan, f"only {int(usable.sum())} usable matches{behind}"
        result = solve_pnp_ransac(
            x3d[usable], x2d[usable], camera.K,
            reproj_threshold_px=s.reprojection_threshold_px, iterations=s.ransac_iterations,
            confidence=s.ransac_confidence, seed=s.seed,
        )
        inliers[usable] = result.inliers
        if not result.valid:
            return None, inliers, math.nan, "RANSAC-PnP found no valid pose"
        T = make_transform(result.R, result.t)
        error = float(result.reproj_error)
        count = int(inliers.sum())
        distance = float(np.linalg.norm(T[:3, 3]))
        if count < s.min_inliers:
            reason = f"{count} RANSAC inliers, fewer than min_inliers={s.min_inliers}"
        elif distance > s.max_translation_m:
            reason = (f"translation {distance:.2f} m exceeds max_translation_m="
                      f"{s.max_translation_m} m")
        else:
            reason = ""
        return T, inliers, error, reason

    def _prior_reason(self, rotation_deg: float, translation_m: float) -> str:
        s = self.settings
        if s.max_rotation_from_prior_deg is not None and \
                rotation_deg > s.max_rotation_from_prior_deg:
            return (f"rotation {rotation_deg:.2f} deg from the prior exceeds "
                    f"{s.max_rotation_from_prior_deg} deg")
        if s.max_translation_from_prior_m is not None and \
                translation_m > s.max_translation_from_prior_m:
            return (f"translation {translation_m:.3f} m from the prior exceeds "
                    f"{s.max_translation_from_prior_m} m")
        return ""
