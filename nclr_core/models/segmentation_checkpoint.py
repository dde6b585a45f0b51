"""The segmentation model (`SegmentationNet`) as a checkpoint: written by fine-tuning
(`nclr_core.engine.finetune`) and `training/export_model.py`, read by the `Segmenter`.

A segmentation checkpoint has `kind` = `SEGMENTATION_KIND`, `model` (state dict),
`model_kwargs` (SegmentationNet keyword arguments, plain types), `class_names`, `config`
(the fine-tuning run's) and `step`; it rebuilds the model without the config file.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from nclr_core.checkpoint import CheckpointError, load_checkpoint
from nclr_core.models.segmentation import SegmentationNet

SEGMENTATION_KIND = "nclr_segmentation"


def load_segmentation_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                            ) -> tuple[SegmentationNet, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a segmentation checkpoint."""
    checkpoint = load_checkpoint(path, map_location)
    if checkpoint.get("kind") != SEGMENTATION_KIND:
        raise CheckpointError(f"{path}: not a segmentation checkpoint "
                              f"(kind {checkpoint.get('kind')!r})")
    model = SegmentationNet(**checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model"], strict=True)
    return model.eval(), checkpoint
