"""training/demo.py: the end-to-end story on a tiny drive with a tiny checkpoint, and the
message when the shipped checkpoint is missing."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location("nclr_demo", REPO / "training" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_checkpoint_names_the_file_and_how_to_make_it(tmp_path, capsys):
    missing = tmp_path / "models" / "nclr_synthetic.pt"
    assert _demo().main(["--checkpoint", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert "training/pretrain.py --config training/configs/synthetic_cpu.yaml" in err
    assert "checkpoints/best.pt" in err
    assert not (tmp_path / "out").exists()


def test_demo_runs_live_end_to_end_and_ends_with_the_aggregate_error(
        tmp_path, capsys, save_tiny_calibration_checkpoint):
    checkpoint = save_tiny_calibration_checkpoint(tmp_path / "tiny.pt")
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
