"""Checkpoints: plain dicts of tensors and plain types, written atomically, versioned.

`torch.load(path, weights_only=True)` reads every checkpoint this module writes. The temp
files of a write that was killed are removed by the next save to the same path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nclr_core.atomic_write import atomic_path, remove_stale_temporaries

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or of another format."""


def save_checkpoint(path: str | os.PathLike, **content: Any) -> None:
    """Write `content` (+ `format_version`) to `path` atomically.

    Leftover temp files of `path` from writers that were killed are removed first.
    """
    path = Path(path)
    remove_stale_temporaries(path.parent, [path.name])
    payload = {"format_version": FORMAT_VERSION, **content}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`, checking its format version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a readable checkpoint (the file is empty: 0 bytes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        reason = str(err).strip() or "no reason given"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{reason})") from err
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path}: not an NCLR checkpoint (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {payload['format_version']}, "
                              f"this code reads version {FORMAT_VERSION}")
    return payload
