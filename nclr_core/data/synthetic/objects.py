"""Street furniture and road users as triangle soups in their own frame.

Every builder returns a `TriangleSoup` in the object's frame: origin on the ground at the
object's footprint centre, x forward, y left, z up. Things carry the given instance id.
"""
from __future__ import annotations

import numpy as np

from nclr_core.data.synthetic.materials import BICYCLIST
from nclr_core.data.synthetic.mesh import SoupBuilder, TriangleSoup

# Rotation taking +z onto +y: wheel axles.
_AXLE_Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# Rotation taking +z onto -x: a sign disc facing -x.
_FACE_X = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

CAR_COLORS = np.array(
    [
        [0.60, 0.04, 0.04], [0.05, 0.10, 0.45], [0.75, 0.75, 0.75], [0.05, 0.05, 0.05],
        [0.40, 0.40, 0.42], [0.85, 0.85, 0.80], [0.10, 0.30, 0.12], [0.70, 0.45, 0.05],
    ]
)  # fmt: skip
CLOTHES_COLORS = np.array(
    [
        [0.05, 0.05, 0.08], [0.50, 0.05, 0.05], [0.10, 0.20, 0.55], [0.60, 0.60, 0.55],
        [0.15, 0.35, 0.15], [0.60, 0.45, 0.10], [0.30, 0.20, 0.35],
    ]
)  # fmt: skip


def _pick(rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    return palette[rng.integers(len(palette))] * rng.uniform(0.85, 1.1)


def car(rng: np.random.Generator, instance: int) -> TriangleSoup:
    """A car: body, glass cabin, roof, bumpers, lights and four wheels (about 4.5 m long)."""
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    paint = _pick(rng, CAR_COLORS)
    b = SoupBuilder()
    clearance, body_h = 0.28, rng.uniform(0.65, 0.8)
    b.add_box((length, width, body_h), (0, 0, clearance + body_h / 2), "car_paint",
              color=paint, instance=instance)
    cabin_l, cabin_h = length * rng.uniform(0.48, 0.6), rng.uniform(0.45, 0.6)
    cabin_x = -0.08 * length
    top = clearance + body_h
    b.add_box((cabin_l, width * 0.9, cabin_h), (cabin_x, 0, top + cabin_h / 2), "car_glass",
              instance=instance)
    b.add_box((cabin_l * 0.85, width * 0.86, 0.06), (cabin_x, 0, top + cabin_h + 0.03),
              "car_paint", color=paint, instance=instance)
    for sx in (-1.0, 1.0):
        b.add_box((0.12, width * 1.01, 0.22), (sx * (length / 2 + 0.03), 0, clearance + 0.15),
                  "tire", instance=instance)
        for sy in (-1.0, 1.0):
            light = (0.9, 0.9, 0.8) if sx > 0 else (0.7, 0.02, 0.02)
            b.add_box((0.06, 0.3, 0.12),
                      (sx * (length / 2 + 0.01), sy * (width / 2 - 0.25), top - 0.15),
                      "car_glass", color=light, instance=instance)
            b.add_cylinder(0.32, 0.22, (sx * length * 0.32, sy * (width / 2 - 0.08) - 0.11, 0.32),
                           "tire", rotation=_AXLE_Y, instance=instance)
    return b.build()


def truck(rng: np.random.Generator, instance: int) -> TriangleSoup:
    """A box truck: cab with windscreen, cargo box, six wheels (about 8 m long)."""
    cargo_l, width = rng.uniform(5.0, 7.0), rng.uniform(2.3, 2.55)
    cab_l = 2.0
    length = cargo_l + cab_l
    paint = _pick(rng, CAR_COLORS)
    b = SoupBuilder()
    x_cab = length / 2 - cab_l / 2
    b.add_box((cab_l, width, 2.2), (x_cab, 0, 0.45 + 1.1), "truck_paint", color=paint,
              instance=instance)
    b.add_box((0.05, width * 0.85, 0.8), (length / 2 + 0.02, 0, 2.1), "car_glass",
              instance=instance, semantic=18)
    cargo_h = rng.uniform(2.6, 3.3)
    b.add_box((cargo_l - 0.2, width, cargo_h), (x_cab - cab_l / 2 - cargo_l / 2, 0,
              0.8 + cargo_h / 2), "truck_paint", instance=instance)
    for x in (x_cab, -length / 2 + 1.0, -length / 2 + 2.1):
        for sy in (-1.0, 1.0):
            b.add_cylinder(0.5, 0.3, (x, sy * (width / 2 - 0.1) - 0.15, 0.5), "tire",
                           rotation=_AXLE_Y, instance=instance, semantic=18)
    return b.build()


def person(rng: np.random.Generator, instance: int) -> TriangleSoup:
    """A standing person about 1.7 m tall: legs, torso, arms and head."""
    s = rng.uniform(0.9, 1.1)
    top, trousers = _pick(rng, CLOTHES_COLORS), _pick(rng, CLOTHES_COLORS)
    b = SoupBuilder()
    for sy in (-1.0, 1.0):
        b.add_box((0.16 * s, 0.15 * s, 0.85 * s), (0, sy * 0.1 * s, 0.425 * s), "clothes",
                  color=trousers, instance=instance)
        b.add_box((0.1 * s, 0.1 * s, 0.6 * s), (0, sy * 0.29 * s, 1.15 * s), "clothes",
                  color=top, instance=instance)
    b.add_box((0.25 * s, 0.44 * s, 0.62 * s), (0, 0, 1.16 * s), "clothes", color=top,
              instance=instance)
    b.add_ellipsoid((0.11 * s, 0.1 * s, 0.13 * s), (0, 0, 1.6 * s), "skin", instance=instance)
    return b.build()


def cyclist(rng: np.random.Generator, instance: int) -> TriangleSoup:
    """A bicycle (class bicycle) ridden by a person (class bicyclist), facing +x."""
    top, trousers = _pick(rng, CLOTHES_COLORS), _pick(rng, CLOTHES_COLORS)
    frame = _pick(rng, CAR_COLORS)
    b = SoupBuilder()
    for x in (-0.55, 0.55):
        b.add_cylinder(0.34, 0.05, (x, -0.025, 0.34), "tire", rotation=_AXLE_Y,
                       instance=instance, semantic=11, segments=12)
    b.add_box((1.0, 0.05, 0.06), (0, 0, 0.62), "bicycle", color=frame, instance=instance)
    b.add_box((0.05, 0.05, 0.45), (-0.2, 0, 0.55), "bicycle", color=frame, instance=instance)
    b.add_box((0.05, 0.5, 0.04), (0.5, 0, 1.0), "bicycle", color=frame, instance=instance)
    for sy in (-1.0, 1.0):
        b.add_box((0.14, 0.13, 0.75), (-0.1, sy * 0.12, 0.62), "clothes", color=trousers,
                  instance=instance, semantic=BICYCLIST)
        b.add_box((0.5, 0.09, 0.09), (0.25, sy * 0.22, 1.2), "clothes", color=top,
                  instance=instance, semantic=BICYCLIST)
    b.add_box((0.45, 0.4, 0.55), (0.0, 0, 1.3), "clothes", color=top, instance=instance,
              semantic=BICYCLIST)
    b.add_ellipsoid((0.11, 0.1, 0.13), (0.15, 0, 1.72), "skin", instance=instance,
                    semantic=BICYCLIST)
    return b.build()


def tree(rng: np.random.Generator) -> TriangleSoup:
    """A tree: trunk (class trunk) and one or two leafy crowns (class vegetation)."""
    b = SoupBuilder()
    trunk_h, trunk_r = rng.uniform(1.8, 3.5), rng.uniform(0.1, 0.25)
    b.add_cylinder(trunk_r, trunk_h + 0.5, (0, 0, 0), "bark", segments=8)
    crown = rng.uniform(1.3, 3.0)
    green = np.array([0.10, 0.28, 0.06]) * rng.uniform(0.7, 1.3, 3)
    b.add_ellipsoid((crown, crown, crown * rng.uniform(0.8, 1.3)),
                    (0, 0, trunk_h + crown * 0.8), "foliage", rng=rng, roughness=0.18,
                    color=green)
    if rng.random() < 0.5:
        r2 = crown * rng.uniform(0.5, 0.8)
        b.add_ellipsoid((r2, r2, r2), (rng.uniform(-0.6, 0.6) * crown,
                        rng.uniform(-0.6, 0.6) * crown, trunk_h + crown * 1.5), "foliage",
                        rng=rng, roughness=0.2, color=green * 1.15)
    return b.build()


def bush(rng: np.random.Generator) -> TriangleSoup:
    """A low bush (class vegetation)."""
    b = SoupBuilder()
    rx, ry, rz = rng.uniform(0.5, 1.4), rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.9)
    b.add_ellipsoid((rx, ry, rz), (0, 0, rz * 0.7), "foliage", rng=rng, roughness=0.2,
                    color=np.array([0.12, 0.25, 0.05]) * rng.uniform(0.7, 1.3, 3))
    return b.build()


def street_lamp(rng: np.random.Generator, arm_direction: float) -> TriangleSoup:
    """A lamp post (class pole) with an arm towards `arm_direction` (+1: +y, -1: -y)."""
    b = SoupBuilder()
    height = rng.uniform(5.5, 8.0)
    b.add_cylinder(0.08, height, (0, 0, 0), "pole", segments=8)
    b.add_box((0.1, 1.5, 0.1), (0, arm_direction * 0.75, height - 0.05), "pole")
    b.add_box((0.5, 0.3, 0.15), (0, arm_direction * 1.5, height - 0.12), "pole")
    return b.build()


SIGN_COLORS = np.array([[0.75, 0.05, 0.05], [0.05, 0.15, 0.6], [0.9, 0.9, 0.88], [0.9, 0.7, 0.05]])


def traffic_sign(rng: np.random.Generator) -> TriangleSoup:
    """A sign post (class pole) with a plate or disc (class traffic-sign) facing -x."""
    b = SoupBuilder()
    height = rng.uniform(2.2, 2.8)
    b.add_cylinder(0.04, height, (0, 0, 0), "pole", segments=6)
    color = SIGN_COLORS[rng.integers(len(SIGN_COLORS))]
    size = rng.uniform(0.6, 0.9)
    if rng.random() < 0.5:
        b.add_cylinder(size / 2, 0.03, (-0.06, 0, height), "sign", rotation=_FACE_X,
                       color=color, segments=16)
    else:
        b.add_box((0.03, size, size), (-0.06, 0, height), "sign", color=color)
    return b.build()
