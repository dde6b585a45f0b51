"""Inputs shared by the benchmark sections: configs, a temporary synthetic data set, frames."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nclr_core.config import load_config
from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_core.data.synthetic.sequence import SyntheticConfig
from nclr_core.data.synthetic.writer import write_dataset
from nclr_core.engine.pretrain_config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"
CPU_CONFIG = REPO / "training" / "configs" / "synthetic_cpu.yaml"
FULL_CONFIG = REPO / "training" / "configs" / "semantickitti.yaml"
SEQUENCE = "00"
KITTI_FRAME = 1  # training/000001: a full 120k-point HDL-64E scan


def write_synthetic(root: Path, frames: int, seed: int = 0) -> Path:
    """Synthetic sequence 00 (KITTI-size camera, 64 beams) of `frames` frames under root."""
    write_dataset(root, 1, frames, seed, SyntheticConfig())
    return root


def config(path: Path, data_root: Path | None = None) -> PretrainConfig:
    """A pre-training config; with `data_root`, reading sequence 00 of that synthetic set."""
    overrides = []
    if data_root is not None:
        overrides = [f"data.root={data_root}", f'data.train_split=["{SEQUENCE}"]',
                     f'data.val_split=["{SEQUENCE}"]', "data.dataset=synthetic"]
    return load_config(PretrainConfig, path, overrides)


def kitti_size_frame(synthetic_root: Path) -> tuple[dict[str, Any], str]:
    """A full-size frame (1242 x 375, ~120k points) and where it comes from: the real KITTI
    sample beside the repository when present, else the first synthetic frame."""
    if (REAL_DATA / "kitti_object").is_dir():
        frame = KittiObjectDataset(REAL_DATA / "kitti_object", "training")[KITTI_FRAME]
        return frame, f"real KITTI object training frame {frame['frame_id']}"
    frame = SemanticKittiDataset(synthetic_root, sequences=(SEQUENCE,))[0]
    return frame, "synthetic frame 00/000000 (real KITTI sample absent)"
