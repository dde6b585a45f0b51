"""`nclr-bag`: convert data sets to ROS 2 bags, play bags, check a bag's calibration streams.

    nclr-bag convert --from {semantickitti,kitti-object,nuscenes,synthetic} SRC --out BAG
                     [--storage sqlite3|mcap] [--compressed] [--sequence NN | --split S]
                     [--max-frames N]
    nclr-bag play BAG [--rate R] [--loop] [--clock] [--topics T ...] [--reliable]
                      [--delay S] [--wait-for-subscribers S]
    nclr-bag check BAG [--image-topic T] [--info-topic T] [--points-topic T] [--slop S]
    nclr-bag eval BAG --checkpoint C --out DIR [--ground-truth FILE] [--live]
                      [--prior-deg D --prior-m M] [--image-topic T] [--info-topic T]
                      [--points-topic T] [--stages S]
    nclr-bag calibrate BAG --prior FILE --out DIR [--checkpoint C] [--stages S]

Bad input (missing source folder, unreadable, truncated or damaged bag, missing topics)
prints one line `nclr-bag: error: ...` on stderr and exits with status 2. Every command
checks a bag's integrity (`nclr_core.data.rosbag.integrity`) before it uses it; `check`
reports what was verified, and for a damaged bag which topics and time range are damaged.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.reader import BagFrames
from nclr_core.data.rosbag.time_sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S
from nclr_core.geometry.se3 import rpy_from_matrix
from nclr_ros.bag_calibrate import CalibrateOptions, calibrate_bag
from nclr_ros.bag_convert import SOURCES, STORAGES, convert
from nclr_ros.bag_eval import EvalOptions, evaluate
from nclr_ros.bag_play import PlayOptions, play

LOG = logging.getLogger("nclr-bag")
EXIT_USAGE = 2
_DEFAULTS = BagTopics()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nclr-bag", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    conv = sub.add_parser("convert", help="write a data set as a ROS 2 bag")
    conv.add_argument("--from", dest="source", required=True, choices=SOURCES,
                      help="data set reader")
    conv.add_argument("src", help="data set root folder")
    conv.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    conv.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3")
    conv.add_argument("--compressed", action="store_true",
                      help="JPEG CompressedImage on <image topic>/compressed instead of rgb8")
    group = conv.add_mutually_exclusive_group()
    group.add_argument("--sequence", help="semantickitti/synthetic sequence (default 00)")
    group.add_argument("--split", help="kitti-object split (default training) or nuScenes "
                                       "table version (default v1.0-mini)")
    conv.add_argument("--max-frames", type=int, help="write at most the first N frames")

    ply = sub.add_parser("play", help="publish a bag into the ROS graph with its timing")
    ply.add_argument("bag", help="bag folder")
    ply.add_argument("--rate", type=float, default=1.0, help="playback speed (x real time)")
    ply.add_argument("--loop", action="store_true", help="play again from the start")
    ply.add_argument("--clock", action="store_true",
                     help="publish /clock with the bag time (for use_sim_time)")
    ply.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate while waiting")
    ply.add_argument("--topics", nargs="+", help="play only these topics")
    ply.add_argument("--reliable", action="store_true",
                     help="reliable sensor topics (default best effort)")
    ply.add_argument("--delay", type=float, default=0.0,
                     help="seconds to wait before the first message (discovery)")
    ply.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                     help="then wait up to S seconds until every played topic has a "
                          "subscriber")

    chk = sub.add_parser("check", help="verify a bag's integrity (CRCs, storage structure), "
                                       "pair its image and cloud streams like the node and "
                                       "report what a calibrator would get")
    chk.add_argument("bag", help="bag folder")
    chk.add_argument("--image-topic", default=_DEFAULTS.image,
                     help="Image topic (or its /compressed CompressedImage)")
    chk.add_argument("--info-topic", default=_DEFAULTS.info, help="CameraInfo topic")
    chk.add_argument("--points-topic", default=_DEFAULTS.points, help="PointCloud2 topic")
    chk.add_argument("--tf-static-topic", default=_DEFAULTS.tf_static)
    chk.add_argument("--slop", type=float, default=DEFAULT_SLOP_S,
                     help="largest image/cloud stamp gap paired (s)")
    chk.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
                     help="pairer queue per stream")

    ev = sub.add_parser("eval", help="evaluate a checkpoint as a calibrator on a bag "
                                     "(offline, or --live through the node)")
    ev.add_argument("bag", help="bag folder")
    ev.add_argument("--checkpoint", required=True,
                    help="NCLR checkpoint (.pt), or 'none' with --stages refine (no network)")
    ev.add_argument("--out", required=True, help="output folder (frames.csv, metrics.json, "
                                                 "plots, overlays/)")
    ev.add_argument("--ground-truth", type=Path,
                    help="calibration file (.yaml/.json); default: the bag's /tf_static")
    ev.add_argument("--live", action="store_true",
                    help="start the calibration node and play the bag into it (lock-step)")
    ev.add_argument("--prior-deg", type=float,
                    help="online regime: prior rotated this far from the ground truth (deg)")
    ev.add_argument("--prior-m", type=float,
                    help="online regime: prior shifted this far from the ground truth (m)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the prior's directions")
    ev.add_argument("--image-topic", default=_DEFAULTS.image,
                    help="Image topic (or its /compressed CompressedImage)")
    ev.add_argument("--info-topic", default=_DEFAULTS.info, help="CameraInfo topic")
    ev.add_argument("--points-topic", default=_DEFAULTS.points, help="PointCloud2 topic")
    ev.add_argument("--tf-static-topic", default=_DEFAULTS.tf_static)
    ev.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    ev.add_argument("--overlays", type=int, default=3, help="overlay images written")
    ev.add_argument("--timeout", type=float, default=120.0,
                    help="live: longest wait for the node on one message (s)")
    ev.add_argument("--threads", type=int,
                    help="torch CPU threads (offline and node); 1 makes estimates reproducible")
    ev.add_argument("--stages", default="global",
                    help="online-calibration stages, comma-separated (global, guided, joint, "
                         "refine; the node's `stages` parameter)")
    cal = sub.add_parser("calibrate", help="calibrate from a bag and a rough prior (writes "
                                           "the calibration files)")
    cal.add_argument("bag", help="bag folder")
    cal.add_argument("--prior", type=Path, required=True,
                     help="rough T_cam_lidar: a calibration file (.yaml/.json, the node's "
                          "format)")
    cal.add_argument("--out", type=Path, required=True, help="folder of the calibration files")
    cal.add_argument("--checkpoint", type=Path, default=Path("none"),
                     help="NCLR checkpoint for the learned stages (default: none)")
    cal.add_argument("--stages", default="refine",
                     help="online-calibration stages, comma-separated (default: refine)")
    cal.add_argument("--image-topic", default=_DEFAULTS.image,
                     help="Image topic (or its /compressed CompressedImage)")
    cal.add_argument("--info-topic", default=_DEFAULTS.info, help="CameraInfo topic")
    cal.add_argument("--points-topic", default=_DEFAULTS.points, help="PointCloud2 topic")
    cal.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    return parser


def _calibrate(args: argparse.Namespace) -> int:
    topics = BagTopics(image=args.image_topic, info=args.info_topic, points=args.points_topic)
    result = calibrate_bag(args.bag, CalibrateOptions(
        prior=args.prior, out=args.out, checkpoint=args.checkpoint, stages=args.stages,
        topics=topics, device=args.device))
    estimate = result.estimate
    print(f"{result.pairs} pairs in {result.wall_time_s:.1f} s")
    if not estimate.solved:
        print(f"no calibration: {estimate.reason}")
        return 1
    pose = estimate.pose
    sigma_rot = ", ".join(f"{v:.3f}" for v in pose.sigma_rot_deg)
    sigma_trans = ", ".join(f"{v * 100:.1f}" for v in pose.sigma_trans_m)
    print(f"T_cam_lidar from the {estimate.stage} stage over {estimate.num_frames} frames; "
          f"sigma x y z (camera frame): rotation {sigma_rot} deg, translation {sigma_trans} cm")
    if result.drift is not None:
        print(f"against the prior: {result.drift.describe()}")
    print(f"wrote {', '.join(str(p) for p in result.files.values())}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    result = convert(args.source, args.src, args.out, storage=args.storage,
                     compressed=args.compressed, sequence=args.sequence, split=args.split,
                     max_frames=args.max_frames)
    print(f"wrote {result.frames} frames ({result.first_stamp:.3f} .. {result.last_stamp:.3f} "
          f"s, {result.tf_static_messages} /tf_static) to {result.path}")
    return 0


def _play(args: argparse.Namespace) -> int:
    options = PlayOptions(rate=args.rate, loop=args.loop, clock=args.clock,
                          clock_hz=args.clock_hz,
                          topics=tuple(args.topics) if args.topics else None,
                          reliable=args.reliable, delay=args.delay,
                          subscriber_timeout=args.wait_for_subscribers)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = play(args.bag, options, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for topic, count in sorted(stats.published.items()):
        print(f"{topic}: {count} messages")
    for topic in stats.skipped_topics:
        print(f"{topic}: skipped (message type not installed)")
    return 0


def _check(args: argparse.Namespace) -> int:
    topics = BagTopics(image=args.image_topic, info=args.info_topic, points=args.points_topic,
                       tf_static=args.tf_static_topic)
    frames = BagFrames(args.bag, topics, slop=args.slop, queue_size=args.queue_size)
    pairs = with_truth = 0
    for sample in frames:
        pairs += 1
        with_truth += "T_cam_lidar" in sample
    c = frames.counters
    print(f"{args.bag}: {pairs} pairs from {c.received_images} images ({frames.image_topic}) "
          f"and {c.received_clouds} clouds; dropped {c.dropped_images} images, "
          f"{c.dropped_clouds} clouds, {frames.images_without_info} images before any "
          f"CameraInfo; {with_truth} pairs have T_cam_lidar on {topics.tf_static}")
    for (parent, child), T in sorted(frames.tf_static.items()):
        rpy = np.degrees(rpy_from_matrix(T[:3, :3]))
        print(f"  T_{parent}_{child}: t = {np.round(T[:3, 3], 4).tolist()} m, "
              f"rpy = {np.round(rpy, 3).tolist()} deg")
    print(f"  {frames.integrity.summary()}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    topics = BagTopics(image=args.image_topic, info=args.info_topic, points=args.points_topic,
                       tf_static=args.tf_static_topic)
    options = EvalOptions(checkpoint=Path(args.checkpoint), out=Path(args.out), topics=topics,
                          ground_truth=args.ground_truth, live=args.live,
                          prior_deg=args.prior_deg, prior_m=args.prior_m, seed=args.seed,
                          device=args.device, overlays=args.overlays, timeout_s=args.timeout,
                          threads=args.threads, stages=args.stages)
    m = evaluate(args.bag, options, shlex.join(["nclr-bag", *args.argv]))
    s, c = m["per_frame_summary"], m["counts"]
    print(f"{m['mode']}: {c['processed']} pairs calibrated ({c['valid']} valid, "
          f"{c['accepted']} accepted, {c['dropped_pairs']} pairs dropped); per-frame RRE "
          f"{s['rre_euler_deg_median']:.3f} deg, RTE {s['rte_m_median']:.4f} m (median of "
          f"valid); latency {m['latency_s']['mean']:.3f} s")
    for stage, e in m["stages"].items():
        print(f"  {stage}: RRE {e['rre_geodesic_deg']:.3f} deg (geodesic), RTE "
              f"{e['rte_m']:.4f} m")
    a = m["aggregate"]
    if a["available"]:
        sigma_rot = ", ".join(f"{v:.3f}" for v in a["sigma_rot_deg"])
        sigma_trans = ", ".join(f"{v * 100:.1f}" for v in a["sigma_trans_m"])
        print(f"aggregated estimate ({a['stage']}): RRE {a['rre_euler_deg']:.3f} deg "
              f"(geodesic {a['rre_geodesic_deg']:.3f} deg), RTE {a['rte_m']:.4f} m; "
              f"sigma x y z: rotation {sigma_rot} deg, translation {sigma_trans} cm")
    else:
        print("aggregated estimate: none (too few accepted frames)")
    if m["drift"] is not None:
        state = "DRIFTED from" if m["drift"]["drifted"] else "consistent with"
        print(f"the estimate is {state} the prior (installed calibration): "
              f"{m['drift']['drift']}")
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


_COMMANDS = {"convert": _convert, "play": _play, "check": _check, "eval": _eval,
             "calibrate": _calibrate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run `nclr-bag` with `argv` (default sys.argv[1:]); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except (BagError, FileNotFoundError, NotADirectoryError, ValueError) as err:
        print(f"nclr-bag: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
