import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nclr_core.checkpoint import save_checkpoint
from nclr_core.config import ConfigError, load_config, to_dict
from nclr_core.data.config import DataConfig
from nclr_core.data.semantickitti import SEMANTIC_KITTI_CLASSES
from nclr_core.data.synthetic.sequence import SyntheticConfig
from nclr_core.data.synthetic.writer import write_dataset
from nclr_core.engine.finetune import build_model
from nclr_core.engine.finetune_config import FinetuneConfig
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.models.calibration_net import CalibrationNet
from nclr_core.models.point_encoder import PointEncoder
from nclr_core.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "training"))
import export_backbone  # noqa: E402
import finetune_seg  # noqa: E402

CONFIG = REPO / "training" / "configs" / "finetune_synthetic_cpu.yaml"
RANGE = [-40.0, -40.0, -3.0, 40.0, 40.0, 1.0]
TINY_BACKBONE = {"point_variant": "minkunet18", "point_base_channels": 4, "channels": 8,
                 "voxel_size": 0.5}
TINY_SETS = ["model.point_base_channels=4", "model.channels=8", "model.voxel_size=0.5",
             "data.max_points=1500", "train.max_steps=2", "train.batch_size=2",
             "data.train_split=['00']", "data.val_split=['01']", "data.val_max_frames=1",
             "train.log_every=1"]
METRIC_KEYS = {"miou", "per_class_iou", "label_fraction", "seed", "init", "num_labelled_frames",
               "pq", "sq", "rq", "pq_things", "pq_stuff", "per_class_pq"}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, 2, 2, seed=0, config=SyntheticConfig(width=160, height=64, beams=16))
    return root


@pytest.fixture(scope="module")
def pretrain_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint in the trainer's layout: CalibrationNet state dict + resolved config."""
    torch.manual_seed(123)
    model_kwargs = {**TINY_BACKBONE, "fpn_channels": 16, "fusion_d_model": 16,
                    "fusion_heads": 2, "fusion_layers": 1, "fusion_keypoints": 16}
    net = CalibrationNet(**model_kwargs, point_range=RANGE)
    cfg = PretrainConfig(model=model_kwargs, data=DataConfig(point_range=tuple(RANGE)))
    path = tmp_path_factory.mktemp("pretrain") / "best.pt"
    save_checkpoint(path, model=net.state_dict(), config=to_dict(cfg), step=7)
    return path


def _run(root: Path, out: Path, init: str, *sets: str, fraction: float = 0.5) -> int:
    args = ["--data", str(root), "--label-fraction", str(fraction), "--init", init,
            "--seed", "3", "--out", str(out), "--config", str(CONFIG)]
    for s in [*TINY_SETS, *sets]:
        args += ["--set", s]
    return finetune_seg.main(args)


def test_ci_sized_run_writes_every_metric_and_a_usable_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "run"
    assert _run(synthetic_root, out, "scratch") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["label_fraction"] == 0.5 and metrics["seed"] == 3
    assert metrics["init"] == "scratch" and metrics["num_labelled_frames"] == 1
    assert metrics["steps"] == 2 and 0.0 <= metrics["miou"] <= 1.0
    assert list(metrics["per_class_iou"]) == list(SEMANTIC_KITTI_CLASSES)
    values = [v for v in metrics["per_class_iou"].values() if v is not None]
    assert values and all(0.0 <= v <= 1.0 for v in values)
    assert None in metrics["per_class_iou"].values()  # classes absent from both: null
    assert 0.0 <= metrics["pq"] <= 1.0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["init"] == "scratch" and saved["label_fraction"] == 0.5
    assert saved["data"]["root"] == str(synthetic_root)
    assert "step 2" in (out / "train.log").read_text()
    subset = json.loads((out / "label_subset.json").read_text())
    assert subset["level"] == "scene" and len(subset["frames"]) == 1

    segmenter = Segmenter.from_checkpoint(out / "checkpoints" / "last.pt", "cpu")
    points = np.random.default_rng(0).uniform(-30, 30, (500, 4)).astype(np.float32)
    points[:, 2] = np.clip(points[:, 2], -2, 0.5)
    labels, confidence = segmenter.segment(points)
    assert labels.dtype == np.uint16 and labels.shape == (500,) and labels.max() < 19
    assert confidence.dtype == np.float32 and np.all((confidence > 0) & (confidence <= 1))
    with pytest.raises(ValueError, match="NaN"):
        segmenter.segment(np.full((3, 4), np.nan, dtype=np.float32))


def test_init_checkpoint_really_loads_the_pretrained_encoder(synthetic_root, pretrain_checkpoint,
                                                             tmp_path):
    pretrained = torch.load(pretrain_checkpoint, weights_only=True)["model"]
    reference = pretrained["point_encoder.stem.conv.weight"]
    # lr 0: training leaves every parameter as initialised, so the run's checkpoint shows
    # exactly which weights the fine-tuning started from.
    out = tmp_path / "nclr"
    assert _run(synthetic_root, out, str(pretrain_checkpoint), "train.lr=0.0",
                "model.instance_head=false", "train.max_steps=1") == 0
    tuned = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.testing.assert_close(tuned["backbone.stem.conv.weight"], reference)
    torch.testing.assert_close(tuned["backbone.point_mlp.3.bias"],
                               pretrained["point_encoder.point_mlp.3.bias"])
    assert json.loads((out / "metrics.json").read_text())["init"] == str(pretrain_checkpoint)
    assert "pq" not in json.loads((out / "metrics.json").read_text())

    scratch = load_config(FinetuneConfig, CONFIG, TINY_SETS)
    assert not torch.equal(build_model(scratch).backbone.stem.conv.weight, reference)


def test_init_with_another_architecture_is_refused(pretrain_checkpoint):
    cfg = load_config(FinetuneConfig, CONFIG, [*TINY_SETS, "model.channels=16"])
    cfg.init = str(pretrain_checkpoint)
    with pytest.raises(ConfigError, match="out_channels: config 16 vs checkpoint 8"):
        build_model(cfg)


def test_export_backbone_loads_strictly_into_a_fresh_point_encoder(pretrain_checkpoint,
                                                                   tmp_path):
    out = tmp_path / "backbone.pt"
    assert export_backbone.main(["--checkpoint", str(pretrain_checkpoint), "--out",
                                 str(out)]) == 0
    payload = torch.load(out, weights_only=True)
    encoder = PointEncoder(**{**payload["backbone_kwargs"],
                              "point_range": tuple(payload["backbone_kwargs"]["point_range"])})
    encoder.load_state_dict(payload["backbone"], strict=True)
    pretrained = torch.load(pretrain_checkpoint, weights_only=True)["model"]
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, pretrained[f"point_encoder.{key}"])
    assert payload["backbone_kwargs"]["point_range"] == RANGE
    # the exported file serves as --init too
    cfg = load_config(FinetuneConfig, CONFIG, TINY_SETS)
    cfg.init = str(out)
    torch.testing.assert_close(build_model(cfg).backbone.stem.conv.weight,
                               pretrained["point_encoder.stem.conv.weight"])


def test_cli_reports_bad_input_clearly(synthetic_root, tmp_path, capsys):
    assert _run(synthetic_root, tmp_path / "a", str(tmp_path / "missing.pt")) == 2
    assert "--init checkpoint not found" in capsys.readouterr().err
    assert _run(synthetic_root, tmp_path / "b", "scratch", fraction=0.0) == 2
    assert "label fraction must be in (0, 1]" in capsys.readouterr().err
    bad = tmp_path / "not_a_checkpoint.pt"
    bad.write_text("x")
    assert export_backbone.main(["--checkpoint", str(bad), "--out",
                                 str(tmp_path / "o.pt")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_a_few_steps_fit_one_scan(synthetic_root):
    """Labels reach the loss aligned with their points: after 8 AdamW steps on one scan the
    cross-entropy is below the entropy of the scan's class frequencies, which is the best a
    model can do when labels do not go with their points."""
    from nclr_core.data.segmentation_dataset import (
        SegmentationDataset,
        collate_points,
        segmentation_transform,
    )
    from nclr_core.data.semantickitti import SemanticKittiDataset

    cfg = load_config(FinetuneConfig, CONFIG, TINY_SETS)
    torch.manual_seed(0)
    model = build_model(cfg)
    transform = segmentation_transform(cfg.data.point_range, 1500, None)
    dataset = SegmentationDataset(SemanticKittiDataset(synthetic_root, ("00",)), [0],
                                  transform, seed=0)
    batch = collate_points([dataset[0]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        out = model(batch["points"], batch["offset"])
        loss = model.loss(out, batch["points"], batch["offset"], batch["labels"],
                          batch["instances"])["loss_sem"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    freq = torch.bincount(batch["labels"]).double() / len(batch["labels"])
    entropy = float(-(freq[freq > 0] * freq[freq > 0].log()).sum())
    assert losses[-1] < 0.8 * entropy < losses[0], (losses, entropy)


def test_without_out_a_run_gets_its_own_timestamped_run_folder(synthetic_root, tmp_path):
    args = ["--data", str(synthetic_root), "--label-fraction", "0.5", "--init", "scratch",
            "--seed", "3", "--config", str(CONFIG)]
    for item in [*TINY_SETS, f"output_root={tmp_path / 'runs'}", "name=ft_tiny"]:
        args += ["--set", item]
    assert finetune_seg.main(args) == 0
    (run,) = (tmp_path / "runs" / "ft_tiny").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", run.name)
    assert {p.name for p in run.iterdir()} == {"config.yaml", "train.log", "tb", "checkpoints",
                                               "label_subset.json", "metrics.json"}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert yaml.safe_load((run / "config.yaml").read_text())["name"] == "ft_tiny"


def test_schedule_follows_the_label_fraction_scaled_by_one_factor():
    from nclr_core.engine.finetune import plan_schedule

    def plan(fraction: float, *sets: str, batches: int = 12) -> dict:
        cfg = load_config(FinetuneConfig, CONFIG, list(sets))
        cfg.label_fraction = fraction
        return plan_schedule(cfg, batches)

    # the paper's 500 / 100 / 30 epochs, times the config's epoch_scale 0.5
    assert plan(0.01, batches=1)["total_steps"] == 250
    ten = plan(0.1)
    assert (ten["table_epochs"], ten["epochs"], ten["total_steps"]) == (100, 50, 600)
    assert ten["validate_every"] == 60 and ten["stop_step"] == 600
    assert plan(1.0, "train.epoch_scale=1", batches=120)["total_steps"] == 3600
    assert plan(0.5, "train.epoch_scale=0.001", batches=3)["epochs"] == 1  # at least one
    explicit = plan(0.1, "train.epochs=7")
    assert explicit["source"] == "train.epochs" and explicit["total_steps"] == 84
    fixed = plan(0.1, "train.steps=120", "train.max_steps=50")
    assert (fixed["total_steps"], fixed["stop_step"]) == (120, 50)
    with pytest.raises(ConfigError, match=r"label fraction 0.05 is not in "
                                          r"train.epochs_by_fraction \(0.001, 0.01, 0.1"):
        plan(0.05)
    with pytest.raises(ConfigError, match="train.patience must be at least 1"):
        plan(0.1, "train.patience=0")


def test_early_stopping_keeps_the_best_and_counts_validations_without_gain():
    from nclr_core.engine.finetune import EarlyStopping

    stopper = EarlyStopping(patience=2, min_improvement=0.01)
    assert stopper.update(10, 0.30) and not stopper.exhausted
    assert not stopper.update(20, 0.305)  # below min_improvement: no gain
    assert stopper.update(30, 0.32) and stopper.best_step == 30
    assert not stopper.update(40, None) and not stopper.exhausted  # no mIoU: no gain
    assert not stopper.update(50, 0.2) and stopper.exhausted
    assert (stopper.best, stopper.best_step) == (0.32, 30)
    assert not EarlyStopping(None, 0.0).exhausted


def test_run_keeps_the_best_validation_checkpoint_and_reports_the_test_split(
        synthetic_root, tmp_path):
    """A run that counts no gain as an improvement (min_improvement 1) stops early after
    `patience` validations past its first, keeps step 1's weights and evaluates them on the
    test split."""
    out = tmp_path / "run"
    assert _run(synthetic_root, out, "scratch", "train.max_steps=null", "train.steps=12",
                "train.validations=12", "train.patience=2", "train.min_improvement=1.0",
                "model.instance_head=false", "data.test_split=['00']",
                "data.test_max_frames=1", fraction=1.0) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    schedule, validation = metrics["schedule"], metrics["validation"]
    assert schedule["total_steps"] == 12 and schedule["validate_every"] == 1
    assert schedule["stopped_at_step"] == metrics["steps"] == 3
    assert schedule["stop_reason"].startswith("early stop")
    assert [h["step"] for h in validation["history"]] == [1, 2, 3]
    assert validation["best_step"] == metrics["checkpoint_step"] == 1
    assert metrics["evaluated_on"] == {"root": str(synthetic_root), "split": ["00"],
                                       "num_frames": 1, "set": "test"}
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert best["step"] == 1 and best["val_miou"] == validation["history"][0]["miou"]
    assert len(metrics["confusion_matrix"]) == 19
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["num_points"] > 0
