"""Write synthetic sequences in the SemanticKITTI / KITTI odometry layout, plus previews.

    DIR/sequences/NN/velodyne/XXXXXX.bin   float32 (N, 4) x y z intensity, LiDAR frame
    DIR/sequences/NN/labels/XXXXXX.label   uint32 (N,): raw class id (low 16 bits), instance
    DIR/sequences/NN/image_2/XXXXXX.png    RGB camera 2
    DIR/sequences/NN/calib.txt             P0..P3 (3 x 4, rectified), Tr (velodyne -> cam 0),
                                           D2 (k1 k2 p1 p2 k3, plumb_bob) when camera 2 has a lens
    DIR/sequences/NN/poses.txt             T_world_cam0 (3 x 4) per frame, world = first cam 0
    DIR/sequences/NN/times.txt             seconds per frame
    DIR/preview/NN_overlay.png, NN_bev.png (optional)
    DIR/metrics.json                       what was generated (settings, point and class counts)

Camera 2 is the rendered camera, so `T_cam2_lidar = [I | K^-1 P2[:, 3]] . Tr` is the ground
truth `T_cam_lidar`. With domain randomisation its image is the raw image of a lens with
distortion D2 (as KITTI raw's calib_cam_to_cam.txt D_02). Every file is written atomically;
the same seed gives identical bytes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from nclr_core.atomic_write import atomic_path, write_bytes_atomic, write_text_atomic
from nclr_core.data.synthetic.sequence import SyntheticConfig, SyntheticFrame, SyntheticSequence
from nclr_core.geometry.projection import project_points_with_camera

LOG = logging.getLogger(__name__)

# Offsets b_N (metres, camera x) of the rectified cameras: p_camN = p_cam0 + b_N (KITTI rig:
# camera 1 is 0.54 m right of camera 0, camera 2 0.06 m left, camera 3 0.47 m right).
CAMERA_OFFSETS_X: tuple[float, float, float, float] = (0.0, -0.54, 0.06, -0.47)
RENDERED_CAMERA = 2


def _translation(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


def _row(values: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(values, dtype=np.float64).ravel())


def calib_text(K: np.ndarray, T_cam_lidar: np.ndarray,
               distortion: np.ndarray | None = None) -> str:
    """KITTI odometry calib.txt for intrinsics K (3, 3) and camera-2 extrinsics (4, 4); with
    `distortion` (5,) also camera 2's plumb_bob coefficients as `D2: k1 k2 p1 p2 k3`."""
    lines = []
    for n, bx in enumerate(CAMERA_OFFSETS_X):
        P = K @ np.hstack([np.eye(3), np.array([[bx], [0.0], [0.0]])])
        lines.append(f"P{n}: {_row(P)}")
    T_cam0_lidar = _translation(-CAMERA_OFFSETS_X[RENDERED_CAMERA]) @ T_cam_lidar
    lines.append(f"Tr: {_row(T_cam0_lidar[:3])}")
    if distortion is not None:
        lines.append(f"D{RENDERED_CAMERA}: {_row(distortion)}")
    return "\n".join(lines) + "\n"


def label_words(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """SemanticKITTI label words uint32 (N,) from raw class ids and instance ids (N,)."""
    semantic, instance = np.asarray(semantic), np.asarray(instance)
    if semantic.size and (semantic.min() < 0 or semantic.max() > 0xFFFF):
        raise ValueError("semantic ids must fit in 16 bits")
    if instance.size and (instance.min() < 0 or instance.max() > 0xFFFF):
        raise ValueError("instance ids must fit in 16 bits")
    return (instance.astype(np.uint32) << 16) | semantic.astype(np.uint32)


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_frame(seq_dir: Path, frame: SyntheticFrame) -> None:
    """Write one frame's scan, labels and image under `seq_dir`."""
    stem = f"{frame.index:06d}"
    write_bytes_atomic(seq_dir / "velodyne" / f"{stem}.bin", frame.scan.points.tobytes())
    words = label_words(frame.scan.semantic, frame.scan.instance)
    write_bytes_atomic(seq_dir / "labels" / f"{stem}.label", words.tobytes())
    write_bytes_atomic(seq_dir / "image_2" / f"{stem}.png", _encode_png(frame.render.image))


def overlay_image(sequence: SyntheticSequence, frame: SyntheticFrame) -> np.ndarray:
    """The frame's image (H, W, 3) RGB with its LiDAR points drawn on it, coloured by depth
    (near blue to far red), projected with the ground-truth extrinsics (and the lens)."""
    image = frame.render.image.copy()
    cam = sequence.camera
    proj = project_points_with_camera(frame.scan.points, sequence.T_cam_lidar, cam.model)
    sel = np.flatnonzero(proj.in_image)
    sel = sel[np.argsort(-proj.depth[sel], kind="stable")]
    depth = proj.depth[sel]
    level = np.clip(255.0 * np.log(depth / 2.0) / np.log(60.0 / 2.0), 0, 255).astype(np.uint8)
    colors = cv2.applyColorMap(level[:, None], cv2.COLORMAP_JET)[:, 0, ::-1]
    radius = max(1, round(cam.width / 1242))
    for (u, v), c in zip(proj.pixels()[sel], colors, strict=True):
        cv2.circle(image, (int(u), int(v)), radius, tuple(int(x) for x in c), -1)
    return image


def _write_bev(path: Path, sequence: SyntheticSequence, frame: SyntheticFrame,
               T_lidar0_lidar: list[np.ndarray]) -> None:
    """Bird's-eye plot of a scan (coloured by class) with the ego path and camera view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, sem = frame.scan.points, frame.scan.semantic
    fig, ax = plt.subplots(figsize=(7, 7), dpi=100)
    classes = np.unique(sem)
    cmap = plt.get_cmap("tab20")
    for k, cls in enumerate(classes):
        m = sem == cls
        ax.scatter(pts[m, 0], pts[m, 1], s=0.2, color=cmap(k % 20), label=str(cls),
                   rasterized=True)
    path_xy = np.array([T[:2, 3] for T in T_lidar0_lidar])
    ax.plot(path_xy[:, 0], path_xy[:, 1], "k-", lw=1.5, label="ego path")
    cam = sequence.camera
    T_lidar_cam = np.linalg.inv(sequence.T_cam_lidar)
    for u in (0.0, cam.width - 1.0):
        ray = T_lidar_cam[:3, :3] @ (np.linalg.inv(cam.K) @ np.array([u, cam.height / 2, 1.0]))
        end = T_lidar_cam[:3, 3] + 40.0 * ray / np.linalg.norm(ray[:2])
        ax.plot([T_lidar_cam[0, 3], end[0]], [T_lidar_cam[1, 3], end[1]], "m--", lw=1)
    ax.set_xlim(-40, 60)
    ax.set_ylim(-50, 50)
    ax.set_aspect("equal")
    ax.set_xlabel("x forward (m)")
    ax.set_ylabel("y left (m)")
    ax.set_title(f"sequence {sequence.index:02d}, frame {frame.index}: raw class ids")
    ax.legend(loc="upper right", fontsize=6, markerscale=10, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def write_sequence(
    root: str | Path, sequence: SyntheticSequence, preview: bool = False
) -> dict[str, Any]:
    """Generate and write all frames of `sequence` under `root`; returns its statistics."""
    root = Path(root)
    name = f"{sequence.index:02d}"
    seq_dir = root / "sequences" / name
    T_cam0_lidar = _translation(-CAMERA_OFFSETS_X[RENDERED_CAMERA]) @ sequence.T_cam_lidar
    T_lidar_cam0 = np.linalg.inv(T_cam0_lidar)
    poses, stamps, lidar_poses = [], [], []
    histogram: dict[int, int] = {}
    num_points = []
    first = None
    for i in tqdm(range(sequence.num_frames), desc=f"sequence {name}", leave=False):
        frame = sequence.frame(i)
        write_frame(seq_dir, frame)
        poses.append(frame.T_world_lidar @ T_lidar_cam0)
        lidar_poses.append(frame.T_world_lidar)
        stamps.append(frame.stamp)
        num_points.append(int(frame.scan.points.shape[0]))
        ids, counts = np.unique(frame.scan.semantic, return_counts=True)
        for cls, n in zip(ids.tolist(), counts.tolist(), strict=True):
            histogram[cls] = histogram.get(cls, 0) + n
        if i == 0:
            first = frame
    T_cam0_world = np.linalg.inv(poses[0])
    write_text_atomic(seq_dir / "calib.txt", calib_text(sequence.K, sequence.T_cam_lidar,
                                                        sequence.camera.distortion))
    write_text_atomic(
        seq_dir / "poses.txt", "".join(_row((T_cam0_world @ P)[:3]) + "\n" for P in poses)
    )
    write_text_atomic(seq_dir / "times.txt", "".join(f"{s:.6e}\n" for s in stamps))
    if preview:
        preview_dir = root / "preview"
        write_bytes_atomic(preview_dir / f"{name}_overlay.png",
                           _encode_png(overlay_image(sequence, first)))
        T_lidar0_world = np.linalg.inv(lidar_poses[0])
        _write_bev(preview_dir / f"{name}_bev.png", sequence, first,
                   [T_lidar0_world @ T for T in lidar_poses])
    LOG.info("wrote sequence %s: %d frames to %s", name, sequence.num_frames, seq_dir)
    stats = {
        "frames": sequence.num_frames,
        "points_per_frame_mean": float(np.mean(num_points)),
        "class_histogram": {str(k): v for k, v in sorted(histogram.items())},
        "T_cam_lidar": sequence.T_cam_lidar.tolist(),
        "ego_speed_mps": sequence.scene.ego_speed,
    }
    if sequence.look is not None:
        stats["look"] = look_summary(sequence)
    return stats


def look_summary(sequence: SyntheticSequence) -> dict[str, Any]:
    """What domain randomisation drew for `sequence` (metrics.json), JSON-ready."""
    look = sequence.look
    camera, lidar = look.camera, look.lidar
    return {
        "auto_exposure_level": camera.exposure_level,
        "response_gamma": camera.response_gamma,
        "white_balance": camera.white_balance.tolist(),
        "shadow_strength": camera.shadow_strength,
        "read_noise": camera.read_noise,
        "shot_noise": camera.shot_noise,
        "blur_sigma_px": camera.blur_sigma_px,
        "vignetting": camera.vignetting,
        "texture_contrast": camera.texture_contrast,
        "distortion_plumb_bob": look.distortion.tolist(),
        "sun_direction": look.sun_direction.tolist(),
        "lidar_beams": lidar.num_beams,
        "lidar_dropout": lidar.dropout,
        "lidar_dark_dropout": lidar.dark_dropout,
        "lidar_incidence_floor": lidar.incidence_floor,
        "lidar_intensity_gamma": lidar.intensity_gamma,
        "lidar_intensity_noise_std": lidar.intensity_noise_std,
    }


def _write_one_sequence(job: tuple) -> dict[str, Any]:
    out, seed, index, num_frames, config, preview = job
    return write_sequence(out, SyntheticSequence(seed, index, num_frames, config), preview)


def write_dataset(
    out: str | Path,
    num_sequences: int,
    num_frames: int,
    seed: int,
    config: SyntheticConfig | None = None,
    preview: bool = False,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Write sequences 00.. of the data set for `seed` under `out` and its metrics.json.

    `workers` > 1 generates that many sequences at once in separate processes (same bytes:
    each sequence depends only on `seed` and its index).

    An existing non-empty sequence folder raises `FileExistsError` (stale frames of an older,
    longer run would otherwise stay beside the new ones), unless `overwrite` deletes it first.
    """
    if num_sequences < 1 or num_sequences > 100:
        raise ValueError(f"num_sequences must be in 1..100, got {num_sequences}")
    config = config or SyntheticConfig()
    out = Path(out)
    for s in range(num_sequences):
        seq_dir = out / "sequences" / f"{s:02d}"
        if seq_dir.is_dir() and any(seq_dir.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{seq_dir}: sequence folder exists and is not empty "
                                      "(choose another output or overwrite it)")
            shutil.rmtree(seq_dir)
    jobs = [(out, seed, s, num_frames, config, preview) for s in range(num_sequences)]
    if workers > 1 and num_sequences > 1:
        # spawned, not forked: a fork of a process whose threads hold locks (torch, Embree,
        # DDS) can deadlock its child
        with ProcessPoolExecutor(max_workers=min(workers, num_sequences),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_write_one_sequence, jobs))
    else:
        results = [_write_one_sequence(job) for job in jobs]
    stats = {f"{s:02d}": result for s, result in enumerate(results)}
    settings = dataclasses.asdict(config)
    if not config.randomise.enabled:
        # without randomisation, the same bytes as before the option existed
        del settings["randomise"]
    metrics = {
        "generator": "nclr_core.data.synthetic",
        "seed": seed,
        "config": settings,
        "sequences": stats,
    }
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
