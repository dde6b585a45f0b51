"""A synthetic driving sequence: one street, a camera + LiDAR rig, frames at a fixed rate.

Every random draw comes from a generator seeded by (seed, sequence index, purpose[, frame]),
so a frame is the same whatever order frames are generated in, and the same seed gives the
same data. Domain randomisation (`SyntheticConfig.randomise`) draws its sensor look from its
own generator, so with it off nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from nclr_core.data.synthetic.camera import CameraRender, Lighting, PinholeCamera, render_camera
from nclr_core.data.synthetic.lidar import LidarModel, LidarScan, scan_lidar
from nclr_core.data.synthetic.randomise import RandomiseConfig, SensorLook, draw_look
from nclr_core.data.synthetic.scene import StreetConfig, StreetScene, generate_street

# Axis change LiDAR (x forward, y left, z up) -> camera (x right, y down, z forward).
R_CAM_LIDAR_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])

_SCENE, _RIG, _FRAME, _LOOK = 0, 1, 2, 3


def default_T_cam_lidar(
    rotvec: tuple[float, float, float] = (0.004, -0.012, 0.008),
    translation: tuple[float, float, float] = (0.06, -0.08, -0.27),
) -> np.ndarray:
    """KITTI-like camera-2 <- LiDAR extrinsics (4, 4).

    The LiDAR axes are turned into camera axes, then by a small misalignment `rotvec`
    (radians, camera frame); `translation` (camera frame, metres) puts the LiDAR about
    0.27 m behind and 0.08 m above the camera, as on the KITTI car.
    """
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix() @ R_CAM_LIDAR_AXES
    T[:3, 3] = translation
    return T


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate: image size, LiDAR preset, frame rate, extrinsics and their jitter.

    `extrinsic_jitter_rad` / `extrinsic_jitter_m` are the standard deviations of a per-sequence
    perturbation of `T_cam_lidar` (rotation vector, translation); 0 keeps the default.
    `randomise` (off by default) draws each sequence's camera, lens, sun and LiDAR; its
    LiDAR preset then replaces `beams`.
    """

    width: int = 1242
    height: int = 375
    beams: int = 64
    rate_hz: float = 10.0
    image_noise_std: float = 2.0
    T_cam_lidar: tuple[tuple[float, ...], ...] = field(
        default_factory=lambda: tuple(map(tuple, default_T_cam_lidar()))
    )
    extrinsic_jitter_rad: float = 0.0
    extrinsic_jitter_m: float = 0.0
    street: StreetConfig = field(default_factory=StreetConfig)
    randomise: RandomiseConfig = field(default_factory=RandomiseConfig)

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz}")
        if self.extrinsic_jitter_rad < 0 or self.extrinsic_jitter_m < 0:
            raise ValueError("extrinsic jitter standard deviations must be >= 0")
        if np.asarray(self.T_cam_lidar).shape != (4, 4):
            raise ValueError("T_cam_lidar must be a 4 x 4 matrix")


@dataclass(frozen=True)
class SyntheticFrame:
    """One synchronised camera + LiDAR frame with its ground truth.

    `scan` holds points (N, 4) in the LiDAR frame with raw class / instance ids; `render`
    holds the RGB image and per-pixel depth / class / instance buffers; `T_world_lidar` (4, 4)
    is the ego LiDAR pose; `stamp` seconds since the sequence start.
    """

    index: int
    stamp: float
    scan: LidarScan
    render: CameraRender
    T_world_lidar: np.ndarray


class SyntheticSequence:
    """Sequence `index` of the data set generated from `seed`; frames on demand."""

    def __init__(
        self, seed: int, index: int, num_frames: int, config: SyntheticConfig | None = None
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if seed < 0 or index < 0:
            raise ValueError(f"seed and sequence index must be >= 0, got {seed}, {index}")
        self.seed, self.index, self.num_frames = seed, index, num_frames
        self.config = config or SyntheticConfig()
        c = self.config
        self.camera = PinholeCamera.kitti_like(c.width, c.height)
        self.lidar = LidarModel.preset(c.beams)
        duration = (num_frames - 1) / c.rate_hz
        self.scene: StreetScene = generate_street(
            np.random.default_rng([seed, index, _SCENE]), duration, c.street
        )
        self.lighting = Lighting(sun_direction=self.scene.sun_direction)
        self.look: SensorLook | None = None
        if c.randomise.enabled:
            self.look = draw_look(np.random.default_rng([seed, index, _LOOK]), c.randomise,
                                  self.camera.K, c.width, c.height)
            self.camera = PinholeCamera(c.width, c.height, self.camera.K, self.look.distortion)
            self.lidar = self.look.lidar
            self.lighting = Lighting(sun_direction=self.look.sun_direction)
        self.T_cam_lidar = self._extrinsics(np.random.default_rng([seed, index, _RIG]))
        self._static = self.scene.static_ray_scene()

    def _extrinsics(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        T = np.asarray(c.T_cam_lidar, dtype=np.float64).copy()
        delta = np.eye(4)
        delta[:3, :3] = Rotation.from_rotvec(
            rng.normal(0.0, c.extrinsic_jitter_rad, 3)
        ).as_matrix()
        delta[:3, 3] = rng.normal(0.0, c.extrinsic_jitter_m, 3)
        return delta @ T

    @property
    def K(self) -> np.ndarray:
        """Camera intrinsics (3, 3)."""
        return self.camera.K

    def frame(self, i: int) -> SyntheticFrame:
        """Generate frame i (0 <= i < num_frames)."""
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range for {self.num_frames} frames")
        stamp = i / self.config.rate_hz
        rng = np.random.default_rng([self.seed, self.index, _FRAME, i])
        rays = self.scene.ray_scene_at(self._static, stamp)
        T_world_lidar = self.scene.T_world_lidar(stamp)
        T_world_cam = T_world_lidar @ np.linalg.inv(self.T_cam_lidar)
        scan = scan_lidar(rays, T_world_lidar, self.lidar, rng)
        render = render_camera(
            rays, T_world_cam, self.camera, self.lighting, rng, self.config.image_noise_std,
            None if self.look is None else self.look.camera,
        )
        return SyntheticFrame(i, stamp, scan, render, T_world_lidar)
