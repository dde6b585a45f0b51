"""Closest-hit and shadow ray queries on triangle soups, through Embree (trimesh + embreex).

Embree finds which triangle each ray hits first (float32); the hit distance is then solved
exactly (float64) against that triangle's plane. A scene may hold several soups (a static
street built once per sequence, moving objects rebuilt per frame); a query takes the nearest
hit over all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
import trimesh.ray
from trimesh.ray.ray_pyembree import RayMeshIntersector

from nclr_core.data.synthetic.mesh import TriangleSoup


def require_embree() -> None:
    """Raise `RuntimeError` when trimesh cannot use Embree (embreex missing or broken)."""
    if not trimesh.ray.has_embree:
        raise RuntimeError(
            "trimesh has no Embree backend: install the pinned `embreex` package "
            "(requirements/base.txt); the synthetic generator needs it for ray casting"
        )


@dataclass(frozen=True)
class Hits:
    """Per-ray closest hits of N rays.

    distance (N,) float64 metres along the unit ray (inf on a miss), hit (N,) bool,
    normal (N, 3) unit face normal turned towards the ray origin, material (N,) int16,
    semantic (N,) int32, instance (N,) int32, color (N, 3) float32 (zeros / -1 on a miss
    for the attributes: material -1, semantic 0, instance 0).
    """

    distance: np.ndarray
    hit: np.ndarray
    normal: np.ndarray
    material: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    color: np.ndarray


class _SoupIntersector:
    """One soup with its Embree BVH and float64 face planes."""

    def __init__(self, soup: TriangleSoup) -> None:
        self.soup = soup
        tri = soup.vertices[soup.faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        self.normals = normals / np.maximum(length, 1e-300)
        self.plane_point = tri[:, 0]
        mesh = trimesh.Trimesh(soup.vertices, soup.faces, process=False, validate=False)
        self.intersector = RayMeshIntersector(mesh)

    def first(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face index (N,) (-1 on miss) and plane distance (N,) (inf on miss)."""
        face = np.asarray(self.intersector.intersects_first(origins, directions), dtype=np.int64)
        distance = np.full(len(origins), np.inf)
        hit = face >= 0
        if hit.any():
            n = self.normals[face[hit]]
            denom = np.einsum("ij,ij->i", n, directions[hit])
            num = np.einsum("ij,ij->i", n, self.plane_point[face[hit]] - origins[hit])
            with np.errstate(divide="ignore", invalid="ignore"):
                t = num / denom
            # A grazing ray (denominator ~ 0) or one starting on the plane: clamp to 0.
            distance[hit] = np.where(np.isfinite(t) & (t >= 0.0), t, 0.0)
        return face, distance


class RayScene:
    """Ray queries over one or more triangle soups (each with its own Embree BVH)."""

    def __init__(self, soups: list[TriangleSoup]) -> None:
        require_embree()
        self._parts = [_SoupIntersector(s) for s in soups if s.num_faces > 0]
        if not self._parts:
            raise ValueError("RayScene needs at least one non-empty triangle soup")

    def extended(self, soups: list[TriangleSoup]) -> RayScene:
        """A scene holding this one's soups (BVHs reused, not rebuilt) plus `soups`."""
        out = RayScene.__new__(RayScene)
        out._parts = self._parts + [_SoupIntersector(s) for s in soups if s.num_faces > 0]
        return out

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        """Closest hits of rays; origins (N, 3) world metres, directions (N, 3) unit."""
        origins = np.ascontiguousarray(origins, dtype=np.float64)
        directions = np.ascontiguousarray(directions, dtype=np.float64)
        n = len(origins)
        best = np.full(n, np.inf)
        part_of = np.full(n, -1, dtype=np.int64)
        face_of = np.full(n, -1, dtype=np.int64)
        for k, part in enumerate(self._parts):
            face, dist = part.first(origins, directions)
            closer = dist < best
            best[closer] = dist[closer]
            part_of[closer] = k
            face_of[closer] = face[closer]
        hit = part_of >= 0
        normal = np.zeros((n, 3))
        material = np.full(n, -1, dtype=np.int16)
        semantic = np.zeros(n, dtype=np.int32)
        instance = np.zeros(n, dtype=np.int32)
        color = np.zeros((n, 3), dtype=np.float32)
        for k, part in enumerate(self._parts):
            sel = np.flatnonzero(part_of == k)
            f = face_of[sel]
            normal[sel] = part.normals[f]
            material[sel] = part.soup.material[f]
            semantic[sel] = part.soup.semantic[f]
            instance[sel] = part.soup.instance[f]
            color[sel] = part.soup.color[f]
        facing = np.einsum("ij,ij->i", normal, directions) > 0.0
        normal[facing] *= -1.0
        return Hits(best, hit, normal, material, semantic, instance, color)

    def occluded(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Whether each ray (origins (N, 3), unit directions (N, 3)) hits anything: (N,) bool."""
        origins = np.ascontiguousarray(origins, dtype=np.float64)
        directions = np.ascontiguousarray(directions, dtype=np.float64)
        blocked = np.zeros(len(origins), dtype=bool)
        for part in self._parts:
            todo = np.flatnonzero(~blocked)
            if todo.size == 0:
                break
            blocked[todo] = part.intersector.intersects_any(origins[todo], directions[todo])
        return blocked
