"""evaluate_segmentation.py on an exported (float16) segmentation checkpoint: metrics.json
with mIoU and PQ, the confusion-matrix PNG and the overlays; clear errors."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from nclr_core.checkpoint import load_checkpoint, save_checkpoint
from nclr_core.data.semantickitti import IGNORE_INDEX, SEMANTIC_KITTI_CLASSES, SemanticKittiDataset
from nclr_core.models.segmentation import SegmentationNet
from nclr_core.models.segmentation_checkpoint import SEGMENTATION_KIND
from nclr_core.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "training"))
import evaluate_segmentation  # noqa: E402
import export_model  # noqa: E402

RANGE = [-20.0, -20.0, -3.0, 20.0, 20.0, 3.0]
KWARGS = {"backbone": {"variant": "minkunet18", "in_channels": 4, "out_channels": 8,
                       "voxel_size": 0.5, "base_channels": 4, "point_range": RANGE},
          "num_classes": 19, "instance_head": True, "thing_classes": list(range(8)),
          "cluster_min_points": 5}


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    net = SegmentationNet(**KWARGS)
    save_checkpoint(path, kind=SEGMENTATION_KIND, model=net.state_dict(), model_kwargs=KWARGS,
                    class_names=list(SEMANTIC_KITTI_CLASSES), config={"eval": {}}, step=5,
                    optimizer={"state": {}}, val_miou=0.25)
    return path


def test_exported_checkpoint_is_evaluated_with_every_output(tiny_synthetic, tmp_path, capsys):
    source = _checkpoint(tmp_path / "best.pt")
    exported = tmp_path / "seg.pt"
    assert export_model.main(["--checkpoint", str(source), "--out", str(exported)]) == 0
    payload = load_checkpoint(exported)
    assert "optimizer" not in payload and payload["kind"] == SEGMENTATION_KIND
    assert payload["val_miou"] == 0.25 and payload["step"] == 5
    assert all(v.dtype == torch.float16 for v in payload["model"].values()
               if v.is_floating_point())
    segmenter = Segmenter.from_checkpoint(exported)
    reference = torch.load(source, weights_only=True)["model"]
    for name, value in segmenter.model.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, reference[name].half().float())

    out = tmp_path / "eval"
    assert evaluate_segmentation.main(["--checkpoint", str(exported), "--data",
                                       str(tiny_synthetic), "--split", "00", "01", "--out",
                                       str(out), "--overlays", "2"]) == 0
    assert "mIoU" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["pq"] <= 1.0
    assert {"sq", "rq", "pq_things", "pq_stuff", "per_class_pq"} <= set(metrics)
    assert list(metrics["per_class_iou"]) == list(SEMANTIC_KITTI_CLASSES)
    assert metrics["num_frames"] == 6 and metrics["split"] == ["00", "01"]
    assert metrics["checkpoint_step"] == 5 and metrics["command"].startswith(
        "python training/evaluate_segmentation.py --checkpoint")
    # every labelled point inside the point range is counted once, and no other
    reader = SemanticKittiDataset(tiny_synthetic, ("00", "01"))
    expected = 0
    for i in range(len(reader)):
        sample = reader[i]
        xyz = sample["points"][:, :3]
        inside = np.all((xyz >= RANGE[:3]) & (xyz <= RANGE[3:]), axis=1)
        expected += int((inside & (sample["labels"] != IGNORE_INDEX)).sum())
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.shape == (19, 19) and matrix.sum() == metrics["num_points"] == expected
    assert (out / "confusion_matrix.png").stat().st_size > 10_000
    assert len(metrics["overlays"]) == 4
    for path in metrics["overlays"]:
        assert (out / path).is_file() and (out / path).stat().st_size > 1000
    camera = next(p for p in metrics["overlays"] if p.endswith("_camera.png"))
    import cv2
    assert cv2.imread(str(out / camera)).shape == (2 * 96, 320, 3)  # prediction above truth


def test_bad_input_is_a_clear_error(tiny_synthetic, tmp_path, capsys):
    def run(*extra: str) -> str:
        assert evaluate_segmentation.main(["--data", str(tiny_synthetic), "--split", "00",
                                           "--out", str(tmp_path / "o"), *extra]) == 2
        return capsys.readouterr().err

    assert "checkpoint not found" in run("--checkpoint", str(tmp_path / "absent.pt"))
    checkpoint = _checkpoint(tmp_path / "best.pt")
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes:\n  - {id: 0, name: a, rgb: [0, 0, 0]}\n")
    assert "the checkpoint was trained on" in run("--checkpoint", str(checkpoint),
                                                  "--classes-file", str(classes))
    assert "sequence '07' folder not found" in run("--checkpoint", str(checkpoint),
                                                   "--split", "07")
    assert not (tmp_path / "o" / "metrics.json").exists()
