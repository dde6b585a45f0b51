"""training/demo.py: the end-to-end story on a tiny drive with a tiny checkpoint, and the
message when the shipped checkpoint is missing."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {
    "image_depth": 18, "fpn_channels": 16, "point_base_channels": 8, "voxel_size": 0.5,
    "point_range": [-40.0, -40.0, -3.0, 40.0, 40.0, 3.0], "channels": 16,
    "fusion_d_model": 32, "fusion_heads": 2, "fusion_layers": 1, "fusion_keypoints": 32,
    "max_match_points": 64, "min_match_points": 8, "min_match_cells": 16,
}
DATA = {"image_height": 64, "image_width": 96, "max_points": 2000,
        "point_range": TINY_MODEL["point_range"]}


def _demo():
    spec = importlib.util.spec_from_file_location("nclr_demo", REPO / "training" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_checkpoint_names_the_file_and_how_to_make_it(tmp_path, capsys):
    missing = tmp_path / "models" / "nclr_synthetic_cpu.pt"
    assert _demo().main(["--checkpoint", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert "training/pretrain.py --config training/configs/synthetic_cpu.yaml" in err
    assert "checkpoints/best.pt" in err
    assert not (tmp_path / "out").exists()


def test_demo_runs_live_end_to_end_and_ends_with_the_aggregate_error(tmp_path, capsys):
    from nclr_core.engine.checkpoint import save_checkpoint
    from nclr_core.models.calibration_net import CalibrationNet

    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, model=CalibrationNet(**TINY_MODEL).state_dict(),
                    config={"model": TINY_MODEL, "data": DATA})
    out = tmp_path / "demo"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--frames", "3",
            "--width", "320", "--height", "96", "--beams", "16", "--threads", "1"]
    assert _demo().main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("aggregated estimate")
    assert "per-frame estimates (live" in lines[0]
    assert len([line for line in lines if line[:5].strip().isdigit()]) == 3  # frame rows
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["mode"] == "live" and metrics["counts"]["processed"] == 3
    assert metrics["prior"]["rotation_deg"] == pytest.approx(10.0)
    assert any(f"report: {out / 'eval' / 'metrics.json'}" in line for line in lines)
    for path in metrics["overlay_images"]:
        assert (out / "eval" / path).is_file()
    assert (out / "bag" / "metadata.yaml").is_file()

    # a second run replaces the drive and the bag instead of refusing them
    assert _demo().main([*argv, "--offline", "--no-prior"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("aggregated estimate")
    assert json.loads((out / "eval" / "metrics.json").read_text())["prior"] is None
