"""Soak run: the calibration node fed valid image/cloud pairs at 10 Hz for a long time, its
resident memory sampled over time.

    nice -n 10 python benchmarks/soak_node.py --minutes 10 --out DIR [--update-doc]
    nice -n 10 python benchmarks/soak_node.py --minutes 60 --out DIR    # the full hour
    python benchmarks/soak_node.py --pairs 600 --out DIR                # a given count

The node runs in its own process (`python -m nclr_ros.calibration_node`, the shipped model
unless --model, its default parameters: best effort, newest pair only) in a random ROS
domain (221-230), with config/fastdds_large_data.xml on both sides. This process publishes
KITTI-sized synthetic frames (FRAMES distinct ones, generated with seed 0, stamped with the
wall clock) as CameraInfo, rgb8 Image and PointCloud2 with sensor-data QoS, reads the node's
/diagnostics and samples the node's RSS (/proc/PID/status VmRSS) every --sample-s seconds.

It passes when the RSS grows by less than GROWTH_LIMIT after the warm-up (median of the
last tenth of the samples against the median of the first tenth after the warm-up), pairs
keep being processed (no gap between two processed pairs longer than STUCK_LIMIT_S), the node
is idle at the end (nothing pending or in progress), and no pair raised in the worker.
Writes DIR/soak_node.json; `--update-doc` records it in benchmarks/results/ and BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(REPO))

from benchmarks.inputs import write_synthetic  # noqa: E402
from benchmarks.node_driver import (  # noqa: E402
    NodeDriver,
    calibration_node,
    frame_messages,
    node_environment,
)
from benchmarks.recorded import record  # noqa: E402

RATE_HZ = 10.0
FRAMES = 4
GROWTH_LIMIT = 0.05
STUCK_LIMIT_S = 30.0  # a node that processes nothing for this long, while fed, is stuck
DRAIN_TIMEOUT_S = 120.0


def rss_mib(pid: int) -> float:
    """Resident set size of process `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def _sum(values: dict[str, str], prefix: str) -> int:
    return sum(int(v) for k, v in values.items() if k.startswith(prefix))


def soak(node_pid_file: Path, synthetic_root: Path, duration_s: float, pairs: int | None,
         sample_s: float, warmup_s: float) -> dict[str, Any]:
    """Feed the node, sample its RSS, report (runs in this process, the node in another)."""
    from nclr_core.data.semantickitti import SemanticKittiDataset

    reader = SemanticKittiDataset(synthetic_root, sequences=("00",))
    driver = NodeDriver("nclr_soak_driver",
                        frame_messages([reader[i] for i in range(min(FRAMES, len(reader)))]))
    count = driver.count
    if not driver.spin_until(driver.connected, 120.0):
        raise RuntimeError("the node's subscriptions or diagnostics never appeared")
    pid = int(node_pid_file.read_text())
    total = pairs if pairs is not None else int(round(duration_s * RATE_HZ))
    samples: list[list[float]] = []
    last_processed, last_change, longest_gap = 0, None, 0.0
    t0 = time.monotonic()
    next_sample = t0
    for i in range(total):
        due = t0 + i / RATE_HZ
        driver.spin_until(lambda due=due: time.monotonic() >= due,
                          max(0.0, due - time.monotonic()))
        driver.publish(i)
        now = time.monotonic()
        processed = count("pairs_processed")
        if processed != last_processed or last_change is None:
            if last_change is not None and processed > 0:
                longest_gap = max(longest_gap, now - last_change)
            last_processed, last_change = processed, now
        if now >= next_sample:
            samples.append([now - t0, rss_mib(pid), processed])
            next_sample += sample_s
    published_s = time.monotonic() - t0
    if last_change is not None:
        longest_gap = max(longest_gap, time.monotonic() - last_change)
    t_end = time.monotonic()
    idle = driver.spin_until(lambda: driver.idle_since(t_end + 1.0), DRAIN_TIMEOUT_S)
    samples.append([time.monotonic() - t0, rss_mib(pid), count("pairs_processed")])
    values = dict(driver.values)
    info, image, cloud = driver.messages[0]
    driver.close()

    after = [s[1] for s in samples if s[0] >= warmup_s]
    tenth = max(1, len(after) // 10)
    start_mib = statistics.median(after[:tenth]) if after else float("nan")
    end_mib = statistics.median(after[-tenth:]) if after else float("nan")
    growth = (end_mib - start_mib) / start_mib if after else float("nan")
    worker_errors = _sum(values, "worker_errors.")
    return {
        "duration_s": published_s, "rate_hz": RATE_HZ, "warmup_s": warmup_s,
        "sample_s": sample_s, "pairs_published": total,
        "pairs_received": int(values.get("pairs_received", 0)),
        "pairs_processed": int(values.get("pairs_processed", 0)),
        "pairs_dropped": int(values.get("pairs_dropped", 0)),
        "estimates_accepted": int(values.get("estimates_accepted", 0)),
        "worker_errors": worker_errors,
        "bad_input": {k: int(v) for k, v in values.items() if k.startswith("bad_input.")},
        "messages_lost": _sum(values, "messages_lost."),
        "idle_at_end": idle, "longest_processing_gap_s": longest_gap,
        "stuck_limit_s": STUCK_LIMIT_S,
        "rss_after_warmup_mib": start_mib, "rss_end_mib": end_mib,
        "rss_max_mib": max(s[1] for s in samples), "growth_fraction": growth,
        "growth_limit": GROWTH_LIMIT, "rss_mib": samples,
        "passed": bool(growth < GROWTH_LIMIT and idle and worker_errors == 0
                       and longest_gap <= STUCK_LIMIT_S),
        "load_average_1_5_15min": list(os.getloadavg()), "niceness": os.nice(0),
        "image_wh": [int(image.width), int(image.height)],
        "points_per_cloud": int(cloud.width * cloud.height),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the node, soak it from this process, stop it; the result dict."""
    duration_s = args.minutes * 60.0 if args.pairs is None else args.pairs / RATE_HZ
    warmup_s = args.warmup_s if args.warmup_s is not None else max(30.0, 0.1 * duration_s)
    with tempfile.TemporaryDirectory(prefix="nclr_soak_") as tmp:
        tmp_path = Path(tmp)
        synthetic = args.synthetic or write_synthetic(tmp_path / "synthetic", FRAMES)
        env = node_environment((221, 230), ROS_HOME=str(tmp_path / "ros_home"))
        os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "RMW_IMPLEMENTATION")})
        params = {"save_on_shutdown": "false", "diagnostics_period_s": "1.0"}
        if args.model is not None:
            params["model_path"] = str(args.model)
        log_path = tmp_path / "node.log"
        pid_file = tmp_path / "node.pid"
        with calibration_node(params, env, log_path, tmp_path, 60.0) as node:
            pid_file.write_text(str(node.pid))
            try:
                result = soak(pid_file, Path(synthetic), duration_s, args.pairs, args.sample_s,
                              warmup_s)
            except Exception as err:
                raise RuntimeError(f"{err}\nnode log: {log_path.read_text()[-3000:]}") from err
        result["node_exit_status"] = node.returncode
        result["node_log_tail"] = log_path.read_text()[-1500:]
    w, h = result["image_wh"]
    frame = f"synthetic frames ({w}x{h} rgb8, {result['points_per_cloud']} points)"
    result["description"] = (
        f"The node (shipped model{'' if args.model is None else ' ' + str(args.model)}, "
        f"default parameters, its own process) fed {frame} at {RATE_HZ:g} Hz from another "
        "process; RSS of the node process sampled every "
        f"{args.sample_s:g} s. Run under nice -n {result['niceness']} on the shared 2-core "
        "machine, so the node processed what its share of the CPU allowed; the newest-pair "
        "worker drops the rest by design. A full hour: --minutes 60.")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--minutes", type=float, default=60.0, help="feeding time (default 60)")
    p.add_argument("--pairs", type=int, help="feed this many pairs instead of --minutes")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period (s)")
    p.add_argument("--warmup-s", type=float,
                   help="seconds excluded from the growth (default: a tenth, at least 30)")
    p.add_argument("--model", type=Path, help="checkpoint (default: the shipped model)")
    p.add_argument("--synthetic", type=Path, help="synthetic root with sequence 00 "
                                                  "(default: generate 4 frames, seed 0)")
    p.add_argument("--update-doc", action="store_true",
                   help="record the result in benchmarks/results/ and BENCHMARKS.md")
    args = p.parse_args(argv)
    result = run(args)
    prefix = f"nice -n {result['niceness']} " if result["niceness"] else ""
    result["command"] = prefix + "python benchmarks/soak_node.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    record("soak_node", result, args.out, args.update_doc)
    summary = {k: v for k, v in result.items() if k not in ("rss_mib", "node_log_tail")}
    print(json.dumps(summary, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
