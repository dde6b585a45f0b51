"""Surface materials of the synthetic scenes: class id, LiDAR reflectivity, procedural texture.

Class ids are SemanticKITTI raw ids (semantic-kitti.yaml `labels`), so the written `.label`
files go through the standard learning map unchanged. Textures are functions of the world
position of a surface point (metres), so the camera sees the same pattern from every view.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

# SemanticKITTI raw ids used by the generator.
UNLABELED = 0
CAR = 10
BICYCLE = 11
TRUCK = 18
PERSON = 30
BICYCLIST = 31
ROAD = 40
PARKING = 44
SIDEWALK = 48
BUILDING = 50
FENCE = 51
LANE_MARKING = 60
VEGETATION = 70
TRUNK = 71
TERRAIN = 72
POLE = 80
TRAFFIC_SIGN = 81

# Static raw id -> its SemanticKITTI "moving-*" raw id.
MOVING_ID: dict[int, int] = {CAR: 252, BICYCLIST: 253, PERSON: 254, TRUCK: 258}


class Texture(IntEnum):
    """Procedural texture families (see `albedo`)."""

    FLAT = 0
    ASPHALT = 1
    TILES = 2
    FACADE = 3
    FOLIAGE = 4
    GRASS = 5
    BARK = 6
    PAINT = 7
    GLASS = 8
    MARKING = 9
    SLATS = 10


@dataclass(frozen=True)
class Material:
    """A surface kind: `color` is the default linear RGB albedo, `reflectivity` in [0, 1]."""

    name: str
    semantic_id: int
    reflectivity: float
    texture: Texture
    color: tuple[float, float, float]


MATERIALS: tuple[Material, ...] = (
    Material("road", ROAD, 0.12, Texture.ASPHALT, (0.16, 0.16, 0.17)),
    Material("lane_marking", LANE_MARKING, 0.75, Texture.MARKING, (0.85, 0.85, 0.82)),
    Material("parking", PARKING, 0.14, Texture.TILES, (0.24, 0.22, 0.21)),
    Material("sidewalk", SIDEWALK, 0.30, Texture.TILES, (0.45, 0.43, 0.40)),
    Material("terrain", TERRAIN, 0.35, Texture.GRASS, (0.26, 0.30, 0.12)),
    Material("facade", BUILDING, 0.40, Texture.FACADE, (0.55, 0.45, 0.35)),
    Material("window", BUILDING, 0.05, Texture.GLASS, (0.05, 0.07, 0.10)),
    Material("fence", FENCE, 0.35, Texture.SLATS, (0.40, 0.30, 0.20)),
    Material("foliage", VEGETATION, 0.55, Texture.FOLIAGE, (0.10, 0.28, 0.06)),
    Material("bark", TRUNK, 0.30, Texture.BARK, (0.22, 0.14, 0.08)),
    Material("pole", POLE, 0.45, Texture.FLAT, (0.50, 0.52, 0.55)),
    Material("sign", TRAFFIC_SIGN, 0.95, Texture.FLAT, (0.75, 0.05, 0.05)),
    Material("car_paint", CAR, 0.50, Texture.PAINT, (0.60, 0.05, 0.05)),
    Material("car_glass", CAR, 0.08, Texture.GLASS, (0.04, 0.05, 0.07)),
    Material("tire", CAR, 0.10, Texture.FLAT, (0.03, 0.03, 0.03)),
    Material("truck_paint", TRUCK, 0.55, Texture.PAINT, (0.80, 0.80, 0.78)),
    Material("clothes", PERSON, 0.35, Texture.FLAT, (0.20, 0.25, 0.50)),
    Material("skin", PERSON, 0.35, Texture.FLAT, (0.70, 0.50, 0.38)),
    Material("bicycle", BICYCLE, 0.45, Texture.FLAT, (0.10, 0.35, 0.55)),
)

MATERIAL_REFLECTIVITY = np.array([m.reflectivity for m in MATERIALS], dtype=np.float64)
MATERIAL_TEXTURE = np.array([int(m.texture) for m in MATERIALS], dtype=np.int64)


def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Deterministic integer-lattice hash -> float64 in [0, 1)."""
    h = (
        ix.astype(np.int64) * 73856093
        ^ iy.astype(np.int64) * 19349663
        ^ iz.astype(np.int64) * 83492791
    ) & 0xFFFFFFFF
    h = (h ^ (h >> 13)) * 1274126177 & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(np.float64) / float(0x1000000)


def cell_noise(points: np.ndarray, cell: float) -> np.ndarray:
    """Blocky value noise: one random value in [0, 1) per cube of side `cell` metres.

    points (N, 3) world metres -> (N,).
    """
    q = np.floor(points / cell)
    return _hash(q[:, 0], q[:, 1], q[:, 2])


def smooth_noise(points: np.ndarray, cell: float) -> np.ndarray:
    """Trilinearly interpolated value noise in [0, 1); points (N, 3) -> (N,)."""
    p = points / cell
    q = np.floor(p)
    f = p - q
    f = f * f * (3.0 - 2.0 * f)
    out = np.zeros(len(points))
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                out += wx * wy * wz * _hash(q[:, 0] + dx, q[:, 1] + dy, q[:, 2] + dz)
    return out


def _along_wall(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Horizontal coordinate along a vertical surface (metres), (N,)."""
    return np.where(np.abs(normals[:, 0]) > np.abs(normals[:, 1]), points[:, 1], points[:, 0])


def albedo(
    material: np.ndarray, points: np.ndarray, normals: np.ndarray, base: np.ndarray
) -> np.ndarray:
    """Textured linear RGB albedo of surface points.

    material (N,) material indices, points (N, 3) world metres, normals (N, 3) unit,
    base (N, 3) per-face base colour -> (N, 3) float64 in [0, 1].
    """
    texture = MATERIAL_TEXTURE[material]
    out = base.astype(np.float64).copy()
    for kind in np.unique(texture):
        sel = np.flatnonzero(texture == kind)
        p, n, c = points[sel], normals[sel], out[sel]
        if kind == Texture.ASPHALT:
            grain = cell_noise(p, 0.05)
            patches = smooth_noise(p, 3.0)
            c *= (0.75 + 0.35 * grain + 0.45 * patches)[:, None]
        elif kind == Texture.TILES:
            u = np.mod(p[:, 0], 0.6)
            v = np.mod(p[:, 1], 0.6)
            grout = (u < 0.04) | (v < 0.04)
            c *= np.where(grout, 0.45, 0.85 + 0.3 * cell_noise(p, 0.6))[:, None]
        elif kind == Texture.FACADE:
            s = _along_wall(p, n)
            band = np.mod(p[:, 2], 3.0) < 0.35
            pilaster = np.mod(s, 4.0) < 0.4
            stain = smooth_noise(p, 1.5)
            shade = np.where(band | pilaster, 0.6, 0.9 + 0.25 * stain)
            c *= (shade * (0.9 + 0.2 * cell_noise(p, 0.3)))[:, None]
        elif kind == Texture.FOLIAGE:
            leaves = cell_noise(p, 0.25)
            c *= (0.45 + 1.1 * leaves)[:, None]
            c[:, 0] += 0.05 * smooth_noise(p, 2.0)
        elif kind == Texture.GRASS:
            g = smooth_noise(p, 1.0)
            c *= (0.7 + 0.4 * cell_noise(p, 0.1))[:, None]
            c[:, 0] += 0.12 * g
            c[:, 2] *= 0.6 + 0.5 * g
        elif kind == Texture.BARK:
            c *= (0.7 + 0.6 * cell_noise(p * np.array([4.0, 4.0, 0.5]), 0.5))[:, None]
        elif kind == Texture.PAINT:
            c *= (0.85 + 0.25 * np.clip(n[:, 2], 0.0, 1.0))[:, None]
        elif kind == Texture.GLASS:
            c += (0.10 * smooth_noise(p, 0.8) * np.clip(n[:, 2] + 0.5, 0.0, 1.0))[:, None]
        elif kind == Texture.MARKING:
            c *= (0.85 + 0.15 * cell_noise(p, 0.1))[:, None]
        elif kind == Texture.SLATS:
            s = _along_wall(p, n)
            c *= np.where(np.mod(s, 0.15) < 0.03, 0.35, 1.0)[:, None]
        else:
            c *= (0.95 + 0.1 * cell_noise(p, 0.5))[:, None]
        out[sel] = c
    return np.clip(out, 0.0, 1.0)
