"""Ray-cast camera: textured Lambertian shading with cast shadows, sky and noise.

Besides the RGB image the renderer returns per-pixel depth, class and instance buffers, so
tests can check that LiDAR points and pixels agree. A `CameraLook` (domain randomisation,
`nclr_core.data.synthetic.randomise`) varies materials, shadows, optics and sensor noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nclr_core.data.synthetic.materials import albedo
from nclr_core.data.synthetic.randomise import CameraLook, expose, sensor_noise, vary_materials
from nclr_core.data.synthetic.raycast import RayScene
from nclr_core.geometry.camera import CameraModel

KITTI_SIZE = (1242, 375)
# KITTI odometry camera 2 intrinsics (fx = fy, principal point) for a 1242 x 375 image.
KITTI_FOCAL = 718.856
KITTI_PRINCIPAL = (607.1928, 185.2157)


@dataclass(frozen=True)
class PinholeCamera:
    """Camera of image `width` x `height` pixels, intrinsics K (3, 3) float64 and, when
    `distortion` (5,) is given, a plumb_bob lens (OpenCV k1 k2 p1 p2 k3): the image is then
    the raw (distorted) one."""

    width: int
    height: int
    K: np.ndarray
    distortion: np.ndarray | None = None

    @classmethod
    def kitti_like(cls, width: int = KITTI_SIZE[0], height: int = KITTI_SIZE[1]) -> PinholeCamera:
        """KITTI camera-2 intrinsics, scaled when the image size differs from 1242 x 375."""
        if width < 2 or height < 2:
            raise ValueError(f"image size must be at least 2 x 2 pixels, got {width} x {height}")
        sx, sy = width / KITTI_SIZE[0], height / KITTI_SIZE[1]
        K = np.array(
            [
                [KITTI_FOCAL * sx, 0.0, KITTI_PRINCIPAL[0] * sx],
                [0.0, KITTI_FOCAL * sy, KITTI_PRINCIPAL[1] * sy],
                [0.0, 0.0, 1.0],
            ]
        )
        return cls(width, height, K)

    @property
    def model(self) -> CameraModel:
        """The same camera as the project's `CameraModel` (plumb_bob or no distortion)."""
        if self.distortion is None:
            return CameraModel(self.K, self.width, self.height)
        return CameraModel(self.K, self.width, self.height, "plumb_bob", self.distortion)

    @cached_property
    def ray_directions(self) -> np.ndarray:
        """Unit rays (H * W, 3) in the camera frame through pixel centres (u, v integers),
        row-major (v slowest), through the lens when there is one; computed once per camera."""
        u, v = np.meshgrid(np.arange(self.width), np.arange(self.height))
        pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1).astype(np.float64)
        if self.distortion is None:
            rays = pix @ np.linalg.inv(self.K).T
        else:
            rays = self.model.unproject(pix[:, :2], np.ones(u.size))
            if not np.all(np.isfinite(rays)):
                raise ValueError(f"lens distortion {self.distortion.tolist()} cannot image "
                                 "every pixel (undistortion failed)")
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)


@dataclass(frozen=True)
class Lighting:
    """Sun (unit direction towards it, world frame) and sky, in linear RGB."""

    sun_direction: np.ndarray
    sun_color: tuple[float, float, float] = (1.0, 0.95, 0.85)
    ambient_color: tuple[float, float, float] = (0.30, 0.33, 0.40)
    sky_horizon: tuple[float, float, float] = (0.75, 0.82, 0.90)
    sky_zenith: tuple[float, float, float] = (0.25, 0.45, 0.80)
    haze_distance: float = 600.0


@dataclass(frozen=True)
class CameraRender:
    """image uint8 (H, W, 3) RGB; depth float32 (H, W) camera z in metres (inf: sky);
    semantic int32 (H, W) SemanticKITTI raw ids (0: sky); instance int32 (H, W)."""

    image: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray


def render_camera(
    scene: RayScene,
    T_world_cam: np.ndarray,
    camera: PinholeCamera,
    lighting: Lighting,
    rng: np.random.Generator,
    noise_std: float = 2.0,
    look: CameraLook | None = None,
) -> CameraRender:
    """Render the view of a camera at pose `T_world_cam` (4, 4); `noise_std` in 8-bit levels
    (Gaussian), or with `look` that sequence's materials, shadows, optics and sensor noise."""
    rays_cam = camera.ray_directions
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    dirs = rays_cam @ R.T
    origins = np.broadcast_to(t, dirs.shape)
    hits = scene.cast(origins, dirs)
    H, W = camera.height, camera.width

    radiance = np.empty((dirs.shape[0], 3))
    sky = ~hits.hit
    up = np.clip(dirs[sky, 2], 0.0, 1.0)[:, None]
    radiance[sky] = (1.0 - up) * np.array(lighting.sky_horizon) + up * np.array(
        lighting.sky_zenith
    )

    idx = np.flatnonzero(hits.hit)
    points = t + dirs[idx] * hits.distance[idx, None]
    normals = hits.normal[idx]
    base = albedo(hits.material[idx], points, normals, hits.color[idx])
    if look is not None:
        base = vary_materials(base, hits.color[idx], hits.material[idx], look)
    sun = np.asarray(lighting.sun_direction, dtype=np.float64)
    lambert = np.clip(normals @ sun, 0.0, None)
    facing = np.flatnonzero(lambert > 0.0)
    shadow_origins = points[facing] + normals[facing] * 0.02
    shadowed = scene.occluded(shadow_origins, np.broadcast_to(sun, shadow_origins.shape))
    shadow_strength = 1.0 if look is None else look.shadow_strength
    lambert[facing[shadowed]] *= 1.0 - shadow_strength
    sky_light = (0.6 + 0.4 * normals[:, 2])[:, None] * np.array(lighting.ambient_color)
    lit = base * (sky_light + lambert[:, None] * np.array(lighting.sun_color))
    haze = 1.0 - np.exp(-hits.distance[idx] / lighting.haze_distance)
    radiance[idx] = lit * (1.0 - haze[:, None]) + haze[:, None] * np.array(lighting.sky_horizon)

    gamma = 2.2
    if look is not None:
        radiance = expose(radiance.reshape(H, W, 3), look, camera.K).reshape(-1, 3)
        gamma = look.response_gamma
    srgb = np.power(np.clip(radiance, 0.0, 1.0).astype(np.float32), np.float32(1.0 / gamma))
    srgb *= np.float32(255.0)
    if look is None:
        srgb += rng.standard_normal(srgb.shape, dtype=np.float32) * np.float32(noise_std)
    else:
        srgb = sensor_noise(srgb, look, rng)
    image = np.clip(np.rint(srgb), 0, 255).astype(np.uint8).reshape(H, W, 3)
    depth = (hits.distance * rays_cam[:, 2]).astype(np.float32).reshape(H, W)
    return CameraRender(
        image=image,
        depth=depth,
        semantic=hits.semantic.reshape(H, W),
        instance=hits.instance.reshape(H, W),
    )
