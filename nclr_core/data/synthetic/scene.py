"""Procedural street scenes: a straight street with its surroundings, road users and an ego path.

World frame: x along the street, y to the left, z up, ground at z = 0. The road spans
|y| < lanes * lane_width, then a parking strip, a raised sidewalk (its road-side face is the
curb) and lots with buildings or greenery. The ego vehicle drives in the rightmost lane
towards +x; its LiDAR pose at time t is `StreetScene.T_world_lidar(t)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nclr_core.data.synthetic import objects
from nclr_core.data.synthetic.materials import MOVING_ID
from nclr_core.data.synthetic.mesh import SoupBuilder, TriangleSoup, rot_z
from nclr_core.data.synthetic.raycast import RayScene


@dataclass(frozen=True)
class StreetConfig:
    """Layout parameters (metres, seconds; (low, high) pairs are sampled uniformly)."""

    lane_width: float = 3.5
    lanes_per_direction: tuple[int, int] = (1, 2)
    parking_width: float = 2.3
    sidewalk_width: tuple[float, float] = (2.5, 4.5)
    curb_height: float = 0.15
    ego_speed: tuple[float, float] = (6.0, 11.0)
    lidar_height: float = 1.73
    margin_behind: float = 60.0
    margin_ahead: float = 140.0
    lot_length: tuple[float, float] = (12.0, 35.0)
    building_probability: float = 0.65
    building_height: tuple[float, float] = (6.0, 24.0)
    building_depth: tuple[float, float] = (8.0, 16.0)
    tree_spacing: tuple[float, float] = (7.0, 15.0)
    lamp_spacing: float = 25.0
    sign_probability_per_lot: float = 0.3
    parked_probability: float = 0.55
    moving_vehicles_per_100m_per_lane: float = 1.2
    truck_probability: float = 0.15
    pedestrians_per_100m: float = 6.0
    walking_fraction: float = 0.5
    cyclists_per_100m: float = 1.0
    ground_extent: float = 150.0


@dataclass(frozen=True)
class MovingObject:
    """A rigid road user in straight motion: pose at t is (start + velocity * t, yaw)."""

    soup: TriangleSoup
    start: np.ndarray
    yaw: float
    velocity: np.ndarray

    def at(self, t: float) -> TriangleSoup:
        """The object's triangles in the world frame at time t (seconds)."""
        return self.soup.transformed(rot_z(self.yaw), self.start + self.velocity * t)


@dataclass(frozen=True)
class StreetScene:
    """A generated street: static triangles, moving objects, ego path and sun."""

    static: TriangleSoup
    moving: tuple[MovingObject, ...]
    ego_start_x: float
    ego_y: float
    ego_speed: float
    lidar_height: float
    sun_direction: np.ndarray

    def T_world_lidar(self, t: float) -> np.ndarray:
        """Ego LiDAR pose (4, 4) at time t: x forward along the street with a gentle weave."""
        x = self.ego_start_x + self.ego_speed * t
        y = self.ego_y + 0.25 * np.sin(0.35 * t)
        yaw = np.arctan2(0.25 * 0.35 * np.cos(0.35 * t), self.ego_speed)
        T = np.eye(4)
        T[:3, :3] = rot_z(yaw)
        T[:3, 3] = (x, y, self.lidar_height)
        return T

    def static_ray_scene(self) -> RayScene:
        """Embree scene of the static triangles (build once per sequence)."""
        return RayScene([self.static])

    def ray_scene_at(self, static: RayScene, t: float) -> RayScene:
        """`static` plus the moving objects posed at time t."""
        if not self.moving:
            return static
        return static.extended([TriangleSoup.concatenate([m.at(t) for m in self.moving])])


def _moving_soup(soup: TriangleSoup) -> TriangleSoup:
    """Relabel a thing's triangles with the SemanticKITTI moving-* class ids."""
    semantic = soup.semantic.copy()
    for static_id, moving_id in MOVING_ID.items():
        semantic[soup.semantic == static_id] = moving_id
    return TriangleSoup(
        soup.vertices, soup.faces, soup.material, semantic, soup.instance, soup.color
    )


def _placed(soup: TriangleSoup, x: float, y: float, z: float, yaw: float) -> TriangleSoup:
    return soup.transformed(rot_z(yaw), np.array([x, y, z]))


class _StreetBuilder:
    """Lays out one street; holds the random generator and the instance counter."""

    def __init__(self, rng: np.random.Generator, config: StreetConfig, length: float) -> None:
        self.rng = rng
        self.cfg = config
        self.length = length
        self.static = SoupBuilder()
        self.moving: list[MovingObject] = []
        self.next_instance = 1
        lo, hi = config.lanes_per_direction
        self.lanes = int(rng.integers(lo, hi + 1))
        self.road_half = self.lanes * config.lane_width
        self.curb_y = self.road_half + config.parking_width

    def instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def add_static(self, soup: TriangleSoup) -> None:
        self.static.parts.append(soup)

    def ground(self) -> None:
        c, L, e = self.cfg, self.length, self.cfg.ground_extent
        self.static.add_box((L + 2 * e, 2 * e, 0.1), (L / 2, 0, -0.08), "terrain")
        self.static.add_box((L, 2 * self.road_half, 0.1), (L / 2, 0, -0.05), "road")
        for side in (-1.0, 1.0):
            self.static.add_box((L, c.parking_width, 0.1),
                                (L / 2, side * (self.road_half + c.parking_width / 2), -0.05),
                                "parking")
        self.lane_markings()

    def lane_markings(self) -> None:
        L, w = self.length, 0.15
        lines = [(side * (self.road_half - 0.25), True) for side in (-1.0, 1.0)]
        lines.append((0.0, self.lanes > 1))
        for k in range(1, self.lanes):
            lines += [(side * k * self.cfg.lane_width, False) for side in (-1.0, 1.0)]
        for y, solid in lines:
            if solid:
                self.static.add_box((L, w, 0.02), (L / 2, y, 0.0), "lane_marking")
                continue
            for x in np.arange(1.5, L - 3.0, 9.0):
                self.static.add_box((3.0, w, 0.02), (x + 1.5, y, 0.0), "lane_marking")

    def sidewalk(self, side: float, width: float) -> None:
        c, L = self.cfg, self.length
        self.static.add_box((L, width, c.curb_height + 0.1),
                            (L / 2, side * (self.curb_y + width / 2), (c.curb_height - 0.1) / 2),
                            "sidewalk")

    def lots(self, side: float, inner: float) -> None:
        """Buildings or green lots along one side, starting at |y| = inner."""
        c, rng = self.cfg, self.rng
        x = -c.margin_behind * 0.5
        while x < self.length:
            lot = rng.uniform(*c.lot_length)
            if rng.random() < c.building_probability:
                self.building(side, inner, x, lot)
            else:
                self.green_lot(side, inner, x, lot)
            if rng.random() < c.sign_probability_per_lot:
                sign = objects.traffic_sign(rng)
                yaw = 0.0 if side < 0 else np.pi
                self.add_static(_placed(sign, x + lot / 2, side * (self.curb_y + 0.5),
                                        c.curb_height, yaw))
            x += lot

    def building(self, side: float, inner: float, x0: float, lot: float) -> None:
        rng, c = self.rng, self.cfg
        gap = rng.uniform(0.0, 2.5)
        setback = rng.uniform(0.0, 3.0)
        depth, height = rng.uniform(*c.building_depth), rng.uniform(*c.building_height)
        length = lot - gap
        face_y = side * (inner + setback)
        tint = np.array([0.55, 0.45, 0.35]) * rng.uniform(0.6, 1.4, 3)
        self.static.add_box((length, depth, height),
                            (x0 + length / 2, face_y + side * depth / 2, height / 2), "facade",
                            color=np.clip(tint, 0.05, 0.95))
        if setback > 0.3:
            self.static.add_box((length, setback, 0.1),
                                (x0 + length / 2, side * (inner + setback / 2), c.curb_height),
                                "terrain")
        floor_h = rng.uniform(2.8, 3.6)
        spacing = rng.uniform(2.2, 3.6)
        win_w, win_h = spacing * rng.uniform(0.4, 0.65), floor_h * rng.uniform(0.4, 0.6)
        glass = np.array([0.05, 0.07, 0.10]) * rng.uniform(0.6, 1.6)
        for z in np.arange(floor_h * 0.45 + floor_h, height - floor_h * 0.5, floor_h):
            for x in np.arange(x0 + spacing * 0.6, x0 + length - spacing * 0.4, spacing):
                self.static.add_box((win_w, 0.08, win_h), (x, face_y, z), "window", color=glass)
        for x in np.arange(x0 + spacing * 0.6, x0 + length - spacing * 0.4, spacing * 3):
            shop = rng.random() < 0.5
            w, h = (spacing * 0.8, 2.2) if shop else (1.1, 2.1)
            self.static.add_box((w, 0.08, h), (x, face_y, c.curb_height + h / 2), "window",
                                color=glass * (1.5 if shop else 0.6))

    def green_lot(self, side: float, inner: float, x0: float, lot: float) -> None:
        rng = self.rng
        depth = 25.0
        self.static.add_box((lot, depth, 0.1), (x0 + lot / 2, side * (inner + depth / 2), 0.0),
                            "terrain")
        edge = rng.random()
        if edge < 0.35:
            h = rng.uniform(1.0, 1.8)
            self.static.add_box((lot - 1.0, 0.06, h), (x0 + lot / 2, side * (inner + 0.3),
                                h / 2 + 0.05), "fence",
                                color=np.array([0.40, 0.30, 0.20]) * rng.uniform(0.6, 1.5))
        elif edge < 0.6:
            h = rng.uniform(0.8, 1.6)
            self.static.add_box((lot - 1.0, 0.9, h), (x0 + lot / 2, side * (inner + 0.6), h / 2),
                                "foliage", color=np.array([0.10, 0.26, 0.06]) * rng.uniform(
                                    0.7, 1.3, 3))
        for _ in range(rng.integers(1, 5)):
            self.add_static(_placed(objects.tree(rng), x0 + rng.uniform(1, lot - 1),
                                    side * (inner + rng.uniform(3, depth - 3)), 0.05, 0.0))
        for _ in range(rng.integers(0, 5)):
            self.add_static(_placed(objects.bush(rng), x0 + rng.uniform(1, lot - 1),
                                    side * (inner + rng.uniform(1.5, depth - 2)), 0.05, 0.0))

    def sidewalk_furniture(self, side: float, width: float) -> None:
        rng, c = self.rng, self.cfg
        z = c.curb_height
        if rng.random() < 0.7:
            x = rng.uniform(0, 5)
            while x < self.length:
                self.add_static(_placed(objects.tree(rng), x, side * (self.curb_y + 0.9), z, 0.0))
                x += rng.uniform(*c.tree_spacing)
        for x in np.arange(rng.uniform(0, c.lamp_spacing), self.length, c.lamp_spacing):
            lamp = objects.street_lamp(rng, -side)
            self.add_static(_placed(lamp, x + 3.0, side * (self.curb_y + 0.4), z, 0.0))
        n = rng.poisson(c.pedestrians_per_100m * self.length / 100.0)
        for _ in range(n):
            body = objects.person(rng, self.instance())
            x = rng.uniform(0, self.length)
            y = side * (self.curb_y + rng.uniform(1.2, max(1.3, width - 0.4)))
            if rng.random() < c.walking_fraction:
                direction = 1.0 if rng.random() < 0.5 else -1.0
                speed = direction * rng.uniform(0.9, 1.6)
                yaw = 0.0 if direction > 0 else np.pi
                self.moving.append(MovingObject(_moving_soup(body), np.array([x, y, z]), yaw,
                                                np.array([speed, 0.0, 0.0])))
            else:
                self.add_static(_placed(body, x, y, z, rng.uniform(-np.pi, np.pi)))

    def parked(self, side: float) -> None:
        rng, c = self.rng, self.cfg
        y = side * (self.road_half + c.parking_width / 2)
        x = rng.uniform(0, 4)
        while x < self.length:
            if rng.random() < c.parked_probability:
                is_truck = rng.random() < c.truck_probability
                thing = (objects.truck if is_truck else objects.car)(rng, self.instance())
                yaw = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.03)
                self.add_static(_placed(thing, x + 4.0, y + rng.normal(0, 0.1), 0.0, yaw))
                x += 9.0 if is_truck else 6.0
            else:
                x += 6.0

    def traffic(self, ego_x: float, ego_y: float, ego_speed: float, duration: float) -> None:
        """Vehicles in every lane; one speed per lane group, so they never run into each other.

        In the ego lane the vehicles ahead are faster than the ego and those behind slower.
        """
        rng, c = self.rng, self.cfg
        for k in range(self.lanes):
            for side in (-1.0, 1.0):
                y = side * (k + 0.5) * c.lane_width
                direction = -side
                if side < 0 and np.isclose(y, ego_y):
                    groups = [(ego_speed + rng.uniform(0.5, 2.0), ego_x + 15.0, self.length),
                              (ego_speed - rng.uniform(1.0, 2.0), 0.0, ego_x - 15.0)]
                else:
                    speed = rng.uniform(5.0, 14.0)
                    lo = -speed * duration if direction > 0 else 0.0
                    groups = [(speed, lo, lo + self.length + speed * duration)]
                for speed, lo, hi in groups:
                    self.lane_group(y, direction, speed, lo, hi)

    def lane_group(self, y: float, direction: float, speed: float, lo: float, hi: float) -> None:
        """Vehicles starting in [lo, hi] along x, all driving at `speed` towards `direction`."""
        rng, c = self.rng, self.cfg
        if hi <= lo:
            return
        n = rng.poisson(c.moving_vehicles_per_100m_per_lane * (hi - lo) / 100.0)
        last = -np.inf
        for x0 in np.sort(rng.uniform(lo, hi, n)):
            if x0 - last < 12.0:
                continue
            last = x0
            is_truck = rng.random() < c.truck_probability
            thing = (objects.truck if is_truck else objects.car)(rng, self.instance())
            yaw = 0.0 if direction > 0 else np.pi
            self.moving.append(MovingObject(_moving_soup(thing), np.array([x0, y, 0.0]), yaw,
                                            np.array([direction * speed, 0.0, 0.0])))

    def cyclists(self) -> None:
        """Cyclists riding along the right road edge towards +x."""
        rng, c = self.rng, self.cfg
        n = rng.poisson(c.cyclists_per_100m * self.length / 100.0)
        for _ in range(n):
            rider = objects.cyclist(rng, self.instance())
            y = -(self.road_half - 0.5)
            self.moving.append(MovingObject(_moving_soup(rider),
                                            np.array([rng.uniform(0, self.length), y, 0.0]),
                                            0.0, np.array([rng.uniform(3.0, 6.0), 0.0, 0.0])))


def generate_street(
    rng: np.random.Generator, duration: float, config: StreetConfig | None = None
) -> StreetScene:
    """Generate a street long enough for the ego to drive `duration` seconds.

    Deterministic for the state of `rng`.
    """
    if duration < 0:
        raise ValueError(f"duration must be >= 0 seconds, got {duration}")
    cfg = config or StreetConfig()
    ego_speed = float(rng.uniform(*cfg.ego_speed))
    length = cfg.margin_behind + ego_speed * duration + cfg.margin_ahead
    b = _StreetBuilder(rng, cfg, length)
    ego_y = -(b.lanes - 0.5) * cfg.lane_width
    b.ground()
    for side in (-1.0, 1.0):
        width = float(rng.uniform(*cfg.sidewalk_width))
        b.sidewalk(side, width)
        b.lots(side, b.curb_y + width)
        b.sidewalk_furniture(side, width)
        b.parked(side)
    b.traffic(cfg.margin_behind, ego_y, ego_speed, duration)
    b.cyclists()
    elevation = rng.uniform(np.radians(25), np.radians(60))
    azimuth = rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                    np.sin(elevation)])
    return StreetScene(
        static=b.static.build(),
        moving=tuple(b.moving),
        ego_start_x=cfg.margin_behind,
        ego_y=ego_y,
        ego_speed=ego_speed,
        lidar_height=cfg.lidar_height,
        sun_direction=sun,
    )
