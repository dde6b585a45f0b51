"""Domain randomisation of the synthetic sensors: how one sequence's camera and LiDAR look.

Off by default (`RandomiseConfig.enabled`). When on, `draw_look` draws one `SensorLook` per
sequence from a generator seeded by (seed, sequence index), so a sequence still depends only
on the seed and its index. The effects themselves are the small functions below; their
ranges (the `RandomiseConfig` defaults) come from what real driving rigs show, not from
fitting any data set:

- cameras of driving data sets (KITTI's Flea2, nuScenes' and typical automotive cameras)
  auto-expose every frame so that its mean output level sits near a third to a half of full
  scale, encode either linearly (machine-vision cameras such as the Flea2: dark shadows,
  a saturated sky) or with a display gamma of up to 2.2, keep a white-balance residual of ten to
  fifteen per cent per channel, lose 0-40 % of the light towards the image corners, are soft
  by up to about a pixel and show read plus shot noise of a few 8-bit levels;
- their lenses distort barrel-wise by up to k1 of about -0.3 (KITTI raw camera 2:
  k1 = -0.37 with k2 = 0.20), with tangential terms of order 1e-3;
- spinning LiDARs have 32, 64 or 128 beams, miss a few per cent of returns (more on dark,
  far surfaces) and encode intensity differently (incidence response, non-linear scale).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from nclr_core.data.synthetic.lidar import LidarModel
from nclr_core.data.synthetic.materials import MATERIALS

Range = tuple[float, float]
# Blur ranges are given for an image of KITTI's width (pixels) and scaled with the image.
BLUR_REFERENCE_WIDTH = 1242


@dataclass(frozen=True)
class RandomiseConfig:
    """Domain randomisation settings; (low, high) pairs are drawn uniformly per sequence.

    Camera: `auto_exposure_level` (the mean output level, share of full scale, that the
    auto-exposure holds each frame at), `response_gamma` (encoding exponent: 1 linear, 2.2
    sRGB-like), `white_balance_gain` (red and blue gain relative to
    green), `sun_elevation_deg`, `shadow_strength` (share of the sun's light a shadow
    removes), `read_noise_levels` / `shot_noise_levels` (noise std in 8-bit levels; shot noise
    at full scale), `blur_sigma_px` (at a 1242-pixel-wide image, scaled with the width),
    `vignetting` (light lost in the farthest corner), `distortion_k1` / `distortion_k2`
    (plumb_bob radial terms), `distortion_tangential` (|p1|, |p2| at most), `material_tint_std`
    (log-std of a per-material, per-channel colour gain), `material_brightness`,
    `texture_contrast`. LiDAR: `beams` (preset choices), `dropout`, `dark_dropout`,
    `reflectivity_jitter` (relative, per material), `incidence_floor` (intensity at grazing
    incidence relative to head-on), `intensity_gamma`, `intensity_noise_std`.
    """

    enabled: bool = False
    auto_exposure_level: Range = (0.32, 0.48)
    response_gamma: Range = (1.0, 2.2)
    white_balance_gain: Range = (0.85, 1.15)
    sun_elevation_deg: Range = (8.0, 75.0)
    shadow_strength: Range = (0.4, 1.0)
    read_noise_levels: Range = (0.5, 4.0)
    shot_noise_levels: Range = (0.0, 6.0)
    blur_sigma_px: Range = (0.0, 1.2)
    vignetting: Range = (0.0, 0.4)
    distortion_k1: Range = (-0.30, 0.05)
    distortion_k2: Range = (0.0, 0.15)
    distortion_tangential: float = 1e-3
    material_tint_std: float = 0.12
    material_brightness: Range = (0.75, 1.35)
    texture_contrast: Range = (0.6, 1.4)
    beams: tuple[int, ...] = (32, 64, 128)
    dropout: Range = (0.0, 0.08)
    dark_dropout: Range = (0.1, 0.6)
    reflectivity_jitter: float = 0.2
    incidence_floor: Range = (0.0, 0.5)
    intensity_gamma: Range = (0.6, 1.5)
    intensity_noise_std: Range = (0.0, 0.05)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "beams" or not isinstance(value, tuple):
                continue
            if not (len(value) == 2 and value[0] <= value[1]):
                raise ValueError(f"randomise.{f.name} must be a (low, high) pair with low <= "
                                 f"high, got {value}")
        if not self.beams or any(b not in LidarModel.PRESET_BEAMS for b in self.beams):
            raise ValueError(f"randomise.beams must name LiDAR presets "
                             f"{LidarModel.PRESET_BEAMS}, got {self.beams}")
        for name in ("distortion_tangential", "material_tint_std", "reflectivity_jitter"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"randomise.{name} must lie in [0, 1), got "
                                 f"{getattr(self, name)}")


@dataclass(frozen=True)
class CameraLook:
    """One sequence's camera appearance.

    exposure_level: the mean encoded output level in [0, 1] the auto-exposure holds each
    frame at; response_gamma: the encoding exponent (output = linear ** (1 / gamma));
    white_balance (3,) RGB gains and vignetting act on linear radiance;
    shadow_strength in [0, 1] (1: no sun light in shadow); read_noise / shot_noise in 8-bit
    levels; blur_sigma_px at this image's size; material_gain (num materials, 3) multiplies
    each material's albedo, texture_contrast scales its texture around the base colour.
    """

    exposure_level: float
    response_gamma: float
    white_balance: np.ndarray
    shadow_strength: float
    read_noise: float
    shot_noise: float
    blur_sigma_px: float
    vignetting: float
    material_gain: np.ndarray
    texture_contrast: float


@dataclass(frozen=True)
class SensorLook:
    """Everything drawn for one sequence: camera look, lens D (5,) plumb_bob k1 k2 p1 p2 k3,
    sun direction (3,) unit (world frame, towards the sun), LiDAR model."""

    camera: CameraLook
    distortion: np.ndarray
    sun_direction: np.ndarray
    lidar: LidarModel


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def draw_white_balance(rng: np.random.Generator, gain: Range) -> np.ndarray:
    """RGB gains (3,): red and blue each U(`gain`), green 1 (the residual of an auto white
    balance, default 0.85-1.15)."""
    return np.array([_uniform(rng, gain), 1.0, _uniform(rng, gain)])


def draw_sun(rng: np.random.Generator, elevation_deg: Range) -> np.ndarray:
    """Unit direction (3,) towards the sun, world frame (z up): elevation U(`elevation_deg`)
    (default 8-75 deg: low evening sun to summer noon), azimuth uniform."""
    elevation = np.radians(_uniform(rng, elevation_deg))
    azimuth = rng.uniform(-np.pi, np.pi)
    return np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                     np.sin(elevation)])


def radial_fold(k1: float, k2: float) -> float:
    """Distorted radius (normalised) where r (1 + k1 r^2 + k2 r^4) stops increasing, i.e. the
    widest view the radial model can image one-to-one (inf when it never folds)."""
    r = np.linspace(0.0, 4.0, 4001)
    slope = 1.0 + 3.0 * k1 * r**2 + 5.0 * k2 * r**4
    folded = np.flatnonzero(slope <= 0.0)
    if folded.size == 0:
        return float("inf")
    r_fold = r[folded[0]]
    return float(r_fold * (1.0 + k1 * r_fold**2 + k2 * r_fold**4))


def draw_distortion(rng: np.random.Generator, config: RandomiseConfig, K: np.ndarray,
                    width: int, height: int) -> np.ndarray:
    """plumb_bob D (5,) = k1 k2 p1 p2 k3: k1 U(`distortion_k1`) (default -0.30-0.05),
    k2 U(`distortion_k2`) (0-0.15), p1, p2 U(+-`distortion_tangential`) (1e-3), k3 = 0.

    Redrawn until the lens images every pixel one-to-one with a 10 % margin (the raw image's
    farthest corner lies within the radial model's fold), so undistortion is defined
    everywhere. Deterministic for the state of `rng`.
    """
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5],
                        [width - 0.5, height - 0.5]])
    xy = (corners - K[:2, 2]) / np.diag(K)[:2]
    corner_radius = float(np.linalg.norm(xy, axis=1).max())
    for _ in range(1000):
        k1, k2 = _uniform(rng, config.distortion_k1), _uniform(rng, config.distortion_k2)
        p1, p2 = rng.uniform(-1.0, 1.0, 2) * config.distortion_tangential
        if radial_fold(k1, k2) > 1.1 * corner_radius:
            return np.array([k1, k2, p1, p2, 0.0])
    raise ValueError(f"randomise.distortion_k1 {config.distortion_k1} / distortion_k2 "
                     f"{config.distortion_k2} give no lens that images this camera one-to-one")


def draw_material_gain(rng: np.random.Generator, tint_std: float,
                       brightness: Range) -> np.ndarray:
    """Per-material albedo gains (num materials, 3): brightness U(`brightness`) (default
    0.75-1.35) times a per-channel log-normal tint of log-std `tint_std` (0.12: paint, brick
    and foliage colours vary by that much between streets)."""
    count = len(MATERIALS)
    level = rng.uniform(brightness[0], brightness[1], (count, 1))
    return level * np.exp(rng.normal(0.0, tint_std, (count, 3)))


def draw_lidar(rng: np.random.Generator, config: RandomiseConfig) -> LidarModel:
    """A LiDAR preset chosen from `beams` (default 32, 64, 128) with dropout U(`dropout`)
    (0-8 %), dark_dropout U(`dark_dropout`) (0.1-0.6), intensity noise U(...) (0-0.05),
    incidence floor U(...) (0-0.5; 0.2 without randomisation), intensity gamma U(...)
    (0.6-1.5) and each material's reflectivity scaled by U(1 +- `reflectivity_jitter`)."""
    beams = int(config.beams[rng.integers(len(config.beams))])
    jitter = config.reflectivity_jitter
    scale = rng.uniform(1.0 - jitter, 1.0 + jitter, len(MATERIALS))
    return dataclasses.replace(
        LidarModel.preset(beams),
        dropout=_uniform(rng, config.dropout),
        dark_dropout=_uniform(rng, config.dark_dropout),
        intensity_noise_std=_uniform(rng, config.intensity_noise_std),
        incidence_floor=_uniform(rng, config.incidence_floor),
        intensity_gamma=_uniform(rng, config.intensity_gamma),
        reflectivity_scale=tuple(float(s) for s in scale),
    )


def draw_look(rng: np.random.Generator, config: RandomiseConfig, K: np.ndarray, width: int,
              height: int) -> SensorLook:
    """One sequence's sensors for a camera of intrinsics K (3, 3) and size width x height."""
    camera = CameraLook(
        exposure_level=_uniform(rng, config.auto_exposure_level),
        response_gamma=_uniform(rng, config.response_gamma),
        white_balance=draw_white_balance(rng, config.white_balance_gain),
        shadow_strength=_uniform(rng, config.shadow_strength),
        read_noise=_uniform(rng, config.read_noise_levels),
        shot_noise=_uniform(rng, config.shot_noise_levels),
        blur_sigma_px=_uniform(rng, config.blur_sigma_px) * width / BLUR_REFERENCE_WIDTH,
        vignetting=_uniform(rng, config.vignetting),
        material_gain=draw_material_gain(rng, config.material_tint_std,
                                         config.material_brightness),
        texture_contrast=_uniform(rng, config.texture_contrast),
    )
    distortion = draw_distortion(rng, config, K, width, height)
    sun = draw_sun(rng, config.sun_elevation_deg)
    return SensorLook(camera, distortion, sun, draw_lidar(rng, config))


def vary_materials(albedo: np.ndarray, base: np.ndarray, material: np.ndarray,
                   look: CameraLook) -> np.ndarray:
    """Textured albedo (N, 3) with its texture contrast around the base colour (N, 3) scaled
    by `look.texture_contrast` and each material (N,) indices recoloured by its gain; [0, 1]."""
    contrasted = base + look.texture_contrast * (albedo - base)
    return np.clip(contrasted * look.material_gain[material], 0.0, 1.0)


def vignetting_gain(width: int, height: int, K: np.ndarray, strength: float) -> np.ndarray:
    """(H, W) gain 1 - strength (r / r_corner)^2, r the distance of a pixel from the principal
    point and r_corner that of the farthest corner: 1 at the centre, 1 - strength there
    (strength 0-0.4: lenses lose up to about two thirds of a stop in the corners)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    r2 = (u - K[0, 2]) ** 2 + (v - K[1, 2]) ** 2
    corners_u = np.array([-0.5, width - 0.5])[:, None] - K[0, 2]
    corners_v = np.array([-0.5, height - 0.5])[None, :] - K[1, 2]
    r2_corner = float((corners_u**2 + corners_v**2).max())
    return 1.0 - strength * r2 / r2_corner


def auto_exposure_gain(linear: np.ndarray, level: float, gamma: float) -> float:
    """The gain g for which the frame's mean encoded level, mean(clip(g * linear, 0, 1) **
    (1 / gamma)) over pixels and channels, equals `level` in (0, 1): the metering of an
    auto-exposure loop on linear values (H, W, 3). Bisection on log2 g within +-16 stops
    (the mean is non-decreasing in g), metered on every second pixel of every second row."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"auto-exposure level must lie in (0, 1), got {level}")
    metered = np.clip(linear[::2, ::2], 0.0, None).astype(np.float32)
    low, high = -16.0, 16.0
    for _ in range(40):
        middle = 0.5 * (low + high)
        encoded = np.power(np.minimum(metered * np.float32(2.0**middle), 1.0), 1.0 / gamma)
        if encoded.mean() < level:
            low = middle
        else:
            high = middle
    return float(2.0 ** (0.5 * (low + high)))


def expose(radiance: np.ndarray, look: CameraLook, K: np.ndarray) -> np.ndarray:
    """What reaches the sensor: linear radiance (H, W, 3) blurred by the lens (Gaussian,
    `look.blur_sigma_px`), darkened towards the corners (`vignetting_gain`), white-balanced
    and scaled by the frame's auto-exposure gain (`auto_exposure_gain` for the look's level
    and response); linear, unclipped (H, W, 3), to be encoded with `look.response_gamma`."""
    height, width = radiance.shape[:2]
    out = radiance
    if look.blur_sigma_px > 0.0:
        out = cv2.GaussianBlur(out, (0, 0), look.blur_sigma_px, borderType=cv2.BORDER_REFLECT)
    out = out * vignetting_gain(width, height, K, look.vignetting)[:, :, None]
    out = out * look.white_balance
    return out * auto_exposure_gain(out, look.exposure_level, look.response_gamma)


def sensor_noise(levels: np.ndarray, look: CameraLook, rng: np.random.Generator) -> np.ndarray:
    """8-bit-scale values (..., 3) float32 plus read and shot noise: Gaussian of std
    sqrt(read^2 + shot^2 * value / 255) per pixel and channel (read 0.5-4, shot at full
    scale 0-6 levels)."""
    std = np.sqrt(np.float32(look.read_noise**2)
                  + np.float32(look.shot_noise**2) * np.clip(levels, 0.0, 255.0) / 255.0)
    return levels + rng.standard_normal(levels.shape, dtype=np.float32) * std
