"""export_model.py: a float16 inference checkpoint that the Calibrator loads."""
import subprocess
import sys
from pathlib import Path

import torch

from nclr_core.checkpoint import load_checkpoint, save_checkpoint
from nclr_core.config import load_config, to_dict
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.trainer import build_model
from nclr_core.inference import Calibrator

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.image_base_channels=8", "model.fpn_channels=8", "model.point_base_channels=8",
        "model.channels=8", "model.fusion_d_model=16", "model.fusion_heads=2",
        "model.fusion_keypoints=16", "data.image_height=64", "data.image_width=128"]


def test_export_drops_training_state_and_loads_in_the_calibrator(tmp_path):
    cfg = load_config(PretrainConfig, REPO / "training/configs/synthetic_cpu.yaml", TINY)
    model = build_model(cfg)
    source = tmp_path / "best.pt"
    save_checkpoint(source, model=model.state_dict(), config=to_dict(cfg), step=7,
                    optimizer={"state": {}}, metrics={"score": 0.5})
    out = tmp_path / "models" / "exported.pt"
    done = subprocess.run([sys.executable, str(REPO / "training/export_model.py"),
                           "--checkpoint", str(source), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    exported = load_checkpoint(out)
    assert "optimizer" not in exported and exported["step"] == 7
    assert exported["metrics"] == {"score": 0.5}
    import json

    import yaml
    assert yaml.safe_load(out.with_suffix(".config.yaml").read_text()) == to_dict(cfg)
    assert json.loads(out.with_suffix(".metrics.json").read_text()) == {
        "step": 7, "source": str(source), "validation": {"score": 0.5}}
    assert all(v.dtype == torch.float16 for v in exported["model"].values()
               if v.is_floating_point())
    calibrator = Calibrator.from_checkpoint(out)
    for name, value in calibrator.model.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, model.state_dict()[name].half().float())


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "training/export_model.py"),
                           "--checkpoint", str(tmp_path / "absent.pt"), "--out",
                           str(tmp_path / "x.pt")], capture_output=True, text=True)
    assert done.returncode == 2 and "not found" in done.stderr
