"""The LiDAR intensity convention: reflectance in [0, 1] everywhere inside NCLR.

Sensors and data sets disagree: KITTI and our synthetic data record 0-1, nuScenes and many
drivers (Velodyne, Hesai, Livox) 0-255, some 16-bit (0-65535). A network trained on one
scale sees garbage on another, so clouds are divided by their sensor's full scale at the
boundary: the readers do it for the data sets, `IntensityNormalizer` for live clouds (given
full scale, or the smallest of FULL_SCALES that holds the values seen so far).
"""
from __future__ import annotations

import numpy as np

FULL_SCALES = (1.0, 255.0, 65535.0)


def full_scale_of(intensity: np.ndarray) -> float:
    """The smallest of FULL_SCALES that holds every finite value of `intensity` (N,).

    Raises ValueError for negative values or values above the largest full scale.
    """
    values = np.asarray(intensity, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return FULL_SCALES[0]
    if values.min() < 0.0:
        raise ValueError(f"negative LiDAR intensity {values.min():g}: not a reflectance")
    for scale in FULL_SCALES:
        if values.max() <= scale:
            return scale
    raise ValueError(f"LiDAR intensity up to {values.max():g} exceeds every known full scale "
                     f"{FULL_SCALES}: set the sensor's full scale explicitly")


class IntensityNormalizer:
    """Divides the intensity column of (N, 4) x y z intensity clouds by the full scale.

    full_scale: the sensor's (e.g. 255.0); None: found from the clouds, never decreasing
    (the first bright cloud of a 0-255 sensor sets 255 for the rest of the run).
    """

    def __init__(self, full_scale: float | None = None) -> None:
        if full_scale is not None and not full_scale > 0:
            raise ValueError(f"intensity full scale must be positive, got {full_scale}")
        self.fixed = full_scale is not None
        self.full_scale = float(full_scale) if full_scale is not None else FULL_SCALES[0]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """float32 (N, 4) copy with intensity / full scale (the input is not modified)."""
        if not self.fixed:
            self.full_scale = max(self.full_scale, full_scale_of(points[:, 3]))
        out = np.array(points, dtype=np.float32, copy=True)
        out[:, 3] /= self.full_scale
        return out
