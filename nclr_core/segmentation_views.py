"""Pictures of segmentation results: labels over the camera image, a bird's-eye view of
prediction beside ground truth, and the confusion matrix (PNG files, written atomically)."""
from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from nclr_core.atomic_write import atomic_path, write_bytes_atomic
from nclr_core.geometry.projection import project_points


def label_overlay(image: np.ndarray, points: np.ndarray, labels: np.ndarray,
                  colours: np.ndarray, T_cam_lidar: np.ndarray, K: np.ndarray,
                  radius: int = 1) -> np.ndarray:
    """RGB (H, W, 3) copy of `image` with the points (N, >=3, LiDAR frame) that project into
    it under T_cam_lidar and K drawn in their class colour (`colours[labels]`, colours
    (C, 3) uint8 RGB), farthest first so that near points stay on top."""
    projection = project_points(points, T_cam_lidar, K, image.shape[:2])
    out = image.copy()
    hit = np.flatnonzero(projection.in_image)
    if hit.size == 0:
        return out
    hit = hit[np.argsort(-projection.depth[hit], kind="stable")]
    uv = projection.pixels()[hit]
    rgb = colours[labels[hit]]
    h, w = out.shape[:2]
    for du in range(-radius, radius + 1):
        for dv in range(-radius, radius + 1):
            out[np.clip(uv[:, 1] + dv, 0, h - 1), np.clip(uv[:, 0] + du, 0, w - 1)] = rgb
    return out


def save_png_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} image as PNG")
    write_bytes_atomic(path, png.tobytes())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


def plot_bird_eye(path: str | os.PathLike, points: np.ndarray, predicted: np.ndarray,
                  truth: np.ndarray, colours: np.ndarray, names: Sequence[str],
                  ignore_index: int, title: str, extent_m: float = 40.0) -> None:
    """Bird's-eye view (x forward, y left, LiDAR frame) of one scan: predicted classes
    beside the ground truth (ignored points grey), with a legend of the classes present."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    grey = np.array([0.6, 0.6, 0.6])
    for ax, labels, what in ((axes[0], predicted, "prediction"), (axes[1], truth, "ground truth")):
        ignored = labels == ignore_index
        colour = np.tile(grey, (len(labels), 1))
        colour[~ignored] = colours[labels[~ignored]] / 255.0
        ax.scatter(points[:, 0], points[:, 1], s=0.3, c=colour, rasterized=True)
        ax.set_xlim(-extent_m, extent_m)
        ax.set_ylim(-extent_m, extent_m)
        ax.set_aspect("equal")
        ax.set_xlabel("x forward (m)")
        ax.set_ylabel("y left (m)")
        ax.set_title(f"{title}: {what}")
    present = np.unique(np.concatenate([predicted, truth[truth != ignore_index]]))
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[c] / 255.0, label=names[c])
               for c in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, path, 100)
    plt.close(fig)


def plot_confusion_matrix(path: str | os.PathLike, matrix: np.ndarray,
                          names: Sequence[str], title: str) -> None:
    """The (K, K) confusion matrix (rows ground truth, columns prediction), each row
    normalised to the share of its class's points (classes without points left empty),
    with the share printed in the cells of 1 % or more."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    k = len(names)
    fig, ax = plt.subplots(figsize=(0.5 * k + 3, 0.5 * k + 2))
    image = ax.imshow(share, vmin=0.0, vmax=1.0, cmap="Blues")
    for i, j in zip(*np.nonzero(np.nan_to_num(share) >= 0.01), strict=True):
        ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=6,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the class's points")
    fig.tight_layout()
    _save(fig, path, 110)
    plt.close(fig)
