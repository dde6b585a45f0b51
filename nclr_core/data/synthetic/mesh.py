"""Triangle soups with per-triangle attributes, and the primitives scenes are built from.

A `TriangleSoup` is what the ray caster consumes: vertices (V, 3) in metres, faces (F, 3) and,
per face, a material index (into `materials.MATERIALS`), a SemanticKITTI raw class id, an
instance id (0 for stuff) and a linear RGB base colour. Primitives are built in an object's
local frame (x forward, y left, z up) and placed with a yaw about z and a translation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh.creation

from nclr_core.data.synthetic.materials import MATERIALS


@dataclass(frozen=True)
class TriangleSoup:
    """Triangles with per-face attributes.

    vertices (V, 3) float64, faces (F, 3) int32, material (F,) int16, semantic (F,) int32
    (SemanticKITTI raw id), instance (F,) int32, color (F, 3) float32 linear RGB in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    material: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    color: np.ndarray

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> TriangleSoup:
        """Return a copy with vertices mapped by `p' = rotation @ p + translation`."""
        vertices = self.vertices @ np.asarray(rotation).T + np.asarray(translation)
        return TriangleSoup(
            vertices, self.faces, self.material, self.semantic, self.instance, self.color
        )

    @staticmethod
    def concatenate(soups: list[TriangleSoup]) -> TriangleSoup:
        """Merge soups into one (face order follows the list order)."""
        if not soups:
            raise ValueError("cannot concatenate an empty list of triangle soups")
        offsets = np.cumsum([0] + [s.vertices.shape[0] for s in soups[:-1]])
        return TriangleSoup(
            np.concatenate([s.vertices for s in soups]),
            np.concatenate([s.faces + o for s, o in zip(soups, offsets, strict=True)]).astype(
                np.int32
            ),
            np.concatenate([s.material for s in soups]),
            np.concatenate([s.semantic for s in soups]),
            np.concatenate([s.instance for s in soups]),
            np.concatenate([s.color for s in soups]),
        )


def rot_z(yaw: float) -> np.ndarray:
    """Rotation (3, 3) about +z by `yaw` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_BOX_CORNERS = np.array(
    [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=np.float64
)
# Outward-facing winding for the corner order above (index = 4x + 2y + z).
_BOX_FACES = np.array(
    [
        [0, 1, 3], [0, 3, 2],  # -x
        [4, 6, 7], [4, 7, 5],  # +x
        [0, 4, 5], [0, 5, 1],  # -y
        [2, 3, 7], [2, 7, 6],  # +y
        [0, 2, 6], [0, 6, 4],  # -z
        [1, 5, 7], [1, 7, 3],  # +z
    ],
    dtype=np.int32,
)  # fmt: skip


def box_geometry(size: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box centred at the origin: vertices (8, 3), faces (12, 3)."""
    return _BOX_CORNERS * np.asarray(size, dtype=np.float64), _BOX_FACES


def cylinder_geometry(radius: float, height: float, segments: int = 10) -> tuple[
    np.ndarray, np.ndarray
]:
    """Closed cylinder along +z from z=0 to z=height: vertices (2S+2, 3), faces (4S, 3)."""
    angles = np.arange(segments) * (2.0 * np.pi / segments)
    ring = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    bottom = np.concatenate([ring, np.zeros((segments, 1))], axis=1)
    top = np.concatenate([ring, np.full((segments, 1), height)], axis=1)
    centres = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, height]])
    vertices = np.concatenate([bottom, top, centres])
    i = np.arange(segments)
    j = (i + 1) % segments
    cb, ct = 2 * segments, 2 * segments + 1
    faces = np.concatenate(
        [
            np.stack([i, j, segments + j], axis=1),
            np.stack([i, segments + j, segments + i], axis=1),
            np.stack([np.full(segments, cb), j, i], axis=1),
            np.stack([np.full(segments, ct), segments + i, segments + j], axis=1),
        ]
    )
    return vertices, faces.astype(np.int32)


_ICO = trimesh.creation.icosphere(subdivisions=1)
_ICO_VERTICES = np.asarray(_ICO.vertices, dtype=np.float64)
_ICO_FACES = np.asarray(_ICO.faces, dtype=np.int32)


def ellipsoid_geometry(radii: tuple[float, float, float], rng: np.random.Generator | None = None,
                       roughness: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Low-poly ellipsoid centred at the origin (80 faces); `roughness` jitters radii."""
    scale = np.ones(len(_ICO_VERTICES))
    if rng is not None and roughness > 0.0:
        scale = 1.0 + roughness * rng.uniform(-1.0, 1.0, len(_ICO_VERTICES))
    return _ICO_VERTICES * scale[:, None] * np.asarray(radii), _ICO_FACES


@dataclass
class SoupBuilder:
    """Accumulates primitives into a `TriangleSoup`."""

    parts: list[TriangleSoup] = field(default_factory=list)

    def add(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        material: str,
        color: tuple[float, float, float] | np.ndarray | None = None,
        instance: int = 0,
        semantic: int | None = None,
    ) -> None:
        """Add triangles of one material; `semantic` overrides the material's class id."""
        mat_index = MATERIAL_INDEX[material]
        mat = MATERIALS[mat_index]
        n = faces.shape[0]
        rgb = np.asarray(mat.color if color is None else color, dtype=np.float32)
        self.parts.append(
            TriangleSoup(
                np.asarray(vertices, dtype=np.float64),
                np.asarray(faces, dtype=np.int32),
                np.full(n, mat_index, dtype=np.int16),
                np.full(n, mat.semantic_id if semantic is None else semantic, dtype=np.int32),
                np.full(n, instance, dtype=np.int32),
                np.broadcast_to(rgb, (n, 3)).copy(),
            )
        )

    def add_box(
        self,
        size: tuple[float, float, float],
        center: tuple[float, float, float] | np.ndarray,
        material: str,
        yaw: float = 0.0,
        **kwargs,
    ) -> None:
        """Add a box of `size` (x, y, z extents) centred at `center`, turned by `yaw`."""
        v, f = box_geometry(size)
        self.add(v @ rot_z(yaw).T + np.asarray(center), f, material, **kwargs)

    def add_cylinder(
        self,
        radius: float,
        height: float,
        base: tuple[float, float, float] | np.ndarray,
        material: str,
        rotation: np.ndarray | None = None,
        segments: int = 10,
        **kwargs,
    ) -> None:
        """Add a cylinder whose axis starts at `base`, along +z (or `rotation @ z`)."""
        v, f = cylinder_geometry(radius, height, segments)
        if rotation is not None:
            v = v @ np.asarray(rotation).T
        self.add(v + np.asarray(base), f, material, **kwargs)

    def add_ellipsoid(
        self,
        radii: tuple[float, float, float],
        center: tuple[float, float, float] | np.ndarray,
        material: str,
        rng: np.random.Generator | None = None,
        roughness: float = 0.0,
        **kwargs,
    ) -> None:
        """Add a low-poly ellipsoid centred at `center`."""
        v, f = ellipsoid_geometry(radii, rng, roughness)
        self.add(v + np.asarray(center), f, material, **kwargs)

    def build(self) -> TriangleSoup:
        """Return everything added so far as one soup."""
        return TriangleSoup.concatenate(self.parts)


MATERIAL_INDEX: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}
