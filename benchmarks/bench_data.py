"""Data loading: each reader's frames per second, raw and through the training pair pipeline,
and the speed of synthetic generation (`benchmarks/bench_synthetic.py`).

Readers: `SemanticKittiDataset` on the temporary synthetic set; `KittiObjectDataset` and
`NuScenesDataset` on the real samples beside the repository (`../shared/data/real`) when
present. The nuScenes sample is one keyframe given as files + `calib.json`; its v1.0 tables
(CAM_FRONT only, ego poses at the origin) are written to a temporary folder first. "pairs"
runs the CPU configuration's training transform (`pair_transform(train=True)`: crop, resize,
pair sampling with its ground truth, normalisation) after the reader; single process.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import bench_synthetic
from benchmarks.inputs import CPU_CONFIG, REAL_DATA, SEQUENCE, config
from benchmarks.timing import measure
from nclr_core.data.datasets import PairDataset, pair_transform
from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.nuscenes import LIDAR_CHANNEL, NuScenesDataset
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_core.geometry.se3 import quaternion_xyzw_from_matrix

NUSCENES_CAMERA = "CAM_FRONT"


def _record(T: np.ndarray, **extra: Any) -> dict[str, Any]:
    """nuScenes pose record: translation + rotation quaternion (w, x, y, z)."""
    q_wxyz = np.roll(quaternion_xyzw_from_matrix(T[:3, :3]), 1)
    return {"translation": T[:3, 3].tolist(), "rotation": q_wxyz.tolist(), **extra}


def _stamp_us(filename: str) -> int:
    return int(filename.split("__")[-1].split(".")[0])


def nuscenes_tables(keyframe: Path, root: Path) -> Path:
    """v1.0-mini tables under `root` for the keyframe folder (files + calib.json)."""
    calib = json.loads((keyframe / "calib.json").read_text())
    lidar = sorted(keyframe.glob(f"*__{LIDAR_CHANNEL}__*.pcd.bin"))
    if len(lidar) != 1 or NUSCENES_CAMERA not in calib.get("cams", {}):
        raise FileNotFoundError(f"{keyframe}: expected one {LIDAR_CHANNEL} scan and "
                                f"{NUSCENES_CAMERA} in calib.json")
    camera = calib["cams"][NUSCENES_CAMERA]
    identity = np.eye(4)
    tables: dict[str, list[dict[str, Any]]] = {"sensor": [], "calibrated_sensor": [],
                                               "ego_pose": [], "sample_data": []}
    for channel, filename, T_ego_sensor, K in (
            (LIDAR_CHANNEL, lidar[0].name, np.array(calib["lidar2ego"]), []),
            (NUSCENES_CAMERA, camera["img"], np.array(camera["cam2ego"]), camera["K"])):
        (root / "samples" / channel).mkdir(parents=True)
        (root / "samples" / channel / filename).symlink_to(keyframe / filename)
        tables["sensor"].append({"token": f"s_{channel}", "channel": channel})
        tables["calibrated_sensor"].append(_record(
            T_ego_sensor, token=f"cs_{channel}", sensor_token=f"s_{channel}",
            camera_intrinsic=K))
        tables["ego_pose"].append(_record(identity, token=f"ep_{channel}",
                                          timestamp=_stamp_us(filename)))
        tables["sample_data"].append({
            "token": f"sd_{channel}", "sample_token": "sample", "ego_pose_token": f"ep_{channel}",
            "calibrated_sensor_token": f"cs_{channel}", "timestamp": _stamp_us(filename),
            "is_key_frame": True, "filename": f"samples/{channel}/{filename}"})
    tables["sample"] = [{"token": "sample", "timestamp": _stamp_us(lidar[0].name),
                         "scene_token": "scene"}]
    (root / "v1.0-mini").mkdir()
    for name, records in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(records))
    return root


def _throughput(reader: Any, repeats: int) -> dict[str, Any]:
    """Frames per second of a full pass, raw and through the CPU config's pair transform."""
    pairs = PairDataset(reader, pair_transform(config(CPU_CONFIG).data, train=True), seed=0)
    result: dict[str, Any] = {"frames": len(reader), "points_first_frame":
                              int(len(reader[0]["points"]))}
    for name, dataset in (("raw", reader), ("pairs", pairs)):
        timing = measure(lambda d=dataset: [d[i] for i in range(len(d))], repeats)
        result[f"{name}_frames_per_s"] = len(reader) / timing.median_s
    result["repeats"] = repeats
    return result


def _readers(synthetic_root: Path, tmp: Path) -> dict[str, Callable[[], Any] | str]:
    """Reader factories by name, or the reason a reader is skipped."""
    readers: dict[str, Callable[[], Any] | str] = {
        "semantickitti_synthetic": lambda: SemanticKittiDataset(synthetic_root,
                                                                sequences=(SEQUENCE,))}
    kitti = REAL_DATA / "kitti_object"
    readers["kitti_object_real"] = (
        (lambda: KittiObjectDataset(kitti, "training")) if kitti.is_dir()
        else f"real KITTI sample not found at {kitti}")
    keyframe = REAL_DATA / "nuscenes_keyframe"
    readers["nuscenes_real"] = (
        (lambda: NuScenesDataset(nuscenes_tables(keyframe, tmp / "nuscenes"),
                                 camera=NUSCENES_CAMERA)) if keyframe.is_dir()
        else f"real nuScenes sample not found at {keyframe}")
    return readers


def synthetic_generation(quick: bool, seed: int = 0) -> dict[str, Any]:
    """`bench_synthetic.run` at full resolution, without its command/machine (run.py's)."""
    args = argparse.Namespace(width=1242, height=375, beams=64, frames=1 if quick else 3,
                              repeats=1 if quick else 3, seed=seed)
    result = bench_synthetic.run(args)
    for key in ("command", "machine"):
        result.pop(key, None)
    result["cpus_available"] = len(os.sched_getaffinity(0))
    return result


def run(quick: bool, synthetic_root: Path) -> dict[str, Any]:
    """The data section."""
    repeats = 1 if quick else 3
    result: dict[str, Any] = {"readers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in _readers(synthetic_root, Path(tmp)).items():
            result["readers"][name] = ({"skipped": factory} if isinstance(factory, str)
                                       else _throughput(factory(), repeats))
    result["synthetic_generation"] = synthetic_generation(quick)
    return result
