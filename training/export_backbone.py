"""Export the point backbone of an NCLR pre-training checkpoint (METHOD.md §7).

    python training/export_backbone.py --checkpoint runs/x/<stamp>/checkpoints/best.pt \
        --out models/nclr_point_backbone.pt

The output (`nclr_core.models.backbone_checkpoint`) holds `backbone`, the state dict of
`nclr_core.models.point_encoder.PointEncoder`, and `backbone_kwargs`, its constructor
arguments, so that `PointEncoder(**backbone_kwargs).load_state_dict(backbone, strict=True)`
rebuilds it; `training/finetune_seg.py --init` reads it. It loads with
`torch.load(path, weights_only=True)`.

OpenPCDet: this is a MinkUNet-style sparse U-Net on spconv 2 (SubMConv3d / SparseConv3d
with bias-free convolutions + BatchNorm1d, the same building blocks as OpenPCDet's
`VoxelBackBone8x` / `UNetV2`), but it is NOT a drop-in state dict for `VoxelBackBone8x`:
its stem is 5x5x5 on (intensity, in-voxel offset) inputs, its encoder has four stride-2
stages with residual blocks (VoxelBackBone8x: three, plain conv blocks, then a stride-(2,1,1)
conv_out along z) and different widths. Weight shapes differ, so no key mapping exists; a
detector that wants these weights must use this encoder (e.g. wrap `PointEncoder.encode`
and feed `state.skips[3]`, stride 8, to its BEV head). Spconv weight layout is spconv 2's
(out, k, k, k, in) in both code bases.
"""
from __future__ import annotations

import argparse
import sys

import torch

from nclr_core.checkpoint import CheckpointError, load_checkpoint
from nclr_core.models.backbone_checkpoint import (
    backbone_from_pretrain_checkpoint,
    build_backbone,
    save_backbone,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="pre-training checkpoint")
    parser.add_argument("--out", required=True, help="backbone checkpoint to write")
    args = parser.parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        state, kwargs = backbone_from_pretrain_checkpoint(checkpoint)
        build_backbone(state, kwargs)  # refuse to write what would not load back
    except CheckpointError as err:
        print(f"export_backbone.py: error: {args.checkpoint}: {err}", file=sys.stderr)
        return 2
    num_params = sum(v.numel() for v in state.values() if torch.is_floating_point(v))
    save_backbone(args.out, state, kwargs, source=str(args.checkpoint),
                  source_step=checkpoint.get("step"))
    print(f"wrote {args.out}: PointEncoder {kwargs['variant']}, {num_params} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
