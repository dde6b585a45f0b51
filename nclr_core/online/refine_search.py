"""How the refinement searches δ = (ω, ρ) (`nclr_core.online.pose`) for the maximum of the
window objective: a grid over the rotation bounds at the widest kernel, then Nelder-Mead from
the grid's best local maxima, the distinct maxima carried from level to level (a wide
kernel's maximum may be off by more than the next kernel's reach) down to the finest kernel.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from nclr_core.online.refine_objective import WindowObjective
from nclr_core.online.refine_uncertainty import hessian


@dataclass(frozen=True)
class SearchSettings:
    """The search's constants (documented in `refine.RefineSettings`)."""

    max_rotation_deg: float
    max_translation_m: float
    grid_points: int
    finest_decay_deg: float
    level_ratio: float
    starts: int
    hypotheses: int
    restarts: int
    x_tolerance: float
    j_tolerance: float
    valley_directions: int
    valley_reach: float
    valley_points: int


@dataclass(frozen=True, eq=False)
class Maximum:
    """A local maximum of the finest level's objective: δ (6,) and J there."""

    delta: NDArray[np.float64]
    value: float


def within_bounds(delta: NDArray, settings: SearchSettings, margin: float = 1.0) -> bool:
    """Whether δ (6,) turns at most margin * max_rotation_deg and moves at most
    margin * max_translation_m."""
    return (np.degrees(np.linalg.norm(delta[:3])) <= margin * settings.max_rotation_deg
            and np.linalg.norm(delta[3:]) <= margin * settings.max_translation_m)


def _excess(delta: NDArray, settings: SearchSettings) -> float:
    """How far δ lies outside the bounds, relative to them (0 inside)."""
    rotation = np.degrees(np.linalg.norm(delta[:3])) / settings.max_rotation_deg
    translation = np.linalg.norm(delta[3:]) / settings.max_translation_m
    return max(rotation - 1.0, translation - 1.0, 0.0)


def decay_schedule(settings: SearchSettings) -> list[float]:
    """The levels' kernels (deg), coarse to fine: from the grid step to finest_decay_deg in
    equal ratios, the number of steps the one that brings the ratio nearest level_ratio."""
    coarsest = 2.0 * settings.max_rotation_deg / (settings.grid_points - 1)
    span = np.log(max(coarsest, settings.finest_decay_deg) / settings.finest_decay_deg)
    steps = max(int(round(span / np.log(settings.level_ratio))), 1)
    return [float(d) for d in np.exp(np.log(coarsest) - span * np.arange(steps + 1) / steps)]


def local_search(J: WindowObjective, start: NDArray, scale: NDArray,
                 settings: SearchSettings) -> Maximum:
    """Nelder-Mead from δ = start (6,) in units of `scale` (6,), restarted from its own
    result with a fresh simplex while that still improves (a collapsed simplex stops early
    in this objective's flat valleys). Outside the bounds the objective is a penalty that
    grows with the excess, so the simplex is led back."""
    def negative(x: NDArray) -> float:
        delta = x * scale
        excess = _excess(delta, settings)
        return 1e3 * (1.0 + excess) if excess > 0.0 else -J(delta)

    x, value = start / scale, negative(start / scale)
    for _ in range(1 + settings.restarts):
        simplex = np.vstack([x, x + np.eye(6)])
        result = minimize(negative, x, method="Nelder-Mead",
                          options={"initial_simplex": simplex, "xatol": settings.x_tolerance,
                                   "fatol": settings.j_tolerance, "maxfev": 1500})
        improved = value - float(result.fun) > settings.j_tolerance
        if float(result.fun) < value:
            x, value = result.x, float(result.fun)
        if not improved:
            break
    return Maximum(x * scale, -value)


def _weak_directions(J: WindowObjective, delta: NDArray, scale: NDArray, count: int
                     ) -> NDArray:
    """(count, 6) unit directions (in units of `scale`) along which J curves least at δ:
    the eigenvectors of the scaled Hessian with the largest eigenvalues."""
    H = hessian(J, delta, 0.5 * scale) * np.outer(scale, scale)
    eigenvalues, vectors = np.linalg.eigh(0.5 * (H + H.T))
    return vectors[:, np.argsort(eigenvalues)[::-1][:count]].T


def valley_search(J: WindowObjective, found: Maximum, scale: NDArray,
                  settings: SearchSettings) -> Maximum:
    """Look along the directions where J curves least (a flat valley, where Nelder-Mead
    stalls: on KITTI's wide, short images the roll about the optical axis) out to
    +-valley_reach kernels; restart the local search from a better point when there is one."""
    best = found
    for direction in _weak_directions(J, found.delta, scale, settings.valley_directions):
        for step in np.linspace(-settings.valley_reach, settings.valley_reach,
                                settings.valley_points):
            delta = found.delta + step * direction * scale
            if _excess(delta, settings) == 0.0:
                value = J(delta)
                if value > best.value + settings.j_tolerance:
                    best = Maximum(delta, value)
    if best is found:
        return found
    return local_search(J, best.delta, scale, settings)


def grid_maxima(J: WindowObjective, settings: SearchSettings) -> list[NDArray]:
    """δ (6,) of the best `settings.starts` local maxima of J on a grid of rotations within
    the bounds (grid_points per axis, zero translation), best first."""
    axis = np.linspace(-settings.max_rotation_deg, settings.max_rotation_deg,
                       settings.grid_points)
    omega_deg = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    inside = np.linalg.norm(omega_deg, axis=-1) <= settings.max_rotation_deg
    values = np.full(inside.shape, -np.inf)
    for index in zip(*np.nonzero(inside), strict=True):
        values[index] = J(np.concatenate([np.radians(omega_deg[index]), np.zeros(3)]))
    padded = np.pad(values, 1, constant_values=-np.inf)
    neighbours = np.max([np.roll(padded, (a, b, c), axis=(0, 1, 2))[1:-1, 1:-1, 1:-1]
                         for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                         if (a, b, c) != (0, 0, 0)], axis=0)
    maxima = np.flatnonzero(inside & (values >= neighbours))
    best = maxima[np.argsort(values.reshape(-1)[maxima])[::-1][: settings.starts]]
    return [np.concatenate([np.radians(omega_deg.reshape(-1, 3)[k]), np.zeros(3)])
            for k in best]


def search(objective_at: Callable[[float, float], WindowObjective], median_depth_m: float,
           settings: SearchSettings) -> tuple[list[Maximum], WindowObjective, NDArray]:
    """Coarse-to-fine search. `objective_at(decay_deg, min_depth_m)` builds a level's
    objective over the points at least min_depth_m deep (at the start pose).

    The rotation grid is searched at zero translation, so only over the points far enough
    that a translation within the bounds moves them less than half the kernel: depth >=
    max_translation_m / tan(kernel / 2).

    Returns the distinct maxima of the finest level (best first), that level's objective and
    its scale (6,) (the kernel's angle for rotations, times the median depth for
    translations).
    """
    hypotheses: list[NDArray] = []
    maxima: list[Maximum] = []
    for level, decay_deg in enumerate(decay_schedule(settings)):
        J = objective_at(decay_deg, 0.0)
        decay = np.radians(decay_deg)
        scale = np.array([decay] * 3 + [decay * median_depth_m] * 3)
        if level == 0:
            far = settings.max_translation_m / np.tan(0.5 * decay)
            hypotheses = grid_maxima(objective_at(decay_deg, far), settings)
        found = sorted((valley_search(J, local_search(J, h, scale, settings), scale, settings)
                        for h in hypotheses), key=lambda m: -m.value)
        maxima = []
        for candidate in found:  # distinct maxima, best first
            if all(np.max(np.abs(candidate.delta - m.delta) / scale) > 1.0 for m in maxima):
                maxima.append(candidate)
        maxima = maxima[: settings.hypotheses]
        hypotheses = [m.delta for m in maxima]
    return maxima, J, scale
