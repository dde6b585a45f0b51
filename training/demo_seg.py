"""Segmentation demo (`make demo-seg`): the segmentation node labels a replayed synthetic bag.

    python training/demo_seg.py [--checkpoint models/nclr_synthetic_seg.pt] [--out out/demo_seg]
        [--frames 8] [--beams 64] [--rate 0.05]

1. generates a short synthetic drive (one sequence) with a seed the shipped models never saw
   (`nclr_ros.demo_drive.DEMO_SEED`; they were trained on seed 0);
2. converts it to a ROS 2 bag (`nclr_ros.bag_convert`);
3. starts the segmentation node (`nclr_segmentation`, with --checkpoint, or without
   model_path so that it loads the shipped model) and replays the bag's clouds into it with
   `nclr-bag play --reliable --rate R` over DDS on loopback (`nclr_ros.bag_segment`);
4. compares the published labels with the drive's ground truth and prints the per-class IoU
   and the mIoU over the labelled clouds (all points of each cloud, as published).

The node segments the newest cloud only: at a rate faster than it segments, some clouds are
dropped (the demo says how many). Everything is written under --out (`synthetic/`, `bag/`,
`node.log`, `metrics.json`), replaced on each run.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from nclr_ros.demo_drive import add_drive_arguments, make_drive_bag

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("nclr.demo_seg")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="",
                        help="segmentation checkpoint (default: none, the node loads the "
                             "shipped models/nclr_synthetic_seg.pt)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo_seg",
                        help="output folder (replaced parts: synthetic/, bag/)")
    add_drive_arguments(parser, frames=8)
    parser.add_argument("--rate", type=float, default=0.05,
                        help="play rate, x real time (0.05: a cloud every 2 s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="replay timeout (s)")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if not args.rate > 0:
        parser.error("--rate must be positive")
    return args


def score(clouds: list, data: Path, class_names: list[str]) -> dict:
    """Per-class IoU and mIoU of the published labels against the drive's ground truth,
    matching clouds to scans by stamp; raises ValueError when a cloud matches no scan or
    its points differ from the scan's."""
    from nclr_core.data.semantickitti import IGNORE_INDEX, SemanticKittiDataset
    from nclr_core.segmentation_metrics import ConfusionMatrix

    reader = SemanticKittiDataset(data, sequences=("00",))
    scans = {round(float(reader[i]["stamp"]), 6): i for i in range(len(reader))}
    confusion = ConfusionMatrix(len(class_names), IGNORE_INDEX)
    for cloud in clouds:
        index = scans.get(round(cloud.stamp, 6))
        if index is None:
            raise ValueError(f"a labelled cloud stamped {cloud.stamp:.6f} s matches no scan")
        scan = reader[index]
        if not np.array_equal(scan["points"][:, :3], cloud.xyz):
            raise ValueError(f"the labelled cloud of scan {index} holds other points")
        confusion.update(cloud.labels.astype(np.int64), scan["labels"])
    iou = confusion.iou()
    return {"miou": None if np.isnan(confusion.miou()) else float(confusion.miou()),
            "per_class_iou": {n: None if np.isnan(v) else float(v)
                              for n, v in zip(class_names, iou, strict=True)},
            "num_points": int(confusion.matrix.sum())}


def report(run, metrics: dict) -> str:
    """Printed text; the last line is the mIoU."""
    d = run.diagnostics
    lines = [f"{len(run.clouds)} of {run.clouds_in_bag} clouds labelled by the node "
             f"({d.get('clouds_dropped', '?')} dropped while it was busy; last latency "
             f"{float(d.get('last_latency_s', 'nan')):.2f} s)",
             "class           IoU (%) of the published labels"]
    lines += [f"{name:<15} {100 * value:5.1f}" for name, value in
              metrics["per_class_iou"].items() if value is not None]
    miou = metrics["miou"]
    lines.append(f"mIoU {100 * miou:.1f} % over {metrics['num_points']} labelled points "
                 f"(classes present in the drive or the labels)" if miou is not None
                 else "mIoU: n/a (no labelled point)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        import rclpy  # noqa: F401
    except ImportError:
        print("demo_seg.py: error: rclpy cannot be imported: run `make setup` (installs "
              "requirements/ros.txt) or source a ROS 2 installation", file=sys.stderr)
        return 2
    from nclr_core.class_table import load_class_table
    from nclr_core.data.rosbag.messages import BagError
    from nclr_core.engine.metrics_file import write_metrics_json
    from nclr_ros.bag_segment import SegmentOptions, segment_bag_live

    if args.checkpoint and not Path(args.checkpoint).is_file():
        print(f"demo_seg.py: error: checkpoint {args.checkpoint} not found", file=sys.stderr)
        return 2
    try:
        data, bag = make_drive_bag(args.out, args)
        log.info("3/3 replaying %s into the segmentation node (%s)", bag,
                 args.checkpoint or "no model_path: the shipped model")
        run = segment_bag_live(bag, SegmentOptions(
            model_path=args.checkpoint, rate=args.rate, timeout_s=args.timeout,
            node_log=args.out / "node.log"))
        names = load_class_table(REPO / "config" / "semantic_kitti_classes.yaml").names
        metrics = score(run.clouds, data, names)
    except (BagError, FileNotFoundError, ValueError) as err:
        print(f"demo_seg.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    metrics.update({"clouds_in_bag": run.clouds_in_bag, "clouds_labelled": len(run.clouds),
                    "node_diagnostics": run.diagnostics,
                    "checkpoint": args.checkpoint or "shipped (no model_path)"})
    write_metrics_json(args.out / "metrics.json", metrics)
    print(report(run, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
