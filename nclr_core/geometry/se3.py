"""Rigid transforms in SE(3): construction, inversion, composition, exp/log and rotation
parameterisations (quaternion, Euler, ROS roll-pitch-yaw), random perturbations.

NumPy float64. `T_a_b` (4, 4) maps points from frame b into frame a: `p_a = R p_b + t`.
Functions accept one transform (4, 4) and, where stated, a batch (..., 4, 4).
Rotation parameterisations go through `scipy.spatial.transform.Rotation`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

FloatArray = NDArray[np.float64]

# Below this rotation angle (rad) the series forms of the SO(3) Jacobian coefficients are
# used; their truncation error there is below float64 resolution.
_SMALL_ANGLE_RAD = 1e-4

_EULER_AXES = set("xyzXYZ")


def _as_float_array(value: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_transform(T: ArrayLike, name: str = "T") -> FloatArray:
    T = _as_float_array(T, name)
    if T.ndim < 2 or T.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must have shape (..., 4, 4), got {T.shape}")
    return T


def _check_rotation(R: ArrayLike, name: str = "R") -> FloatArray:
    R = _as_float_array(R, name)
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {R.shape}")
    return R


def _check_last_dim(value: ArrayLike, size: int, name: str) -> FloatArray:
    array = _as_float_array(value, name)
    if array.ndim < 1 or array.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), got {array.shape}")
    return array


def _rotations(R: FloatArray) -> tuple[Rotation, tuple[int, ...]]:
    """Rotation objects for R (..., 3, 3) flattened to (M, 3, 3), plus the batch shape."""
    batch_shape = R.shape[:-2]
    return Rotation.from_matrix(R.reshape(-1, 3, 3)), batch_shape


def make_transform(R: ArrayLike, t: ArrayLike) -> FloatArray:
    """Homogeneous transform from a rotation R (..., 3, 3) and translation t (..., 3).

    Returns T (..., 4, 4) with T[..., :3, :3] = R, T[..., :3, 3] = t. R is taken as given
    (not re-orthonormalised); the batch shapes of R and t must be equal.
    """
    R = _check_rotation(R)
    t = _check_last_dim(t, 3, "t")
    if R.shape[:-2] != t.shape[:-1]:
        raise ValueError(f"batch shapes differ: R {R.shape} vs t {t.shape}")
    T = np.zeros(R.shape[:-2] + (4, 4), dtype=np.float64)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert(T: ArrayLike) -> FloatArray:
    """Inverse of rigid transforms T (..., 4, 4): T_b_a from T_a_b, using R^T (not a solve)."""
    T = _check_transform(T)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    R_inv = np.swapaxes(R, -1, -2)
    t_inv = -np.einsum("...ij,...j->...i", R_inv, t)
    return make_transform(R_inv, t_inv)


def compose(*Ts: ArrayLike) -> FloatArray:
    """Product of transforms left to right: compose(A, B, C) = A @ B @ C.

    compose(T_a_b, T_b_c) = T_a_c. Each argument is (4, 4) or a batch (..., 4, 4) with equal
    batch shapes.
    """
    if not Ts:
        raise ValueError("compose needs at least one transform")
    result = _check_transform(Ts[0], "Ts[0]")
    for index, T in enumerate(Ts[1:], start=1):
        T = _check_transform(T, f"Ts[{index}]")
        if T.shape != result.shape:
            raise ValueError(f"compose: Ts[{index}] has shape {T.shape}, expected {result.shape}")
        result = result @ T
    return result


def transform_points(T: ArrayLike, points: ArrayLike) -> FloatArray:
    """Map points (N, 3) from frame b into frame a with T_a_b (4, 4); returns (N, 3).

    Batched form: T (B, 4, 4) with points (B, N, 3) gives (B, N, 3); batch shapes must match.
    """
    T = _check_transform(T)
    points = _check_last_dim(points, 3, "points")
    if points.ndim < 2 or T.shape[:-2] != points.shape[:-2]:
        raise ValueError(
            f"points {points.shape} must be (..., N, 3) with the batch shape of T {T.shape}"
        )
    R = T[..., :3, :3]
    t = T[..., None, :3, 3]
    return points @ np.swapaxes(R, -1, -2) + t


def _skew(v: FloatArray) -> FloatArray:
    """Cross-product matrices (..., 3, 3) of vectors v (..., 3)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = np.zeros_like(x)
    return np.stack(
        [
            np.stack([zero, -z, y], axis=-1),
            np.stack([z, zero, -x], axis=-1),
            np.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )


def _left_jacobian(phi: FloatArray) -> FloatArray:
    """SO(3) left Jacobian V(phi) (..., 3, 3) = I + B [phi]x + C [phi]x^2, phi (..., 3).

    B = (1 - cos a) / a^2, C = (a - sin a) / a^3 with a = |phi|; series below _SMALL_ANGLE_RAD.
    """
    angle = np.linalg.norm(phi, axis=-1)
    small = angle < _SMALL_ANGLE_RAD
    safe = np.where(small, 1.0, angle)
    angle2 = angle * angle
    B = np.where(small, 0.5 - angle2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    C = np.where(small, 1.0 / 6.0 - angle2 / 120.0, (safe - np.sin(safe)) / safe**3)
    K = _skew(phi)
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + B[..., None, None] * K + C[..., None, None] * (K @ K)


def exp_se3(xi: ArrayLike) -> FloatArray:
    """Exponential map se(3) -> SE(3). xi (..., 6) = [rho (3), phi (3)] -> T (..., 4, 4).

    phi is the rotation vector (axis * angle, rad); the translation is V(phi) rho, where V is
    the SO(3) left Jacobian, so exp_se3([rho, 0]) is a pure translation by rho.
    """
    xi = _check_last_dim(xi, 6, "xi")
    rho, phi = xi[..., :3], xi[..., 3:]
    batch_shape = xi.shape[:-1]
    R = Rotation.from_rotvec(phi.reshape(-1, 3)).as_matrix().reshape(batch_shape + (3, 3))
    t = np.einsum("...ij,...j->...i", _left_jacobian(phi), rho)
    return make_transform(R, t)


def log_se3(T: ArrayLike) -> FloatArray:
    """Logarithm SE(3) -> se(3). T (..., 4, 4) -> xi (..., 6) = [rho, phi], |phi| <= pi.

    Inverse of exp_se3 for rotation angles below pi (at exactly pi the axis sign is ambiguous).
    """
    T = _check_transform(T)
    rotations, batch_shape = _rotations(T[..., :3, :3])
    phi = rotations.as_rotvec().reshape(batch_shape + (3,))
    rho = np.linalg.solve(_left_jacobian(phi), T[..., :3, 3][..., None])[..., 0]
    return np.concatenate([rho, phi], axis=-1)


def quaternion_xyzw_from_matrix(R: ArrayLike) -> FloatArray:
    """Unit quaternion (..., 4) in (x, y, z, w) order (ROS order) from R (..., 3, 3).

    The sign is canonical: w >= 0 (q and -q are the same rotation).
    """
    rotations, batch_shape = _rotations(_check_rotation(R))
    return rotations.as_quat(canonical=True).reshape(batch_shape + (4,))


def matrix_from_quaternion_xyzw(q: ArrayLike) -> FloatArray:
    """Rotation matrix (..., 3, 3) from quaternions (..., 4) in (x, y, z, w) order.

    The quaternion is normalised; a zero quaternion raises ValueError.
    """
    q = _check_last_dim(q, 4, "q")
    if np.any(np.linalg.norm(q, axis=-1) < 1e-12):
        raise ValueError("q contains a zero quaternion, which is not a rotation")
    batch_shape = q.shape[:-1]
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(batch_shape + (3, 3))


def _check_euler_order(order: str) -> str:
    if (
        not isinstance(order, str)
        or len(order) != 3
        or not set(order) <= _EULER_AXES
        or not (order.islower() or order.isupper())
        or order[0].lower() == order[1].lower()
        or order[1].lower() == order[2].lower()
    ):
        raise ValueError(
            f"Euler order must be three axes from 'xyz' (extrinsic, lower case) or 'XYZ' "
            f"(intrinsic, upper case) with no axis twice in a row, got {order!r}"
        )
    return order


def euler_from_matrix(R: ArrayLike, order: str) -> FloatArray:
    """Euler angles (..., 3) in radians from R (..., 3, 3), scipy convention for `order`.

    Lower-case order ('xyz') means extrinsic (fixed-axis) rotations, upper case ('XYZ')
    intrinsic; angles are listed in the order of the axes in `order`.
    """
    rotations, batch_shape = _rotations(_check_rotation(R))
    order = _check_euler_order(order)
    return rotations.as_euler(order).reshape(batch_shape + (3,))


def matrix_from_euler(angles: ArrayLike, order: str) -> FloatArray:
    """Rotation matrix (..., 3, 3) from Euler angles (..., 3) in radians (scipy convention)."""
    angles = _check_last_dim(angles, 3, "angles")
    order = _check_euler_order(order)
    batch_shape = angles.shape[:-1]
    rotations = Rotation.from_euler(order, angles.reshape(-1, 3))
    return rotations.as_matrix().reshape(batch_shape + (3, 3))


def rpy_from_matrix(R: ArrayLike) -> FloatArray:
    """ROS roll, pitch, yaw (..., 3) in radians from R (..., 3, 3).

    ROS / URDF convention: R = Rz(yaw) @ Ry(pitch) @ Rx(roll), i.e. extrinsic 'xyz'.
    """
    return euler_from_matrix(R, "xyz")


def matrix_from_rpy(rpy: ArrayLike) -> FloatArray:
    """Rotation matrix (..., 3, 3) = Rz(yaw) @ Ry(pitch) @ Rx(roll) from rpy (..., 3), rad."""
    return matrix_from_euler(rpy, "xyz")


def random_perturbation(
    max_angle_rad: float,
    max_translation_m: float,
    rng: np.random.Generator,
    translation_region: str = "ball",
) -> FloatArray:
    """Random rigid transform (4, 4) for perturbing a calibration.

    Rotation: about an axis drawn uniformly on the unit sphere, by an angle drawn uniformly in
    [0, max_angle_rad]. Translation: drawn uniformly inside the ball of radius
    max_translation_m (translation_region="ball", so its norm never exceeds the bound) or
    inside the box [-max_translation_m, max_translation_m]^3 (translation_region="box",
    per-axis bound, the "+-25 cm" style of the calibration literature).
    """
    if not (np.isfinite(max_angle_rad) and 0.0 <= max_angle_rad <= np.pi):
        raise ValueError(f"max_angle_rad must be in [0, pi], got {max_angle_rad}")
    if not (np.isfinite(max_translation_m) and max_translation_m >= 0.0):
        raise ValueError(f"max_translation_m must be finite and >= 0, got {max_translation_m}")
    if translation_region not in ("ball", "box"):
        raise ValueError(f"translation_region must be 'ball' or 'box', got {translation_region!r}")
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0.0, max_angle_rad)
    R = Rotation.from_rotvec(axis * angle).as_matrix()
    if translation_region == "ball":
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        t = direction * max_translation_m * rng.uniform() ** (1.0 / 3.0)
    else:
        t = rng.uniform(-max_translation_m, max_translation_m, size=3)
    return make_transform(R, t)
