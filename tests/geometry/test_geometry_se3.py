"""SE(3) helpers: round trips, conventions, batching and bad input."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nclr_core.geometry import se3


def _random_transforms(rng: np.random.Generator, count: int) -> np.ndarray:
    R = Rotation.random(count, random_state=rng).as_matrix()
    t = rng.uniform(-5.0, 5.0, size=(count, 3))
    return se3.make_transform(R, t)


def test_make_transform_layout_and_transform_points() -> None:
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    T = se3.make_transform(R, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(T[3], [0.0, 0.0, 0.0, 1.0])
    # (1, 0, 0) rotated 90 deg about z is (0, 1, 0), then shifted by t.
    out = se3.transform_points(T, np.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(out, [[1.0, 3.0, 3.0]], atol=1e-12)


def test_invert_and_compose_round_trip() -> None:
    rng = np.random.default_rng(0)
    T_a_b, T_b_c = _random_transforms(rng, 2)
    np.testing.assert_allclose(se3.compose(T_a_b, se3.invert(T_a_b)), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(se3.invert(se3.invert(T_a_b)), T_a_b, atol=1e-12)
    # compose is left to right and chains frames: T_a_c = T_a_b T_b_c.
    T_a_c = se3.compose(T_a_b, T_b_c)
    np.testing.assert_allclose(T_a_c, T_a_b @ T_b_c, atol=1e-12)
    points_c = rng.normal(size=(5, 3))
    np.testing.assert_allclose(
        se3.transform_points(T_a_c, points_c),
        se3.transform_points(T_a_b, se3.transform_points(T_b_c, points_c)),
        atol=1e-12,
    )


def test_batched_invert_and_transform_points() -> None:
    rng = np.random.default_rng(1)
    T = _random_transforms(rng, 3)
    np.testing.assert_allclose(T @ se3.invert(T), np.broadcast_to(np.eye(4), T.shape), atol=1e-12)
    points = rng.normal(size=(3, 7, 3))
    batched = se3.transform_points(T, points)
    for i in range(3):
        np.testing.assert_allclose(batched[i], se3.transform_points(T[i], points[i]), atol=1e-12)
    with pytest.raises(ValueError, match="batch shape"):
        se3.transform_points(T, points[0])


def test_exp_log_round_trip_including_small_and_large_angles() -> None:
    rng = np.random.default_rng(2)
    axes = rng.normal(size=(6, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.array([0.0, 1e-9, 1e-5, 0.3, 2.0, np.pi - 1e-3])
    xi = np.concatenate([rng.uniform(-3, 3, size=(6, 3)), axes * angles[:, None]], axis=1)
    T = se3.exp_se3(xi)
    np.testing.assert_allclose(se3.log_se3(T), xi, atol=1e-9)
    for i in range(len(xi)):
        np.testing.assert_allclose(se3.exp_se3(xi[i]), T[i], atol=1e-12)
    T_random = _random_transforms(rng, 4)
    np.testing.assert_allclose(se3.exp_se3(se3.log_se3(T_random)), T_random, atol=1e-10)


def test_exp_se3_matches_matrix_exponential_of_the_twist() -> None:
    from scipy.linalg import expm

    xi = np.array([0.4, -1.2, 2.0, 0.3, -0.5, 0.9])
    twist = np.zeros((4, 4))
    twist[:3, :3] = [[0, -xi[5], xi[4]], [xi[5], 0, -xi[3]], [-xi[4], xi[3], 0]]
    twist[:3, 3] = xi[:3]
    np.testing.assert_allclose(se3.exp_se3(xi), expm(twist), atol=1e-12)
    # No rotation: a pure translation by rho.
    np.testing.assert_allclose(se3.exp_se3([1.0, 2.0, 3.0, 0, 0, 0])[:3, 3], [1.0, 2.0, 3.0])


def test_quaternion_round_trip_and_ros_order() -> None:
    R_z90 = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    half = np.sqrt(0.5)
    np.testing.assert_allclose(se3.quaternion_xyzw_from_matrix(R_z90), [0, 0, half, half])
    rng = np.random.default_rng(3)
    R = Rotation.random(5, random_state=rng).as_matrix()
    q = se3.quaternion_xyzw_from_matrix(R)
    assert q.shape == (5, 4) and np.all(q[:, 3] >= 0.0)
    np.testing.assert_allclose(se3.matrix_from_quaternion_xyzw(q), R, atol=1e-12)
    # The opposite sign is the same rotation.
    np.testing.assert_allclose(se3.matrix_from_quaternion_xyzw(-q), R, atol=1e-12)
    with pytest.raises(ValueError, match="zero quaternion"):
        se3.matrix_from_quaternion_xyzw([0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("order", ["xyz", "xzy", "ZYX", "XYZ", "zxz"])
def test_euler_round_trip(order: str) -> None:
    rng = np.random.default_rng(4)
    R = Rotation.random(6, random_state=rng).as_matrix()
    angles = se3.euler_from_matrix(R, order)
    np.testing.assert_allclose(se3.matrix_from_euler(angles, order), R, atol=1e-12)


def test_rpy_is_ros_extrinsic_xyz() -> None:
    roll, pitch, yaw = 0.1, -0.4, 1.2
    Rx = Rotation.from_euler("x", roll).as_matrix()
    Ry = Rotation.from_euler("y", pitch).as_matrix()
    Rz = Rotation.from_euler("z", yaw).as_matrix()
    R = se3.matrix_from_rpy([roll, pitch, yaw])
    np.testing.assert_allclose(R, Rz @ Ry @ Rx, atol=1e-12)
    np.testing.assert_allclose(se3.rpy_from_matrix(R), [roll, pitch, yaw], atol=1e-12)


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 4\)"):
        se3.invert(np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        se3.invert(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="Euler order"):
        se3.euler_from_matrix(np.eye(3), "xxy")
    with pytest.raises(ValueError, match="at least one"):
        se3.compose()
    with pytest.raises(ValueError, match="translation_region"):
        se3.random_perturbation(0.1, 0.1, np.random.default_rng(0), translation_region="cube")


@pytest.mark.parametrize("region", ["ball", "box"])
def test_random_perturbation_respects_bounds(region: str) -> None:
    rng = np.random.default_rng(5)
    max_angle, max_t = np.deg2rad(10.0), 0.25
    samples = np.stack(
        [
            se3.random_perturbation(max_angle, max_t, rng, translation_region=region)
            for _ in range(400)
        ]
    )
    angles = Rotation.from_matrix(samples[:, :3, :3]).magnitude()
    t = samples[:, :3, 3]
    assert angles.max() <= max_angle + 1e-12
    # The angle is uniform in [0, max]: its mean is near max / 2 (std of the mean ~ 0.0025).
    assert abs(angles.mean() - max_angle / 2) < 0.02
    if region == "ball":
        assert np.linalg.norm(t, axis=1).max() <= max_t + 1e-12
    else:
        assert np.abs(t).max() <= max_t + 1e-12
        assert np.linalg.norm(t, axis=1).max() > max_t  # box corners reach beyond the ball
    np.testing.assert_allclose(samples[:, 3], np.tile([0, 0, 0, 1.0], (400, 1)))
