"""Segmenter: one LiDAR cloud in, a class label and a confidence per point out.

What the ROS segmentation node calls; NumPy in, NumPy out, never imports rclpy. Loads a
segmentation checkpoint (`nclr_core.models.segmentation_checkpoint`).

*(decision)* Every input point gets a label: the backbone voxelises points outside the
checkpoint's point range onto the border of its grid (`nclr_core.models.voxelize`), so far
points are labelled with less context; `in_range` tells which points were inside the range
the model was trained and evaluated on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from nclr_core.models.segmentation import SegmentationNet
from nclr_core.models.segmentation_checkpoint import load_segmentation_model


@dataclass(frozen=True)
class SegmentationResult:
    """labels (N,) uint16 train ids; confidence (N,) float32 softmax probability of the label;
    in_range (N,) bool, the point lies inside the model's point range."""

    labels: np.ndarray
    confidence: np.ndarray
    in_range: np.ndarray


class Segmenter:
    """Per-point semantic segmentation with a fine-tuned NCLR backbone.

    Attributes:
        class_names: name of each train id.
    """

    def __init__(self, model: SegmentationNet, class_names: list[str],
                 device: str | torch.device = "cpu") -> None:
        if len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for {model.num_classes} classes")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.point_range = model.backbone.point_range

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike,
                        device: str | torch.device = "cpu") -> Segmenter:
        """Load a segmentation checkpoint (finetune_seg.py's `checkpoints/best.pt` or
        `last.pt`, or one exported by training/export_model.py)."""
        model, checkpoint = load_segmentation_model(path, map_location=device)
        return cls(model, list(checkpoint["class_names"]), device)

    def run(self, points: np.ndarray) -> SegmentationResult:
        """Segment one cloud: points (N, 4) x y z intensity, LiDAR frame, metres."""
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 4:
            raise ValueError(f"points must be (N, 4) x y z intensity, got {points.shape}")
        if points.shape[0] == 0:
            raise ValueError("the cloud has no points")
        if not np.isfinite(points).all():
            raise ValueError("the cloud contains NaN or infinite values")
        tensor = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        tensor = tensor.to(self.device)
        offset = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=self.device)
        with torch.no_grad():
            probs = torch.softmax(self.model(tensor, offset)["logits"].float(), dim=1)
        confidence, labels = probs.max(dim=1)
        lo, hi = np.asarray(self.point_range[:3]), np.asarray(self.point_range[3:])
        in_range = np.all((points[:, :3] >= lo) & (points[:, :3] <= hi), axis=1)
        return SegmentationResult(labels=labels.cpu().numpy().astype(np.uint16),
                                  confidence=confidence.cpu().numpy().astype(np.float32),
                                  in_range=in_range)

    def segment(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels (N,) uint16, confidence (N,) float32) of one cloud (N, 4)."""
        result = self.run(points)
        return result.labels, result.confidence
