"""Export an NCLR checkpoint for inference (the nodes, nclr-bag eval, the demos).

    python training/export_model.py --checkpoint runs/x/<stamp>/checkpoints/best.pt \
        --out models/nclr_synthetic.pt [--float32]
    python training/export_model.py --checkpoint runs/ft/<name>/checkpoints/best.pt \
        --out models/nclr_synthetic_seg.pt          # a segmentation fine-tuning checkpoint

Keeps what inference needs — the model weights and the resolved config (pre-training:
`nclr_core.inference.Calibrator.from_checkpoint`), plus, for a segmentation checkpoint, its
kind, model kwargs and class names (`nclr_core.segmenter.Segmenter.from_checkpoint`) — and
the step and validation metrics; drops the optimizer, scheduler and RNG state. Weights are
stored as float16 unless `--float32` (they are cast back to float32 when loaded), which
halves the file. Beside the checkpoint it writes, for people and reviews,
`<name>.config.yaml` (the resolved config) and `<name>.metrics.json` (step, source
checkpoint and the validation that selected it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from nclr_core.atomic_write import write_text_atomic
from nclr_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nclr_core.engine.metrics_file import write_metrics_json

# what a segmentation checkpoint (nclr_core.engine.finetune) adds for Segmenter.from_checkpoint
SEGMENTATION_KEYS = ("kind", "model_kwargs", "class_names", "val_miou")


def inference_payload(checkpoint: dict, half: bool) -> dict:
    """The subset of a training checkpoint that inference needs, weights optionally float16."""
    for key in ("model", "config"):
        if key not in checkpoint:
            raise CheckpointError(f"no {key!r} in the checkpoint")
    weights = {name: value.half() if half and value.is_floating_point() else value
               for name, value in checkpoint["model"].items()}
    payload = {"model": weights, "config": checkpoint["config"],
               "step": checkpoint.get("step"), "metrics": checkpoint.get("metrics", {})}
    payload.update({k: checkpoint[k] for k in SEGMENTATION_KEYS if k in checkpoint})
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True,
                        help="pre-training or segmentation checkpoint")
    parser.add_argument("--out", required=True, help="inference checkpoint to write")
    parser.add_argument("--float32", action="store_true", help="keep float32 weights")
    args = parser.parse_args(argv)
    try:
        payload = inference_payload(load_checkpoint(args.checkpoint), not args.float32)
    except CheckpointError as err:
        print(f"export_model.py: error: {args.checkpoint}: {err}", file=sys.stderr)
        return 2
    payload["source"] = str(args.checkpoint)
    save_checkpoint(args.out, **payload)
    out = Path(args.out)
    write_text_atomic(out.with_suffix(".config.yaml"),
                      yaml.safe_dump(payload["config"], sort_keys=False))
    write_metrics_json(out.with_suffix(".metrics.json"),
                       {"step": payload["step"], "source": payload["source"],
                        "validation": payload["metrics"]})
    values = sum(v.numel() for v in payload["model"].values() if torch.is_floating_point(v))
    print(f"wrote {args.out}: {values} weights from step {payload['step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
