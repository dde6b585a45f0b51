"""Sample transforms: callables dict -> dict (Pointcept style), chained by `Compose`.

A sample is the reader's dict (`image` uint8 (H, W, 3) RGB, `points` float32 (N, 4) in the
LiDAR frame, `K` (3, 3), `T_cam_lidar` (4, 4), optional per-point `labels` / `instances`, ...).
Image transforms keep `K` consistent with the image; point transforms keep every per-point
array (`POINT_KEYS`) aligned with `points`.

Randomness: a random transform draws from `sample[RNG_KEY]` when the sample carries a
`numpy.random.Generator` there (put by the dataset, see `sample_rng`, so that a run is
reproducible per (seed, epoch, index) whatever the worker layout), and otherwise from its own
generator seeded at construction.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from nclr_core.geometry.camera import crop_intrinsics, flip_intrinsics, scale_intrinsics

Sample = dict[str, Any]

RNG_KEY = "rng"
POINT_KEYS = ("points", "labels", "instances", "point_overlap", "point_pixel")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Generator for one sample, a pure function of (seed, epoch, index)."""
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample


class RandomTransform:
    """Base of the random transforms: owns a fallback generator (see module docstring)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def rng(self, sample: Sample) -> np.random.Generator:
        rng = sample.get(RNG_KEY, self._rng)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"sample[{RNG_KEY!r}] must be a numpy Generator, got {type(rng)}")
        return rng


def _image(sample: Sample) -> np.ndarray:
    image = sample.get("image")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"sample 'image' must be an (H, W, 3) array, got shape {shape}")
    return image


PIXEL_GROUND_TRUTH_KEYS = ("point_pixel", "image_overlap")


def _image_to_warp(sample: Sample, name: str) -> np.ndarray:
    """The image, for a transform that changes pixel geometry; refuses a sample whose pixel
    ground truth (written by `PairSampler`) would go stale."""
    stale = [key for key in PIXEL_GROUND_TRUTH_KEYS if key in sample]
    if stale:
        raise ValueError(f"{name} must run before PairSampler: the sample already has {stale}")
    return _image(sample)


def _intrinsics(sample: Sample) -> np.ndarray:
    K = np.asarray(sample.get("K"), dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"sample 'K' must be (3, 3), got shape {K.shape}")
    return K


def select_points(sample: Sample, keep: np.ndarray) -> Sample:
    """Index every per-point array of the sample (`POINT_KEYS`) by `keep` (mask or indices)."""
    n = len(sample["points"])
    for key in POINT_KEYS:
        if key in sample:
            if len(sample[key]) != n:
                raise ValueError(f"sample {key!r} has {len(sample[key])} rows, points have {n}")
            sample[key] = sample[key][keep]
    return sample


class ResizeImage:
    """Resize the image to (height, width) and scale K to match.

    `width=None` keeps the aspect ratio (width rounded to the nearest pixel). Area
    interpolation when shrinking, bilinear when enlarging.
    """

    def __init__(self, height: int, width: int | None = None) -> None:
        if height < 1 or (width is not None and width < 1):
            raise ValueError(f"resize target must be positive, got ({height}, {width})")
        self.height = int(height)
        self.width = None if width is None else int(width)

    def __call__(self, sample: Sample) -> Sample:
        image = _image_to_warp(sample, "ResizeImage")
        h, w = image.shape[:2]
        width = self.width if self.width is not None else max(1, round(w * self.height / h))
        shrink = width * self.height < w * h
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        sample["image"] = cv2.resize(image, (width, self.height), interpolation=interp)
        sample["K"] = scale_intrinsics(_intrinsics(sample), width / w, self.height / h)
        return sample


class ResizeToCover:
    """Resize, keeping the aspect ratio, to the smallest size that covers (height, width)
    (both sides at least the target), ready for a crop to exactly (height, width)."""

    def __init__(self, height: int, width: int) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"cover target must be positive, got ({height}, {width})")
        self.height, self.width = int(height), int(width)

    def __call__(self, sample: Sample) -> Sample:
        h, w = _image(sample).shape[:2]
        scale = max(self.height / h, self.width / w)
        size = (max(self.height, round(h * scale)), max(self.width, round(w * scale)))
        return ResizeImage(*size)(sample)


def _crop(sample: Sample, x0: int, y0: int, height: int, width: int) -> Sample:
    image = _image(sample)
    sample["image"] = np.ascontiguousarray(image[y0 : y0 + height, x0 : x0 + width])
    sample["K"] = crop_intrinsics(_intrinsics(sample), x0, y0)
    return sample


def _check_crop(image: np.ndarray, height: int, width: int) -> tuple[int, int]:
    h, w = image.shape[:2]
    if h < height or w < width:
        raise ValueError(f"cannot crop a {h}x{w} image to {height}x{width}; resize it first")
    return h, w


class CenterCrop:
    """Crop the centre (height, width) window; K follows the crop."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)

    def __call__(self, sample: Sample) -> Sample:
        h, w = _check_crop(_image_to_warp(sample, "CenterCrop"), self.height, self.width)
        x0, y0 = (w - self.width) // 2, (h - self.height) // 2
        return _crop(sample, x0, y0, self.height, self.width)


class RandomCrop(RandomTransform):
    """Crop a (height, width) window at a uniformly random position; K follows the crop."""

    def __init__(self, height: int, width: int, seed: int | None = None) -> None:
        super().__init__(seed)
        self.height, self.width = int(height), int(width)

    def __call__(self, sample: Sample) -> Sample:
        h, w = _check_crop(_image_to_warp(sample, "RandomCrop"), self.height, self.width)
        rng = self.rng(sample)
        x0 = int(rng.integers(0, w - self.width + 1))
        y0 = int(rng.integers(0, h - self.height + 1))
        return _crop(sample, x0, y0, self.height, self.width)


class RandomHorizontalFlip(RandomTransform):
    """Mirror the image left-right with probability p; K maps u -> W - 1 - u (fx -> -fx)."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__(seed)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, sample: Sample) -> Sample:
        image = _image_to_warp(sample, "RandomHorizontalFlip")
        if self.rng(sample).random() < self.p:
            sample["image"] = np.ascontiguousarray(image[:, ::-1])
            sample["K"] = flip_intrinsics(_intrinsics(sample), image.shape[1])
        return sample


class CropPointRange:
    """Keep points inside an axis-aligned box of the LiDAR frame (metres, bounds inclusive)."""

    def __init__(
        self,
        x_range: tuple[float, float] = (-51.2, 51.2),
        y_range: tuple[float, float] = (-51.2, 51.2),
        z_range: tuple[float, float] = (-3.0, 1.0),
    ) -> None:
        self.bounds = np.array([x_range, y_range, z_range], dtype=np.float64)
        if np.any(self.bounds[:, 0] > self.bounds[:, 1]):
            raise ValueError(f"point range lower bounds exceed upper bounds: {self.bounds}")

    def __call__(self, sample: Sample) -> Sample:
        xyz = np.asarray(sample["points"])[:, :3]
        # Bounds in the points' own precision, so a float32 51.2 counts as inside 51.2.
        bounds = self.bounds.astype(xyz.dtype) if xyz.dtype.kind == "f" else self.bounds
        keep = np.all((xyz >= bounds[:, 0]) & (xyz <= bounds[:, 1]), axis=1)
        return select_points(sample, keep)


class SubsamplePoints(RandomTransform):
    """Keep at most `max_points` points, drawn uniformly without replacement (order kept)."""

    def __init__(self, max_points: int, seed: int | None = None) -> None:
        super().__init__(seed)
        if max_points < 1:
            raise ValueError(f"max_points must be positive, got {max_points}")
        self.max_points = int(max_points)

    def __call__(self, sample: Sample) -> Sample:
        n = len(sample["points"])
        if n <= self.max_points:
            return sample
        keep = np.sort(self.rng(sample).choice(n, size=self.max_points, replace=False))
        return select_points(sample, keep)


class NormalizeImage:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W): (x / 255 - mean) / std per channel."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        if np.any(self.std <= 0):
            raise ValueError(f"std must be positive, got {std}")

    def __call__(self, sample: Sample) -> Sample:
        image = _image(sample)
        if image.dtype != np.uint8:
            raise ValueError(f"NormalizeImage expects a uint8 image, got {image.dtype}")
        chw = image.transpose(2, 0, 1).astype(np.float32) / 255.0
        sample["image"] = np.ascontiguousarray((chw - self.mean) / self.std)
        return sample


class PhotometricJitter(RandomTransform):
    """What a real camera does to a rendered image: blur, exposure, tone curve, noise.

    Rendered images are sharp, noiseless and evenly exposed. In this order, each drawn per
    sample (0 disables a component):

    - blur: with probability `blur_probability`, a Gaussian of sigma U(0.3, `blur_sigma_px`);
    - brightness: gain U(1 - `brightness`, 1 + `brightness`);
    - contrast: the deviation from the mean grey scaled by U(1 - `contrast`, 1 + `contrast`);
    - gamma: value^g (0-1 scale), log g ~ U(-log(1 + `gamma`), log(1 + `gamma`));
    - noise: Gaussian per pixel and channel, std U(0, `noise_std`) of the full scale.

    Only pixel values change (uint8 (H, W, 3) RGB in and out): K, the points and the pair's
    ground truth stay valid, so it may run anywhere before `NormalizeImage`.
    """

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, gamma: float = 0.3,
                 noise_std: float = 0.02, blur_probability: float = 0.3,
                 blur_sigma_px: float = 1.5, seed: int | None = None) -> None:
        super().__init__(seed)
        for name, value, upper in (("brightness", brightness, 1.0),
                                   ("contrast", contrast, 1.0),
                                   ("blur_probability", blur_probability, 1.0)):
            if not 0.0 <= value <= upper:
                raise ValueError(f"{name} must lie in [0, {upper}], got {value}")
        for name, value in (("gamma", gamma), ("noise_std", noise_std),
                            ("blur_sigma_px", blur_sigma_px)):
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        self.brightness, self.contrast, self.gamma = brightness, contrast, gamma
        self.noise_std = noise_std
        self.blur_probability, self.blur_sigma_px = blur_probability, blur_sigma_px

    def __call__(self, sample: Sample) -> Sample:
        image = _image(sample)
        if image.dtype != np.uint8:
            raise ValueError(f"PhotometricJitter expects a uint8 image, got {image.dtype}")
        rng = self.rng(sample)
        # every draw is made whatever is enabled, so one switch does not reshuffle the others
        blur = rng.random() < self.blur_probability
        sigma = rng.uniform(0.3, max(0.3, self.blur_sigma_px))
        gain = rng.uniform(1.0 - self.brightness, 1.0 + self.brightness)
        contrast = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)
        gamma = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(self.gamma))
        noise_std = rng.uniform(0.0, self.noise_std)
        noise = rng.standard_normal(image.shape, dtype=np.float32)

        out = image
        if blur and self.blur_sigma_px > 0.0:
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        x = out.astype(np.float32) / 255.0
        x = x * gain
        x = (x - x.mean()) * contrast + x.mean()
        x = np.clip(x, 0.0, 1.0) ** gamma
        x = x + noise * noise_std
        sample["image"] = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        return sample
