"""A stand-in for `Calibrator.calibrate` that hands out preset per-frame results: what the
online pipeline's policy tests feed it (the policy, not the network, is under test)."""
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.se3 import make_transform
from nclr_core.inference import CalibrationQuality, CalibrationResult, Matches
from nclr_core.online.pipeline import Frame

T_TRUE = make_transform(Rotation.from_rotvec([1.2, -1.2, 1.2]).as_matrix(), [0.06, -0.08, -0.27])
CAMERA = CameraModel(np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]), 640, 480)
FRAME = Frame(np.zeros((480, 640, 3), np.uint8), np.zeros((10, 4), np.float32), CAMERA, 1.0, 1.0)


def result(T, valid=True, inliers=100, reason=""):
    quality = CalibrationQuality(0.3, 10, 50, inliers, 1.5, math.nan, math.nan, valid, reason)
    empty = np.zeros(0)
    matches = Matches(empty.astype(int), np.zeros((0, 3)), np.zeros((0, 2)), empty,
                      empty.astype(bool))
    T = None if T is None else np.asarray(T, float)
    return CalibrationResult(T, np.zeros(10, np.float32), np.ones(10, bool),
                             np.zeros((480, 640), np.uint8), matches, quality)


class ScriptedCalibrator:
    """Hands out preset per-frame results (or raises preset errors from the forward), in
    order, through the Calibrator's two steps: `features` then `solve_global`."""

    def __init__(self, results):
        self.results = list(results)

    def features(self, image, points, camera):
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        self.points = points
        return ScriptedFeatures(result)

    def solve_global(self, features, points, camera, T_init=None):
        return features.result


@dataclass(frozen=True)
class ScriptedFeatures:
    """Stands for one forward's `NetworkFeatures`: carries the scripted result."""

    result: CalibrationResult
    pixel_scale: float = 3.0
