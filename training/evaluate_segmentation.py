"""Evaluate a segmentation checkpoint on labelled scans (SemanticKITTI layout).

    python training/evaluate_segmentation.py --checkpoint models/nclr_synthetic_seg.pt \
        --data data/eval_seed2 --split 00 01 --out runs/eval_seg [--max-frames N] \
        [--overlays 3] [--device cpu] [--classes-file config/semantic_kitti_classes.yaml]

CHECKPOINT is a fine-tuning checkpoint (`training/finetune_seg.py`: checkpoints/best.pt) or
an exported one (`training/export_model.py`). Every scan is cropped to the checkpoint's point
range, as in fine-tuning. Writes into --out:
- `metrics.json`: `miou`, `per_class_iou`, `confusion_matrix` (rows ground truth), and with
  an instance head `pq`, `sq`, `rq`, `pq_things`, `pq_stuff`, `per_class_pq`; plus the
  command, checkpoint, data, split, frame count and overlay paths;
- `confusion_matrix.png` (rows normalised);
- `overlays/SEQ_FRAME_bev.png` (bird's-eye view, prediction beside ground truth) and
  `overlays/SEQ_FRAME_camera.png` (predicted classes over the image, above the ground
  truth) for --overlays scans spread over the split.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from nclr_core.checkpoint import CheckpointError
from nclr_core.class_table import ClassTable, load_class_table
from nclr_core.data.segmentation_dataset import (
    SegmentationDataset,
    collate_points,
    segmentation_transform,
)
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.engine.segmentation_eval import evaluate_segmentation, evenly_spaced
from nclr_core.models.segmentation import SegmentationNet
from nclr_core.models.segmentation_checkpoint import load_segmentation_model
from nclr_core.segmentation_views import (
    label_overlay,
    plot_bird_eye,
    plot_confusion_matrix,
    save_png_rgb,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLASSES = REPO / "config" / "semantic_kitti_classes.yaml"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="segmentation checkpoint (.pt)")
    parser.add_argument("--data", required=True, help="dataset root (SemanticKITTI layout)")
    parser.add_argument("--split", nargs="+", required=True, metavar="SEQ",
                        help="sequences to evaluate, e.g. 00 01")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="evaluate this many scans spread over the split (default: all)")
    parser.add_argument("--overlays", type=int, default=3,
                        help="scans drawn as bird's-eye and camera overlays")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--classes-file", default=str(DEFAULT_CLASSES),
                        help="class names and colours; the names must be the checkpoint's")
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if args.overlays < 0:
        parser.error("--overlays must be >= 0")
    return args


def write_overlays(out: Path, model: SegmentationNet, dataset: SegmentationDataset,
                   reader: SemanticKittiDataset, positions: list[int], classes: ClassTable,
                   device: torch.device) -> list[str]:
    """Bird's-eye and camera overlays of dataset[positions]; returns their paths under out."""
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    written = []
    for position in positions:
        batch = collate_points([dataset[position]])
        with torch.no_grad():
            logits = model(batch["points"].to(device), batch["offset"].to(device))["logits"]
        predicted = logits.argmax(dim=1).cpu().numpy()
        points, truth = batch["points"].numpy(), batch["labels"].numpy()
        raw = reader[dataset.indices[position]]
        name = f"{raw['sequence']}_{raw['frame_id']}"
        title = f"sequence {raw['sequence']}, frame {raw['frame_id']}"
        plot_bird_eye(out / "overlays" / f"{name}_bev.png", points, predicted, truth,
                      classes.colours, classes.names, model.ignore_index, title)
        labelled = truth != model.ignore_index  # the ground-truth view leaves them out
        views = [label_overlay(raw["image"], pts, labels, classes.colours, raw["T_cam_lidar"],
                               raw["K"])
                 for pts, labels in ((points, predicted), (points[labelled], truth[labelled]))]
        save_png_rgb(out / "overlays" / f"{name}_camera.png", np.concatenate(views, axis=0))
        written += [f"overlays/{name}_bev.png", f"overlays/{name}_camera.png"]
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["python", "training/evaluate_segmentation.py", *argv])
    device = torch.device(args.device)
    try:
        model, checkpoint = load_segmentation_model(args.checkpoint, device)
        names = list(checkpoint["class_names"])
        classes = load_class_table(args.classes_file)
        if classes.names != names:
            raise ValueError(f"classes file {args.classes_file} names {classes.names}, the "
                             f"checkpoint was trained on {names}")
        reader = SemanticKittiDataset(args.data, sequences=tuple(args.split))
        indices = evenly_spaced(len(reader), args.max_frames)
        transform = segmentation_transform(model.backbone.point_range, None, None)
        dataset = SegmentationDataset(reader, indices, transform, seed=0)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pq_min_points = int(checkpoint.get("config", {}).get("eval", {})
                            .get("pq_min_points", 50))
        metrics = evaluate_segmentation(model, dataset, device, names, pq_min_points)
        plot_confusion_matrix(out / "confusion_matrix.png", np.asarray(
            metrics["confusion_matrix"]), names, f"{Path(args.checkpoint).name} on "
            f"{args.data} {' '.join(args.split)}: mIoU {100 * (metrics['miou'] or 0):.1f} %")
        overlays = write_overlays(out, model, dataset, reader,
                                  evenly_spaced(len(dataset), args.overlays)
                                  if args.overlays else [], classes, device)
    except (CheckpointError, FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"evaluate_segmentation.py: error: {err}", file=sys.stderr)
        return 2
    metrics.update({"command": command, "checkpoint": str(args.checkpoint),
                    "checkpoint_step": checkpoint.get("step"), "data": str(args.data),
                    "split": list(args.split), "num_frames": len(dataset),
                    "eval_points": "points inside the checkpoint's point range",
                    "confusion_matrix_png": "confusion_matrix.png", "overlays": overlays})
    write_metrics_json(out / "metrics.json", metrics)
    print(f"mIoU {100 * (metrics['miou'] or 0):.1f} % over {len(dataset)} scans"
          + (f", PQ {100 * metrics['pq']:.1f} %" if metrics.get("pq") is not None else "")
          + f"; written to {out}")
    for name, value in metrics["per_class_iou"].items():
        if value is not None:
            print(f"  {name:<14} IoU {100 * value:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
