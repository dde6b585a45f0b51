"""Labelled LiDAR scans for segmentation fine-tuning: points-only samples and batching.

A sample keeps `points` (N, 4) float32 (LiDAR frame), `labels` (N,) int64, `instances`
(N,) int64 (0 when the reader has none), `sequence`, `frame_id`; the image is dropped.
`collate_points` concatenates B samples with an `offset` vector (Pointcept convention):
`points` (N_total, 4) float32, `offset` (B,) int64 cumulative ends, `labels`, `instances`
(N_total,) int64, `sequence`, `frame_id` lists of str.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nclr_core.data.transforms import (
    RNG_KEY,
    Compose,
    CropPointRange,
    RandomTransform,
    Sample,
    SubsamplePoints,
    sample_rng,
)


class AugmentPoints(RandomTransform):
    """Rotate about z (uniform in ±rotation_range), scale (uniform in scale_range), and
    mirror y -> -y with `flip_probability`; labels are unchanged by all three."""

    def __init__(self, rotation_range: float, scale_range: tuple[float, float],
                 flip_probability: float, seed: int | None = None) -> None:
        super().__init__(seed)
        if rotation_range < 0 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"bad augmentation ranges: rotation {rotation_range}, "
                             f"scale {scale_range}")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
        self.rotation_range = float(rotation_range)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip_probability = float(flip_probability)

    def __call__(self, sample: Sample) -> Sample:
        rng = self.rng(sample)
        angle = rng.uniform(-self.rotation_range, self.rotation_range)
        scale = rng.uniform(*self.scale_range)
        flip = rng.random() < self.flip_probability
        c, s = math.cos(angle), math.sin(angle)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) * scale
        if flip:
            R = R @ np.diag([1.0, -1.0, 1.0])
        points = np.array(sample["points"], dtype=np.float32)
        points[:, :3] = (points[:, :3].astype(np.float64) @ R.T).astype(np.float32)
        sample["points"] = points
        return sample


def segmentation_transform(point_range: Sequence[float], max_points: int | None,
                           augment: AugmentPoints | None) -> Compose:
    """Augment (training), crop to `point_range`, cap at `max_points` (None: keep all)."""
    x0, y0, z0, x1, y1, z1 = point_range
    steps: list[Any] = [] if augment is None else [augment]
    steps.append(CropPointRange((x0, x1), (y0, y1), (z0, z1)))
    if max_points is not None:
        steps.append(SubsamplePoints(max_points))
    return Compose(steps)


class SegmentationDataset(Dataset):
    """Frames `indices` of a reader, as points-only samples through `transform`.

    Randomness is fixed by (seed, epoch, position), see `nclr_core.data.transforms`.
    Raises ValueError naming the frame when a scan has no labels or no point in range.
    """

    def __init__(self, reader: Any, indices: Sequence[int], transform: Compose,
                 seed: int) -> None:
        if len(indices) == 0:
            raise ValueError("the segmentation dataset holds no frames")
        self.reader = reader
        self.indices = [int(i) for i in indices]
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Sample:
        raw = self.reader[self.indices[position]]
        name = f"frame {raw.get('sequence')}/{raw.get('frame_id')}"
        if "labels" not in raw:
            raise ValueError(f"{name} has no labels (a segmentation split needs labels)")
        points = raw["points"]
        sample: Sample = {
            "points": points,
            "labels": raw["labels"],
            "instances": raw.get("instances", np.zeros(len(points), dtype=np.int64)),
            "sequence": raw.get("sequence", ""),
            "frame_id": raw.get("frame_id", ""),
            RNG_KEY: sample_rng(self.seed, self.epoch, position),
        }
        sample = self.transform(sample)
        sample.pop(RNG_KEY)
        if len(sample["points"]) == 0:
            raise ValueError(f"{name} has no point inside the point range")
        return sample


def collate_points(samples: Sequence[Sample]) -> dict[str, Any]:
    """Batch points-only samples (layout in the module docstring)."""
    if not samples:
        raise ValueError("collate_points needs at least one sample")
    counts = np.array([len(s["points"]) for s in samples], dtype=np.int64)
    for i, s in enumerate(samples):
        p = np.asarray(s["points"])
        if p.ndim != 2 or p.shape[1] != 4:
            raise ValueError(f"sample {i}: points must be (N, 4), got {p.shape}")
        for key in ("labels", "instances"):
            if len(s[key]) != len(p):
                raise ValueError(f"sample {i}: {key!r} has {len(s[key])} rows, points "
                                 f"have {len(p)}")

    def cat(key: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(
            np.concatenate([np.asarray(s[key]) for s in samples]))).to(dtype)

    return {
        "points": cat("points", torch.float32),
        "offset": torch.from_numpy(np.cumsum(counts)),
        "labels": cat("labels", torch.int64),
        "instances": cat("instances", torch.int64),
        "sequence": [str(s["sequence"]) for s in samples],
        "frame_id": [str(s["frame_id"]) for s in samples],
    }
