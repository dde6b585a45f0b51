"""Node throughput: the calibration node fed synthetic frames at 10 Hz over loopback DDS.

Two configurations (`CONFIGURATIONS`): the `global` stage with a checkpoint of the CPU
configuration (random weights, seed 0, no prior), and the stages `global,guided,joint` with
the shipped model and a prior 10 deg / 25 cm from the drive's ground truth (what the demo
runs). The node (`python -m nclr_ros.calibration_node`) runs in its own process in a random
ROS domain (201-230, apart from the tests' 100-200). A driver process (this file, `drive`)
replays the synthetic frames (rgb8 Image, CameraInfo, PointCloud2 x y z intensity, equal
stamps) with sensor-data QoS at the input rate, waits for the node to finish its backlog,
and reads the node's own counters from `/diagnostics`.
After one warm-up pair is processed, it reports pairs processed per second and the share
of published pairs that were processed (the node computes only on the newest pair, so the
rest are dropped by design). With random weights RANSAC's adaptive stop differs from a
trained model's.

    python benchmarks/bench_node.py drive SYNTHETIC_ROOT SECONDS RATE_HZ TIMEOUT_S
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(REPO))

from benchmarks.node_driver import (  # noqa: E402
    NodeDriver,
    calibration_node,
    frame_messages,
    node_environment,
)

INPUT_RATE_HZ = 10.0
FRAMES_REPLAYED = 4
DIAGNOSTICS_PERIOD_S = 0.2


# ---------------------------------------------------------------- driver (separate process)
def drive(synthetic_root: str, seconds: float, rate_hz: float, timeout_s: float
          ) -> dict[str, Any]:
    """Publish, wait, and report the node's counters (runs in the driver process)."""
    from nclr_core.data.semantickitti import SemanticKittiDataset

    reader = SemanticKittiDataset(synthetic_root, sequences=("00",))
    frames = [reader[i] for i in range(min(FRAMES_REPLAYED, len(reader)))]
    driver = NodeDriver("nclr_benchmark_driver", frame_messages(frames))
    deadline = time.monotonic() + timeout_s

    def spin_until(condition, limit_s: float) -> bool:
        return driver.spin_until(condition, min(limit_s, deadline - time.monotonic()))

    count = driver.count
    report: dict[str, Any] = {"errors": []}
    if not spin_until(driver.connected, timeout_s / 3):
        report["errors"].append("the node's subscriptions or diagnostics never appeared")
    else:
        # warm-up: one pair processed (model and first-call costs), backlog empty
        sent = 0
        while count("pairs_processed") == 0 and time.monotonic() < deadline:
            driver.publish(sent)
            sent += 1
            spin_until(lambda: count("pairs_processed") > 0, 1.0)
        t = time.monotonic()
        if not spin_until(lambda: driver.idle_since(t), timeout_s / 3):
            report["errors"].append("no warm-up pair was processed")
        base = {k: count(k) for k in ("pairs_received", "pairs_processed", "pairs_dropped")}
        total = int(round(seconds * rate_hz))
        t0 = time.monotonic()
        for i in range(total):
            spin_until(lambda: False, max(0.0, t0 + i / rate_hz - time.monotonic()))
            driver.publish(i)
        t_published = time.monotonic()
        if not spin_until(lambda: driver.idle_since(t_published), deadline - time.monotonic()):
            report["errors"].append("the node did not finish its backlog in time")
        t_done = driver.received_at
        delta = {k: count(k) - v for k, v in base.items()}
        info, image, cloud = driver.messages[0]
        report.update({
            "pairs_published": total,
            "pairs_received": delta["pairs_received"],
            "pairs_processed": delta["pairs_processed"],
            "pairs_dropped": delta["pairs_dropped"],
            "processed_share": delta["pairs_processed"] / total,
            "processed_pairs_per_s": delta["pairs_processed"] / (t_done - t0),
            "publish_s": t_published - t0,
            "last_latency_s": float(driver.values.get("last_latency_s", "nan")),
            "image_wh": [int(image.width), int(image.height)],
            "points_per_cloud": int(cloud.width * cloud.height),
        })
    driver.close()
    return report


# ---------------------------------------------------------------- benchmark
def unavailable_reason() -> str | None:
    """Why the node cannot be benchmarked here, or None."""
    if importlib.util.find_spec("nclr_ros.calibration_node") is None:
        return "node not available: nclr_ros.calibration_node is missing"
    for module in ("rclpy", "rmw_fastrtps_cpp"):
        if importlib.util.find_spec(module) is None:
            return f"node not available: {module} is not installed"
    return None


def _checkpoint(path: Path) -> Path:
    import torch

    from benchmarks.inputs import CPU_CONFIG, config
    from nclr_core.checkpoint import save_checkpoint
    from nclr_core.config import to_dict
    from nclr_core.engine.trainer import build_model

    cfg = config(CPU_CONFIG)
    torch.manual_seed(0)
    model = build_model(cfg)
    # what the trainer saves: the weights and the resolved config
    save_checkpoint(path, model=model.state_dict(), config=to_dict(cfg))
    return path


CONFIGURATIONS = {
    "global": "CPU config, random weights, no prior",
    "global,guided,joint": "shipped model, prior 10 deg / 25 cm from the truth",
}


def _prior_parameters(synthetic_root: Path) -> dict[str, str]:
    """use_prior and the prior of the replayed drive: its truth moved 10 deg / 25 cm."""
    import numpy as np

    from nclr_core.data.semantickitti import SemanticKittiDataset
    from nclr_core.geometry.se3 import quaternion_xyzw_from_matrix
    from nclr_core.online.pose import prior_at_distance

    truth = SemanticKittiDataset(synthetic_root, sequences=("00",))[0]["T_cam_lidar"]
    prior = prior_at_distance(truth, 10.0, 0.25, np.random.default_rng(0))
    listed = lambda values: "[" + ", ".join(f"{float(v):.12e}" for v in values) + "]"  # noqa: E731
    return {"use_prior": "true", "prior_translation": listed(prior[:3, 3]),
            "prior_quaternion_xyzw": listed(quaternion_xyzw_from_matrix(prior[:3, :3]))}


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The node section, per configuration: {"skipped": reason} when the node or ROS is not
    available."""
    reason = unavailable_reason()
    if reason:
        return {"skipped": reason}
    stages = ["global"] if quick else list(CONFIGURATIONS)
    return {"runs": {name: _run(name, quick, synthetic_root) for name in stages}}


def _run(stages: str, quick: bool, synthetic_root: Path) -> dict[str, Any]:
    seconds = 3.0 if quick else 30.0
    timeout_s = 120.0 if quick else 240.0
    with tempfile.TemporaryDirectory() as tmp:
        params = {"stages": stages, "output_directory": str(Path(tmp) / "out"),
                  "save_on_shutdown": "false", "min_frames": "1",
                  "diagnostics_period_s": str(DIAGNOSTICS_PERIOD_S)}
        if stages == "global":
            params["model_path"] = str(_checkpoint(Path(tmp) / "cpu_config.pt"))
        else:  # the shipped model (model_path empty)
            params.update(_prior_parameters(synthetic_root))
        env = node_environment((201, 230))
        log_path = Path(tmp) / "node.log"
        with calibration_node(params, env, log_path, REPO, 30.0):
            driver = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "drive",
                 str(synthetic_root), str(seconds), str(INPUT_RATE_HZ), str(timeout_s)],
                env=env, capture_output=True, text=True, timeout=timeout_s + 60, cwd=REPO)
        if driver.returncode != 0:
            raise RuntimeError(f"node benchmark driver failed: {driver.stderr[-2000:]}\n"
                               f"node log: {log_path.read_text()[-2000:]}")
        report = json.loads(driver.stdout.splitlines()[-1])
        if report["errors"]:
            raise RuntimeError(f"node benchmark: {'; '.join(report['errors'])}\n"
                               f"node log: {log_path.read_text()[-2000:]}")
    report.pop("errors")
    return {"input_rate_hz": INPUT_RATE_HZ, "seconds": seconds,
            "model": CONFIGURATIONS[stages], **report}


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "drive":
        raise SystemExit(__doc__.splitlines()[-1].strip())
    print(json.dumps(drive(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]),
                           float(sys.argv[5]))), flush=True)
