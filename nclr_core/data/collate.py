"""Batching of pair samples: clouds concatenated with an `offset` vector (Pointcept
convention, no padding), per-frame arrays stacked.

Batch produced by `collate_pairs` (B frames, N_total points):
- `image` (B, 3, H, W) float32, normalised; `K` (B, 3, 3) float32 at that resolution;
- `points` (N_total, 4) float32; `offset` (B,) int64 cumulative end index, frame b owns
  `points[offset[b-1]:offset[b]]`;
- per frame, when the samples carry them: `T_gt`, `T_cam_lidar`, `T_aug`, `T_init`
  (B, 4, 4) float32, `image_overlap` (B, H/s, W/s) bool;
- per point, when present: `point_overlap` (N_total,) bool, `point_pixel` (N_total, 2)
  float32, `labels` / `instances` (N_total,) int64;
- `stamp` (B,) float64; `sequence`, `frame_id`, `camera_frame`, `lidar_frame`: lists of str.
Other sample keys (e.g. the per-sample generator) are not batched.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Sample = dict[str, Any]
Batch = dict[str, Any]

FRAME_TENSORS = {
    "K": torch.float32,
    "T_gt": torch.float32,
    "T_cam_lidar": torch.float32,
    "T_aug": torch.float32,
    "T_init": torch.float32,
    "image_overlap": torch.bool,
}
POINT_TENSORS = {
    "point_overlap": torch.bool,
    "point_pixel": torch.float32,
    "labels": torch.int64,
    "instances": torch.int64,
}
FRAME_LISTS = ("sequence", "frame_id", "camera_frame", "lidar_frame")


def _present(samples: Sequence[Sample], key: str) -> bool:
    """Whether `key` is in every sample; raise if it is in only some of them."""
    count = sum(key in s for s in samples)
    if 0 < count < len(samples):
        raise ValueError(f"key {key!r} is present in {count} of {len(samples)} samples")
    return count == len(samples)


def _tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(value)).to(dtype)


def collate_pairs(samples: Sequence[Sample]) -> Batch:
    """Batch pair samples (see the module docstring for the layout)."""
    if not samples:
        raise ValueError("collate_pairs needs at least one sample")
    for key in ("image", "points", "K"):
        if not _present(samples, key):
            raise ValueError(f"samples lack the required key {key!r}")

    images = [np.asarray(s["image"]) for s in samples]
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[0] != 3 or not np.issubdtype(image.dtype, np.floating):
            raise ValueError(
                f"sample {i}: image must be normalised float (3, H, W) (apply NormalizeImage), "
                f"got {image.dtype} {image.shape}"
            )
        if image.shape != images[0].shape:
            raise ValueError(f"sample {i}: image {image.shape} differs from {images[0].shape}")

    points = [np.asarray(s["points"]) for s in samples]
    for i, p in enumerate(points):
        if p.ndim != 2 or p.shape[1] != 4:
            raise ValueError(f"sample {i}: points must be (N, 4), got {p.shape}")
    counts = np.array([len(p) for p in points], dtype=np.int64)

    batch: Batch = {
        "image": torch.from_numpy(np.stack(images).astype(np.float32, copy=False)),
        "points": _tensor(np.concatenate(points), torch.float32),
        "offset": torch.from_numpy(np.cumsum(counts)),
    }
    for key, dtype in FRAME_TENSORS.items():
        if _present(samples, key):
            batch[key] = _tensor(np.stack([np.asarray(s[key]) for s in samples]), dtype)
    for key, dtype in POINT_TENSORS.items():
        if _present(samples, key):
            values = [np.asarray(s[key]) for s in samples]
            for i, (v, n) in enumerate(zip(values, counts, strict=True)):
                if len(v) != n:
                    raise ValueError(f"sample {i}: {key!r} has {len(v)} rows, points have {n}")
            batch[key] = _tensor(np.concatenate(values), dtype)
    if _present(samples, "stamp"):
        batch["stamp"] = torch.tensor([float(s["stamp"]) for s in samples], dtype=torch.float64)
    for key in FRAME_LISTS:
        if _present(samples, key):
            batch[key] = [str(s[key]) for s in samples]
    return batch


def batch_to(batch: Batch, device: torch.device | str, non_blocking: bool = False) -> Batch:
    """Copy of `batch` with every tensor moved to `device`; other values shared as they are."""
    return {
        key: value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value
        for key, value in batch.items()
    }
