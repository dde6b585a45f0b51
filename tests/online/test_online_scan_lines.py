"""Scan lines derived from a cloud, and the occluding contours found along them."""
import numpy as np
import pytest

from nclr_core.online.lidar_edges import ContourSettings, contour_points
from nclr_core.online.scan_lines import scan_lines

ELEVATIONS_DEG = np.linspace(-15.0, 15.0, 16)
AZIMUTH_STEP_DEG = 0.2


def _scan(range_of, order: str = "column") -> tuple[np.ndarray, np.ndarray]:
    """A 16-beam sweep (N, 3) and its ring (N,): range_of(azimuth_deg, elevation_deg) in m,
    stored column by column (a spinning sensor's firing order) or line by line."""
    azimuth = np.arange(-180.0, 180.0, AZIMUTH_STEP_DEG)
    az, el = np.meshgrid(azimuth, ELEVATIONS_DEG, indexing="ij" if order == "column" else "xy")
    ring = np.broadcast_to(np.arange(16), az.shape) if order == "column" else np.broadcast_to(
        np.arange(16)[:, None], az.shape)
    az, el, ring = az.ravel(), el.ravel(), ring.ravel()
    r = range_of(az, el)
    a, e = np.radians(az), np.radians(el)
    points = np.stack([r * np.cos(e) * np.cos(a), r * np.cos(e) * np.sin(a), r * np.sin(e)], 1)
    return points, ring


def _wall_and_pole(az: np.ndarray, el: np.ndarray) -> np.ndarray:
    """A cylinder wall 20 m away, a pole 8 m away covering azimuths -1..1 deg."""
    return np.where(np.abs(az) <= 1.0 + 1e-9, 8.0, 20.0)


@pytest.mark.parametrize("order", ["column", "line"])
def test_scan_lines_are_found_without_the_ring(order: str) -> None:
    points, ring = _scan(_wall_and_pole, order)
    lines = scan_lines(points)
    assert lines.line.max() + 1 == 16
    # the same partition as the rings, numbered by elevation
    assert np.array_equal(lines.line, ring)
    assert lines.azimuth_step_deg == pytest.approx(AZIMUTH_STEP_DEG, rel=1e-3)
    assert lines.line_spacing_deg == pytest.approx(2.0, rel=1e-3)


def test_a_given_ring_is_used_and_numbered_by_elevation() -> None:
    points, ring = _scan(_wall_and_pole)
    relabelled = 100 - 3 * ring  # any labels: lines come back 0 = lowest elevation
    assert np.array_equal(scan_lines(points, relabelled).line, ring)
    with pytest.raises(ValueError, match="ring must be"):
        scan_lines(points, ring[:-1])


def test_a_cloud_without_scan_lines_asks_for_the_ring() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(5000, 3)) * 10.0  # no lines, no order
    with pytest.raises(ValueError, match="pass the ring"):
        scan_lines(points)


def test_a_pole_gives_its_two_contours_between_the_rays() -> None:
    points, ring = _scan(_wall_and_pole)
    contours = contour_points(points, ring, ContourSettings(beam_divergence_deg=0.0))
    azimuth = np.degrees(np.arctan2(contours.points[:, 1], contours.points[:, 0]))
    # one left and one right contour per line, midway between the last pole ray (+-1.0 deg)
    # and the first wall ray (+-1.2 deg), at the pole's range
    assert len(contours.points) == 2 * 16
    assert np.allclose(np.sort(np.abs(azimuth)), 1.1, atol=1e-6)
    assert np.allclose(np.linalg.norm(contours.points, axis=1), 8.0)
    assert np.allclose(contours.weights, np.sqrt(10.0))  # jump 12 m, capped at 10 m
    # a beam as wide as the azimuth step puts the contour on the last pole ray
    wide = contour_points(points, ring, ContourSettings(beam_divergence_deg=AZIMUTH_STEP_DEG))
    wide_azimuth = np.degrees(np.arctan2(wide.points[:, 1], wide.points[:, 0]))
    assert np.allclose(np.abs(wide_azimuth), 1.0, atol=1e-6)


def test_foliage_clutter_is_not_a_contour() -> None:
    rng = np.random.default_rng(1)
    scatter = rng.uniform(5.0, 30.0, size=16 * 1800)
    points, ring = _scan(lambda az, el: scatter)
    assert len(contour_points(points, ring).points) == 0
