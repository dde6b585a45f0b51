"""Deterministic label subsets for the label-efficiency protocol (METHOD.md §7).

*(decision)* Subsets are **scene-level**: a fraction of the labelled scans keeps all of its
labels, the other scans are not used for fine-tuning at all (the paper fine-tunes on a
fraction of the labelled scans, as PointContrast / SegContrast do; point-level subsets would
be another, easier protocol).

Each frame gets a rank key `blake2b(seed, sequence, frame_id)`; the subset of fraction f
is the round(f * n) frames (at least one) with the smallest keys. Therefore:
- the same (frames, fraction, seed) always gives the same subset, whatever order the reader
  lists the frames in and on any machine (no global RNG);
- another seed gives an unrelated subset;
- for one seed, subsets **nest**: the 1 % subset is inside the 10 % subset, which is inside
  the 50 % one.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def frame_rank_key(seed: int, sequence: str, frame_id: str) -> bytes:
    """16-byte sort key of one frame for `seed` (stable across runs and platforms)."""
    text = f"{int(seed)}\x00{sequence}\x00{frame_id}".encode()
    return hashlib.blake2b(text, digest_size=16).digest()


def subset_size(num_frames: int, fraction: float) -> int:
    """round(fraction * num_frames), half up, at least 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if num_frames < 1:
        raise ValueError("there are no frames to choose labelled scans from")
    return max(1, min(num_frames, int(np.floor(fraction * num_frames + 0.5))))


def select_labelled_frames(frames: Sequence[tuple[str, str]], fraction: float,
                           seed: int) -> np.ndarray:
    """Indices of the frames that keep their labels.

    Args:
        frames: (sequence, frame_id) of every candidate frame, e.g. a reader's frame list.
        fraction: share of the frames to keep, in (0, 1].
        seed: non-negative integer.
    Returns:
        (k,) int64 indices into `frames`, ascending, k = `subset_size(len(frames), fraction)`.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if len(set(frames)) != len(frames):
        raise ValueError("frames contain duplicate (sequence, frame_id) pairs")
    k = subset_size(len(frames), fraction)
    keys = [frame_rank_key(seed, str(seq), str(fid)) for seq, fid in frames]
    order = sorted(range(len(frames)), key=keys.__getitem__)
    return np.sort(np.asarray(order[:k], dtype=np.int64))
