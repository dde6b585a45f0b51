"""End-to-end demo (`make demo`): calibrate a synthetic drive from a ROS 2 bag with NCLR.

    python training/demo.py [--checkpoint models/nclr_synthetic.pt] [--out out/demo]
        [--frames 25] [--width 1242 --height 375] [--beams 64] [--offline]
        [--prior-deg 10 --prior-m 0.25 | --no-prior] [--threads N]
        [--stages global,guided,joint]

1. generates a short synthetic drive (one sequence) with a seed the shipped checkpoint was
   not trained on (`nclr_ros.demo_drive.DEMO_SEED`; training/configs/synthetic_cpu.yaml
   uses seed 0);
2. converts it to a ROS 2 bag (`nclr_ros.bag_convert`: image, camera_info, points, and the
   ground truth on /tf_static);
3. evaluates the checkpoint on the bag with `nclr-bag eval` (`nclr_ros.bag_eval`): live
   through the calibration node when rclpy works (falling back to offline if the live run
   fails), in the online regime: the prior is the ground truth rotated by --prior-deg and
   shifted by --prior-m (METHOD.md §1: ±10°, ±25 cm), through the online pipeline's
   --stages;
4. prints the per-frame errors, each stage's final estimate (the stage-by-stage
   improvement), where the overlays and the report are, and last the error of the
   pipeline's estimate with its per-axis sigmas.

Everything is written under --out (`synthetic/`, `bag/`, `eval/`), replaced on each run.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from nclr_ros.demo_drive import add_drive_arguments, make_drive_bag

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "models" / "nclr_synthetic.pt"
DEMO_STAGES = "global,guided,joint"
HOW_TO_MAKE = ("make it with `python training/pretrain.py --config "
               "training/configs/synthetic_cpu.yaml` (after `python training/make_synthetic.py "
               "--out data/synthetic --sequences 12 --frames 60 --seed 0`), then copy the run's "
               "checkpoints/best.pt to models/nclr_synthetic.pt")

log = logging.getLogger("nclr.demo")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="NCLR checkpoint (default: the shipped models/"
                             "nclr_synthetic.pt)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo",
                        help="output folder (replaced parts: synthetic/, bag/, eval/)")
    add_drive_arguments(parser, frames=25)
    parser.add_argument("--offline", action="store_true",
                        help="evaluate in-process instead of through the ROS node")
    parser.add_argument("--prior-deg", type=float, default=10.0,
                        help="prior's rotation from the ground truth (deg)")
    parser.add_argument("--prior-m", type=float, default=0.25,
                        help="prior's translation from the ground truth (m)")
    parser.add_argument("--no-prior", action="store_true",
                        help="calibrate without a prior (no prior gates)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (1: reproducible estimates)")
    parser.add_argument("--stages", default=DEMO_STAGES,
                        help="online-calibration stages, comma-separated")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    return args


def _rclpy_works() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def evaluate_bag(args: argparse.Namespace, bag: Path, live: bool) -> dict:
    """`nclr-bag eval` on the bag (live, or offline); falls back to offline if live fails."""
    from nclr_core.data.rosbag.messages import BagError
    from nclr_ros.bag_eval import EvalOptions, evaluate

    prior = (None, None) if args.no_prior else (args.prior_deg, args.prior_m)
    options = EvalOptions(checkpoint=args.checkpoint, out=args.out / "eval", live=live,
                          prior_deg=prior[0], prior_m=prior[1], threads=args.threads,
                          stages=args.stages)
    command = " ".join(["nclr-bag", "eval", str(bag), "--checkpoint", str(args.checkpoint),
                        "--out", str(options.out), "--stages", args.stages]
                       + (["--live"] if live else [])
                       + ([] if args.no_prior else ["--prior-deg", str(args.prior_deg),
                                                    "--prior-m", str(args.prior_m)]))
    log.info("3/3 evaluating %s %s", args.checkpoint,
             "live through the calibration node" if live else "offline")
    try:
        return evaluate(bag, options, command)
    except BagError as err:
        if not live:
            raise
        log.warning("the live run failed (%s); evaluating offline instead", err)
        return evaluate_bag(args, bag, live=False)


def _fmt(value: float, digits: int) -> str:
    return "   -" if not math.isfinite(value) else f"{value:.{digits}f}"


def report(metrics: dict, out: Path) -> str:
    """The text printed at the end; its last line is the aggregated estimate's error."""
    lines = [f"per-frame estimates ({metrics['mode']}; RRE = Euler-sum rotation error, "
             f"RTE = translation error; '-' = no pose):",
             "frame  valid  accepted  RRE deg   RTE m   | aggregate RRE deg  RTE m"]
    for row in metrics["per_frame"]:
        lines.append(f"{row['frame']:5d}  {'yes' if row['valid'] else 'no':5s}  "
                     f"{'yes' if row['accepted'] else 'no':8s}  "
                     f"{_fmt(row['rre_euler_deg'], 3):>7s}  {_fmt(row['rte_m'], 4):>7s} | "
                     f"{_fmt(row['aggregate_rre_euler_deg'], 3):>17s}  "
                     f"{_fmt(row['aggregate_rte_m'], 4):>6s}")
    summary, counts = metrics["per_frame_summary"], metrics["counts"]
    lines.append(f"{counts['processed']} pairs calibrated, {counts['valid']} valid, "
                 f"{counts['accepted']} accepted, {counts['dropped_pairs']} dropped; mean "
                 f"latency {metrics['latency_s']['mean']:.2f} s; per-frame median RRE "
                 f"{_fmt(summary['rre_euler_deg_median'], 3)} deg, RTE "
                 f"{_fmt(summary['rte_m_median'], 4)} m (valid frames)")
    eval_dir = out / "eval"
    if metrics["overlay_images"]:
        lines.append(f"overlay images (aggregated estimate above ground truth): "
                     f"{', '.join(str(eval_dir / p) for p in metrics['overlay_images'])}")
    lines.append(f"report: {eval_dir / 'metrics.json'}, {eval_dir / 'frames.csv'}, "
                 f"{eval_dir / 'error_over_time.png'}, {eval_dir / 'recall_curves.png'}")
    for stage, e in metrics["stages"].items():
        lines.append(f"stage {stage:7s} final estimate: RRE {e['rre_euler_deg']:.3f} deg "
                     f"(geodesic {e['rre_geodesic_deg']:.3f} deg), RTE {e['rte_m']:.4f} m")
    aggregate = metrics["aggregate"]
    if aggregate["available"]:
        sigma_rot = "/".join(f"{v:.2f}" for v in aggregate["sigma_rot_deg"])
        sigma_trans = "/".join(f"{v * 100:.1f}" for v in aggregate["sigma_trans_m"])
        lines.append(f"aggregated estimate ({aggregate['stage']}, {counts['accepted']} "
                     f"accepted frames): RRE {aggregate['rre_euler_deg']:.3f} deg (geodesic "
                     f"{aggregate['rre_geodesic_deg']:.3f} deg), RTE {aggregate['rte_m']:.4f} m;"
                     f" sigma x/y/z {sigma_rot} deg, {sigma_trans} cm")
    else:
        lines.append(f"aggregated estimate: none: only {counts['accepted']} frames were "
                     f"accepted, {metrics['node_parameters']['min_frames']} are needed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.checkpoint.is_file():
        print(f"demo.py: error: checkpoint {args.checkpoint} not found; {HOW_TO_MAKE}",
              file=sys.stderr)
        return 2
    if not _rclpy_works():
        print("demo.py: error: rclpy cannot be imported, and the bag tools need it: run "
              "`make setup` (installs requirements/ros.txt) or source a ROS 2 installation",
              file=sys.stderr)
        return 2
    from nclr_core.data.rosbag.messages import BagError

    try:
        _, bag = make_drive_bag(args.out, args)
        metrics = evaluate_bag(args, bag, live=not args.offline)
    except (BagError, FileNotFoundError, ValueError) as err:
        print(f"demo.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(report(metrics, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
