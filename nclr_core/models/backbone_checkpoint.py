"""The point backbone (`PointEncoder`) as a stand-alone checkpoint, for fine-tuning.

Two sources hold a point backbone:
- a pre-training checkpoint (`nclr_core.engine.trainer`): `model` is a `CalibrationNet` state
  dict whose point encoder keys start with `point_encoder.`, and `config` the resolved
  pre-training config (`model`: CalibrationNet kwargs, `data.point_range`);
- a backbone checkpoint (`training/export_backbone.py`, `save_backbone`): `kind` =
  `BACKBONE_KIND`, `backbone` the PointEncoder state dict, `backbone_kwargs` its constructor
  keyword arguments.

Only the point encoder is kept: the cross-modal fusion is a pre-training device, and the
downstream backbone decodes its own (unfused) bottleneck features.
"""
from __future__ import annotations

import inspect
import os
from typing import Any

import torch

from nclr_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nclr_core.config import ConfigError
from nclr_core.data.config import checkpoint_data_config
from nclr_core.models.calibration_net import CalibrationNet
from nclr_core.models.point_encoder import PointEncoder

BACKBONE_KIND = "nclr_point_backbone"
PREFIX = "point_encoder."
# PointEncoder kwarg <- CalibrationNet kwarg
_FROM_CALIBRATION_NET = {
    "variant": "point_variant",
    "out_channels": "channels",
    "voxel_size": "voxel_size",
    "base_channels": "point_base_channels",
}


def _calibration_net_defaults() -> dict[str, Any]:
    params = inspect.signature(CalibrationNet.__init__).parameters
    return {name: p.default for name, p in params.items() if p.default is not p.empty}


def backbone_kwargs_from_pretrain_config(config: dict[str, Any]) -> dict[str, Any]:
    """PointEncoder kwargs of the point encoder that `CalibrationNet(**config["model"],
    point_range=<data.point_range>)` builds (CalibrationNet defaults fill gaps; the data
    section read by `checkpoint_data_config`).

    `point_range` is returned as a list of 6 floats; `in_channels` is 4 (x y z intensity).
    """
    try:
        model_cfg = dict(config["model"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"pre-training config lacks {err}") from err
    try:
        point_range = checkpoint_data_config(config).point_range
    except ConfigError as err:
        raise CheckpointError(str(err)) from err
    defaults = _calibration_net_defaults()
    kwargs: dict[str, Any] = {
        name: model_cfg.get(source, defaults[source])
        for name, source in _FROM_CALIBRATION_NET.items()
    }
    kwargs["in_channels"] = 4
    kwargs["point_range"] = [float(v) for v in point_range]
    return kwargs


def backbone_from_pretrain_checkpoint(
    checkpoint: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(PointEncoder state dict, PointEncoder kwargs) from a loaded pre-training checkpoint."""
    if "model" not in checkpoint or "config" not in checkpoint:
        raise CheckpointError("not a pre-training checkpoint (needs 'model' and 'config')")
    state = {k[len(PREFIX):]: v for k, v in checkpoint["model"].items() if k.startswith(PREFIX)}
    if not state:
        raise CheckpointError(f"the checkpoint's model has no '{PREFIX}*' parameters")
    return state, backbone_kwargs_from_pretrain_config(checkpoint["config"])


def load_backbone(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, kwargs) of the point backbone in a pre-training or backbone checkpoint."""
    checkpoint = load_checkpoint(path, map_location)
    try:
        if checkpoint.get("kind") == BACKBONE_KIND:
            return dict(checkpoint["backbone"]), dict(checkpoint["backbone_kwargs"])
        return backbone_from_pretrain_checkpoint(checkpoint)
    except (CheckpointError, KeyError) as err:
        raise CheckpointError(f"{path}: {err}") from err


def build_backbone(state: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> PointEncoder:
    """A PointEncoder from its kwargs with `state` loaded strictly."""
    encoder = PointEncoder(**{**kwargs, "point_range": tuple(kwargs["point_range"])})
    encoder.load_state_dict(state, strict=True)
    return encoder


def save_backbone(path: str | os.PathLike, state: dict[str, torch.Tensor],
                  kwargs: dict[str, Any], **extra: Any) -> None:
    """Write a backbone checkpoint (atomic, versioned, `weights_only`-loadable)."""
    plain_kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    save_checkpoint(path, kind=BACKBONE_KIND, backbone=dict(state),
                    backbone_kwargs=plain_kwargs, **extra)
