"""evaluate_calibration.py on a tiny checkpoint and the tiny synthetic set: both regimes and
the cosine + hard baseline, every metrics.json key, the CSV and the recall PNG."""
import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from nclr_core.checkpoint import save_checkpoint
from nclr_core.config import load_config, to_dict
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.trainer import build_model

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "training" / "configs" / "synthetic_cpu.yaml"
TINY = [
    "data.image_height=96", "data.image_width=320", "data.max_points=3000",
    "model.fpn_channels=16", "model.point_base_channels=8", "model.voxel_size=0.5",
    "model.channels=16", "model.fusion_d_model=32", "model.fusion_heads=2",
    "model.fusion_keypoints=32", "model.max_match_points=64",
    "model.fine_matching=true", "model.fine_channels=8",
]
DENSE = ("dense_match_acc_1px", "dense_match_acc_3px", "dense_match_acc_5px",
         "dense_match_err_px_median", "dense_match_bias_px")
REQUIRED = ("rre_euler_deg_mean", "rre_euler_deg_median", "rre_geodesic_deg_mean", "rte_m_mean",
            "rte_m_median", "success_rate", "match_err_px_mean", "match_acc_5px",
            "point_overlap_iou", "image_overlap_iou", "num_frames", *DENSE)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch
    torch.manual_seed(0)
    cfg = load_config(PretrainConfig, CONFIG, TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model=build_model(cfg).state_dict(), config=to_dict(cfg), step=0)
    return path


def _main():
    spec = importlib.util.spec_from_file_location(
        "evaluate_calibration", REPO / "training" / "evaluate_calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_both_regimes_with_the_baseline_write_every_key(tiny_synthetic, tiny_checkpoint,
                                                        tmp_path):
    out = tmp_path / "eval"
    args = ["--checkpoint", str(tiny_checkpoint), "--data", str(tiny_synthetic),
            "--split", "01", "--out", str(out), "--max-frames", "2",
            "--baseline", "cosine_hard", "--seed", "3"]
    assert _main()(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"].startswith("python training/evaluate_calibration.py --checkpoint")
    assert metrics["checkpoint"] == str(tiny_checkpoint) and metrics["split"] == ["01"]
    sections = {"registration": metrics["registration"], "online": metrics["online"],
                "baseline registration": metrics["baseline_cosine_hard"]["registration"],
                "baseline online": metrics["baseline_cosine_hard"]["online"]}
    for name, section in sections.items():
        for key in REQUIRED:
            assert key in section, f"{name}: {key}"
        assert section["num_frames"] == 2, name
        assert 0.0 <= section["success_rate"] <= 1.0
        assert section["dense_match_points"] > 0, name
        assert 0.0 <= section["dense_match_acc_1px"] <= section["dense_match_acc_5px"] <= 1.0
        assert len(section["dense_match_bias_px"]) == 2
        assert len(section["recall_curves"]["recall_rte"]) > 2
    for section in (metrics["registration"], metrics["baseline_cosine_hard"]["registration"]):
        assert section["lta_check"]["num_pairs"] > 0
    # the baseline's W_f = I: with and without W_f coincide
    lta = metrics["baseline_cosine_hard"]["registration"]["lta_check"]
    assert lta["with_W_mean"] == pytest.approx(lta["without_W_mean"])
    online = metrics["online"]
    for key in ("num_calls", "accepted_rate", "estimate_rre_geodesic_deg_median",
                "estimate_rte_m_median", "estimate_rre_geodesic_deg_p90", "estimate_rte_m_p90",
                "worse_than_prior_rate", "better_than_prior_rotation_rate", "coverage_3sigma",
                "frame_accepted_rate"):
        assert key in online, key
    assert online["num_calls"] == 2 and 0.0 <= online["accepted_rate"] <= 1.0
    # each prior is exactly 10 deg and 25 cm from the truth (the defaults)
    assert online["prior_rre_geodesic_deg_median"] == pytest.approx(10.0)
    assert online["prior_rte_m_median"] == pytest.approx(0.25)
    assert set(online["stages"]) == {"global"}
    assert {"rre_geodesic_deg", "rte_m", "sigma_rot_deg", "sigma_trans_m"} <= set(
        online["aggregate"])

    with open(out / "frames.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # frames x regimes x methods, plus per call: the pipeline's and the global stage's
    assert len(rows) == 2 * 2 * 2 + 2 * 2 * 2
    assert {(r["method"], r["regime"]) for r in rows} == {
        (m, g) for m in ("nclr", "baseline_cosine_hard")
        for g in ("registration", "online", "online_call")}
    assert {r["sequence"] for r in rows if r["regime"] != "online_call"} == {"01"}
    # same frames and same priors for both methods
    priors = {(r["frame_id"], r["prior_rte_m"]) for r in rows if r["regime"] == "online"}
    assert len(priors) == 2
    assert (out / "recall_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_checkpoint_is_a_clear_error(tiny_synthetic, tmp_path, capsys):
    args = ["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(tiny_synthetic),
            "--split", "01", "--out", str(tmp_path / "eval"), "--regime", "online"]
    assert _main()(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_untrained_registration_only_feeds_make_results(tiny_synthetic, tiny_checkpoint,
                                                        tmp_path, monkeypatch):
    out = tmp_path / "untrained"
    args = ["--checkpoint", str(tiny_checkpoint), "--data", str(tiny_synthetic),
            "--split", "00", "--out", str(out), "--max-frames", "1", "--untrained",
            "--regime", "registration"]
    assert _main()(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"] == "untrained" and "online" not in metrics
    assert metrics["registration"]["num_frames"] == 1

    # the generator reads this file: a figure per column, the recorded command cited
    spec = importlib.util.spec_from_file_location("make_results",
                                                  REPO / "training" / "make_results.py")
    make_results = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = make_results
    spec.loader.exec_module(make_results)
    manifest = {"tables": [{"title": "t", "kind": "calibration", "rows": [
        {"name": "untrained", "metrics": str(out / "metrics.json"),
         "section": "registration"}]}]}
    text = make_results.render(manifest, "m.yaml", "cmd")
    row = next(line for line in text.splitlines() if line.startswith("| untrained"))
    assert "not run" not in row and row.count("|") == len(make_results.DEFAULT_COLUMNS) + 2
    assert metrics["command"] in text
