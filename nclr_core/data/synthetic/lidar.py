"""Ray-cast spinning LiDAR: beam layouts, range noise, dropout, intensity, per-point labels."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from nclr_core.data.synthetic.materials import MATERIAL_REFLECTIVITY
from nclr_core.data.synthetic.raycast import RayScene


@dataclass(frozen=True)
class LidarModel:
    """A spinning LiDAR with `num_beams` beams evenly spread in elevation (radians).

    One full turn is sampled every `azimuth_step` radians. Returns closer than `min_range` or
    farther than `max_range` (metres) are lost; each return is dropped with probability
    `dropout`, plus up to `dark_dropout` more for dark, distant surfaces.

    Intensity: each material's reflectivity (times `reflectivity_scale[material]` when given)
    times `incidence_floor + (1 - incidence_floor) |cos incidence|`, raised to
    `intensity_gamma`, plus Gaussian noise, clipped to [0, 1].
    """

    PRESET_BEAMS: ClassVar[tuple[int, ...]] = (16, 32, 64, 128)

    num_beams: int = 64
    elevation_max: float = float(np.radians(2.0))
    elevation_min: float = float(np.radians(-24.9))
    azimuth_step: float = float(np.radians(0.17))
    min_range: float = 0.9
    max_range: float = 120.0
    range_noise_std: float = 0.02
    dropout: float = 0.01
    dark_dropout: float = 0.3
    intensity_noise_std: float = 0.02
    incidence_floor: float = 0.2
    intensity_gamma: float = 1.0
    reflectivity_scale: tuple[float, ...] | None = None

    @classmethod
    def preset(cls, beams: int) -> LidarModel:
        """HDL-64E-like (64), HDL-32E-like (32), VLP-16-like (16) or VLS-128-like (128)
        layout."""
        if beams == 64:
            return cls()
        if beams == 32:
            return cls(num_beams=32, elevation_max=float(np.radians(10.67)),
                       elevation_min=float(np.radians(-30.67)), max_range=100.0)
        if beams == 16:
            return cls(num_beams=16, elevation_max=float(np.radians(15.0)),
                       elevation_min=float(np.radians(-15.0)),
                       azimuth_step=float(np.radians(0.2)), max_range=100.0)
        if beams == 128:
            return cls(num_beams=128, elevation_max=float(np.radians(15.0)),
                       elevation_min=float(np.radians(-25.0)),
                       azimuth_step=float(np.radians(0.2)), max_range=200.0)
        raise ValueError(f"no LiDAR preset for {beams} beams (choose 128, 64, 32 or 16)")

    @property
    def num_azimuths(self) -> int:
        return int(round(2.0 * np.pi / self.azimuth_step))

    @cached_property
    def ray_directions(self) -> np.ndarray:
        """Unit ray directions (num_azimuths * num_beams, 3) in the LiDAR frame (cached).

        Ordered azimuth-major (one column of beams after another, as a spinning sensor
        streams them), starting behind the sensor and turning counter-clockwise.
        """
        elevation = np.linspace(self.elevation_max, self.elevation_min, self.num_beams)
        azimuth = -np.pi + self.azimuth_step * np.arange(self.num_azimuths)
        az, el = np.meshgrid(azimuth, elevation, indexing="ij")
        return np.stack(
            [np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1
        ).reshape(-1, 3)


@dataclass(frozen=True)
class LidarScan:
    """One scan: points float32 (N, 4) x y z intensity in the LiDAR frame, semantic (N,)
    int32 SemanticKITTI raw ids, instance (N,) int32 (0 for stuff)."""

    points: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray


def scan_lidar(
    scene: RayScene, T_world_lidar: np.ndarray, model: LidarModel, rng: np.random.Generator
) -> LidarScan:
    """Cast one LiDAR turn from pose `T_world_lidar` (4, 4) into `scene`.

    Intensity as `LidarModel` describes (0.2 + 0.8 |cos incidence| by default).
    """
    directions = model.ray_directions
    R, t = T_world_lidar[:3, :3], T_world_lidar[:3, 3]
    world_dirs = directions @ R.T
    origins = np.broadcast_to(t, world_dirs.shape)
    hits = scene.cast(origins, world_dirs)
    keep = hits.hit & (hits.distance >= model.min_range) & (hits.distance <= model.max_range)
    idx = np.flatnonzero(keep)
    distance = hits.distance[idx]
    cos_inc = np.abs(np.einsum("ij,ij->i", hits.normal[idx], world_dirs[idx]))
    reflectivity = MATERIAL_REFLECTIVITY[hits.material[idx]]
    if model.reflectivity_scale is not None:
        scale = np.asarray(model.reflectivity_scale)[hits.material[idx]]
        reflectivity = np.clip(reflectivity * scale, 0.0, 1.0)
    floor = model.incidence_floor
    intensity = (reflectivity * (floor + (1.0 - floor) * cos_inc)) ** model.intensity_gamma
    drop_p = model.dropout + model.dark_dropout * (1.0 - intensity) * (
        distance / model.max_range
    ) ** 2
    survive = rng.random(idx.size) >= drop_p
    noisy = distance + rng.normal(0.0, model.range_noise_std, idx.size)
    intensity = np.clip(intensity + rng.normal(0.0, model.intensity_noise_std, idx.size), 0, 1)
    idx, noisy, intensity = idx[survive], noisy[survive], intensity[survive]
    xyz = directions[idx] * noisy[:, None]
    points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
    return LidarScan(points, hits.semantic[idx].copy(), hits.instance[idx].copy())
