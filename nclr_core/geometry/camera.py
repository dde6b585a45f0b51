"""Camera models: pinhole intrinsics with optional plumb_bob or equidistant (fisheye) lens
distortion, and how K changes when the image is resized, cropped or flipped.

Pixel convention: (u = column, v = row), pixel centres at integer coordinates, so an image of
width W spans u in [-0.5, W - 0.5). Distortion acts on normalised camera coordinates
(x, y) = (X / Z, Y / Z) before K is applied, exactly as OpenCV's `cv2.projectPoints`
(plumb_bob, coefficients k1 k2 p1 p2 k3) and `cv2.fisheye.projectPoints` (equidistant,
coefficients k1 k2 k3 k4) do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

DISTORTION_MODELS = ("none", "plumb_bob", "equidistant")
_COEFFICIENT_COUNT = {"none": 0, "plumb_bob": 5, "equidistant": 4}

# Undistortion solves distort(x) = x_d per point by Newton's method, starting from x = x_d,
# for at most UNDISTORT_MAX_ITERATIONS steps, and stops once the residual (in normalised
# coordinates, i.e. pixels / focal length) is below UNDISTORT_TOLERANCE. Points that do not
# converge (outside the region where the lens model can be inverted) come back as NaN.
UNDISTORT_MAX_ITERATIONS = 20
UNDISTORT_TOLERANCE = 1e-12


def check_intrinsics(K: ArrayLike, name: str = "K") -> FloatArray:
    """Validate a camera matrix: finite (3, 3), last row (0, 0, 1), non-zero fx and fy.

    fx may be negative (a horizontally flipped image, see flip_intrinsics). Returns float64.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"{name} must have shape (3, 3), got {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if not np.array_equal(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"{name} last row must be (0, 0, 1), got {K[2].tolist()}")
    if K[0, 0] == 0.0 or K[1, 1] == 0.0 or K[1, 0] != 0.0:
        raise ValueError(f"{name} must have non-zero fx, fy and K[1, 0] == 0, got {K.tolist()}")
    return K


def scale_intrinsics(K: ArrayLike, sx: float, sy: float) -> FloatArray:
    """K (3, 3) of the image resized by factors (sx, sy) (new size = old size * factor).

    Pixel-centre aligned resampling, as cv2.resize (INTER_LINEAR / INTER_AREA / INTER_CUBIC)
    and torch.nn.functional.interpolate(align_corners=False) do: u' = sx (u + 0.5) - 0.5.
    Hence fx' = sx fx, cx' = sx (cx + 0.5) - 0.5 (likewise y). The common shortcut
    cx' = sx cx is off by 0.5 (sx - 1) pixels.
    """
    K = check_intrinsics(K)
    if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
        raise ValueError(f"scale factors must be finite and positive, got sx={sx}, sy={sy}")
    S = np.array([[sx, 0.0, 0.5 * (sx - 1.0)], [0.0, sy, 0.5 * (sy - 1.0)], [0.0, 0.0, 1.0]])
    return S @ K


def crop_intrinsics(K: ArrayLike, x0: float, y0: float) -> FloatArray:
    """K (3, 3) of the crop whose top-left pixel is (x0, y0): cx -= x0, cy -= y0."""
    K = check_intrinsics(K)
    if not (np.isfinite(x0) and np.isfinite(y0)):
        raise ValueError(f"crop offset must be finite, got x0={x0}, y0={y0}")
    C = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    return C @ K


def flip_intrinsics(K: ArrayLike, width: int) -> FloatArray:
    """K (3, 3) of the image of width W mirrored left-right, u -> W - 1 - u.

    cx -> W - 1 - cx and fx -> -fx (and skew -> -skew): K' = F K with
    F = [[-1, 0, W - 1], [0, 1, 0], [0, 0, 1]]. Negating fx is what mirrors the points;
    moving cx alone does not.
    """
    K = check_intrinsics(K)
    if int(width) != width or width <= 0:
        raise ValueError(f"width must be a positive integer, got {width}")
    F = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return F @ K


def _pixels_to_normalised(K: FloatArray, uv: FloatArray) -> FloatArray:
    """Apply K^-1 to pixels (N, 2); returns normalised (distorted) coordinates (N, 2)."""
    y = (uv[:, 1] - K[1, 2]) / K[1, 1]
    x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x, y], axis=1)


def _normalised_to_pixels(K: FloatArray, xy: FloatArray) -> FloatArray:
    """Apply K to normalised coordinates (N, 2); returns pixels (N, 2)."""
    u = K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]
    v = K[1, 1] * xy[:, 1] + K[1, 2]
    return np.stack([u, v], axis=1)


def _distort_plumb_bob(xy: FloatArray, D: FloatArray) -> FloatArray:
    """OpenCV radial-tangential model on normalised coordinates (N, 2); D = k1 k2 p1 p2 k3."""
    k1, k2, p1, p2, k3 = D
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([xd, yd], axis=1)


def _undistort_plumb_bob(xy_d: FloatArray, D: FloatArray) -> FloatArray:
    """Invert _distort_plumb_bob by 2-D Newton steps; non-converged points become NaN."""
    k1, k2, p1, p2, k3 = D
    xy = xy_d.copy()
    converged = np.zeros(len(xy), dtype=bool)
    for _ in range(UNDISTORT_MAX_ITERATIONS):
        residual = _distort_plumb_bob(xy, D) - xy_d
        converged = np.max(np.abs(residual), axis=1) < UNDISTORT_TOLERANCE
        if np.all(converged):
            break
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2.0 * k2 + 3.0 * r2 * k3)  # d radial / d r2
        j_xx = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
        j_xy = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        j_yy = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
        det = j_xx * j_yy - j_xy * j_xy
        with np.errstate(divide="ignore", invalid="ignore"):
            step_x = (j_yy * residual[:, 0] - j_xy * residual[:, 1]) / det
            step_y = (j_xx * residual[:, 1] - j_xy * residual[:, 0]) / det
        xy = xy - np.where(converged[:, None], 0.0, np.stack([step_x, step_y], axis=1))
    xy[~converged] = np.nan
    return xy


def _equidistant_theta_d(theta: FloatArray, D: FloatArray) -> FloatArray:
    k1, k2, k3, k4 = D
    t2 = theta * theta
    return theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))


def _distort_equidistant(xy: FloatArray, D: FloatArray) -> FloatArray:
    """OpenCV fisheye model on normalised coordinates (N, 2): r -> theta_d(atan r) / r."""
    r = np.linalg.norm(xy, axis=1)
    theta_d = _equidistant_theta_d(np.arctan(r), D)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(r > 0.0, theta_d / r, 1.0)
    return xy * scale[:, None]


def _undistort_equidistant(xy_d: FloatArray, D: FloatArray) -> FloatArray:
    """Invert _distort_equidistant: Newton on theta_d(theta) = |x_d| per point.

    Points whose solution is not in [0, pi/2) (not in front of the camera) or that do not
    converge become NaN.
    """
    k1, k2, k3, k4 = D
    theta_d = np.linalg.norm(xy_d, axis=1)
    theta = theta_d.copy()
    converged = np.zeros(len(theta), dtype=bool)
    for _ in range(UNDISTORT_MAX_ITERATIONS):
        residual = _equidistant_theta_d(theta, D) - theta_d
        converged = np.abs(residual) < UNDISTORT_TOLERANCE
        if np.all(converged):
            break
        t2 = theta * theta
        slope = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = np.where(converged, theta, theta - residual / slope)
    valid = converged & (theta >= 0.0) & (theta < 0.5 * np.pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(theta_d > 0.0, np.tan(theta) / theta_d, 1.0)
    xy = xy_d * scale[:, None]
    xy[~valid] = np.nan
    return xy


def _check_points(points: ArrayLike, width: int, name: str) -> FloatArray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape (N, {width}), got {array.shape}")
    return array


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A calibrated camera: intrinsics K (3, 3), image size, lens distortion.

    distortion: "none"; "plumb_bob" with D = OpenCV k1 k2 p1 p2 k3 (up to 5 given, missing
    ones zero); "equidistant" with D = fisheye k1 k2 k3 k4 (up to 4 given, missing ones zero).
    The stored D always has the full length of its model (0, 5 or 4).
    """

    K: FloatArray
    width: int
    height: int
    distortion: str = "none"
    D: FloatArray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        K = check_intrinsics(self.K)
        if int(self.width) != self.width or int(self.height) != self.height:
            raise ValueError(f"image size must be integers, got {self.width} x {self.height}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width} x {self.height}")
        if self.distortion not in DISTORTION_MODELS:
            raise ValueError(
                f"distortion must be one of {DISTORTION_MODELS}, got {self.distortion!r}"
            )
        D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(D)):
            raise ValueError("distortion coefficients D contain NaN or infinite values")
        count = _COEFFICIENT_COUNT[self.distortion]
        if self.distortion == "none":
            if np.any(D != 0.0):
                raise ValueError(f"distortion 'none' takes no non-zero coefficients, got {D}")
        elif len(D) > count:
            raise ValueError(
                f"{self.distortion} takes at most {count} coefficients, got {len(D)}"
            )
        D_full = np.zeros(count)
        D_full[: min(len(D), count)] = D[:count]
        object.__setattr__(self, "K", K.copy())
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "D", D_full)

    def _distort(self, xy: FloatArray) -> FloatArray:
        if self.distortion == "plumb_bob":
            return _distort_plumb_bob(xy, self.D)
        if self.distortion == "equidistant":
            return _distort_equidistant(xy, self.D)
        return xy

    def _undistort(self, xy_d: FloatArray) -> FloatArray:
        if self.distortion == "plumb_bob":
            return _undistort_plumb_bob(xy_d, self.D)
        if self.distortion == "equidistant":
            return _undistort_equidistant(xy_d, self.D)
        return xy_d

    def project(self, points_cam: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Project camera-frame points (N, 3) to pixels.

        Returns uv (N, 2) float64 (column, row; with distortion) and depth (N,) = Z.
        Points with depth <= 0 get uv = NaN; no image-bounds test is made here.
        """
        points = _check_points(points_cam, 3, "points_cam")
        depth = points[:, 2].copy()
        in_front = depth > 0.0
        xy = np.full((len(points), 2), np.nan)
        xy[in_front] = points[in_front, :2] / depth[in_front, None]
        return _normalised_to_pixels(self.K, self._distort(xy)), depth

    def unproject(self, uv: ArrayLike, depth: ArrayLike) -> FloatArray:
        """Camera-frame points (N, 3) seen at distorted pixels uv (N, 2) with depth Z (N,).

        Inverse of project; points whose pixel cannot be undistorted come back as NaN.
        """
        xy = self._undistort(_pixels_to_normalised(self.K, _check_points(uv, 2, "uv")))
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != (len(xy),):
            raise ValueError(f"depth must have shape ({len(xy)},), got {depth.shape}")
        return np.concatenate([xy * depth[:, None], depth[:, None]], axis=1)

    def undistort_points(self, uv: ArrayLike) -> FloatArray:
        """Pixels (N, 2) of the same rays in the undistorted pinhole image with the same K.

        Iterative (see UNDISTORT_MAX_ITERATIONS / UNDISTORT_TOLERANCE); NaN where the lens
        model cannot be inverted.
        """
        xy = self._undistort(_pixels_to_normalised(self.K, _check_points(uv, 2, "uv")))
        return _normalised_to_pixels(self.K, xy)

    def resized(self, width: int, height: int) -> CameraModel:
        """This camera after resizing its image to width x height (see scale_intrinsics)."""
        K = scale_intrinsics(self.K, width / self.width, height / self.height)
        return CameraModel(K, width, height, self.distortion, self.D)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> CameraModel:
        """This camera after cropping width x height pixels starting at column x0, row y0."""
        return CameraModel(crop_intrinsics(self.K, x0, y0), width, height, self.distortion, self.D)

    def flipped_horizontally(self) -> CameraModel:
        """This camera after mirroring its image left-right (see flip_intrinsics).

        Distortion acts on normalised coordinates, so D is unchanged.
        """
        K = flip_intrinsics(self.K, self.width)
        return CameraModel(K, self.width, self.height, self.distortion, self.D)


# What intrinsics of a real, unflipped camera look like (sensor input: CameraInfo, node
# parameters). Focal lengths in pixels lie within these multiples of the image's larger side:
# 0.05 admits any fisheye (an equidistant lens seeing 190 deg across has f of about 0.3 W),
# 100 a telephoto of 0.6 deg across. The principal point lies within the image grown by
# PRINCIPAL_POINT_MARGIN of its size on every side (a crop or region of interest moves it
# away from the centre, no real lens puts it far outside the picture).
FOCAL_RANGE_OF_IMAGE_SIZE = (0.05, 100.0)
PRINCIPAL_POINT_MARGIN = 0.5


def check_sensor_camera(camera: CameraModel) -> CameraModel:
    """`camera` itself when its intrinsics can be a real sensor's; ValueError naming the value.

    Beyond CameraModel's own checks (finite K, non-zero focal lengths, fx < 0 allowed for a
    flipped image): fx and fy positive and within FOCAL_RANGE_OF_IMAGE_SIZE of the larger
    image side, the principal point within PRINCIPAL_POINT_MARGIN of the image. Values such
    as fx = 1e-300 pass CameraModel but make every solve singular.
    """
    K = camera.K
    side = float(max(camera.width, camera.height))
    low, high = FOCAL_RANGE_OF_IMAGE_SIZE
    for name, value in (("fx", K[0, 0]), ("fy", K[1, 1])):
        if not low * side <= value <= high * side:
            raise ValueError(
                f"camera {name} = {value:g} px is implausible for a {camera.width}x"
                f"{camera.height} image (expected {low * side:g}..{high * side:g} px)")
    if abs(K[0, 1]) > high * side:
        raise ValueError(f"camera skew K[0, 1] = {K[0, 1]:g} is implausible")
    for name, value, size in (("cx", K[0, 2], camera.width), ("cy", K[1, 2], camera.height)):
        margin = PRINCIPAL_POINT_MARGIN * size
        if not -margin <= value <= size + margin:
            raise ValueError(
                f"camera principal point {name} = {value:g} px is far outside the "
                f"{camera.width}x{camera.height} image (expected {-margin:g}..{size + margin:g})")
    return camera
