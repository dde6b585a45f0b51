"""training/demo_seg.py: the segmentation node, started without model_path, labels a
replayed synthetic bag over real DDS on loopback (`nclr-bag play`), and its labels agree
with the drive's ground truth."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MIN_MIOU = 0.5


def _demo_seg():
    spec = importlib.util.spec_from_file_location("nclr_demo_seg",
                                                  REPO / "training" / "demo_seg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_node_without_model_path_labels_a_replayed_synthetic_bag(tmp_path, capsys,
                                                                  monkeypatch):
    pytest.importorskip("rmw_fastrtps_cpp", reason="rmw_fastrtps_cpp is not installed")
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(name, raising=False)  # the package's large-data profile is used
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--frames", "2", "--width", "320", "--height", "96",
            "--rate", "0.1", "--timeout", "180"]
    assert _demo_seg().main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clouds_in_bag"] == 2 and metrics["clouds_labelled"] >= 1
    diagnostics = {k: int(v) for k, v in metrics["node_diagnostics"].items()
                   if k.startswith("clouds_")}
    assert diagnostics["clouds_received"] == 2
    assert diagnostics["clouds_processed"] == metrics["clouds_labelled"]
    assert diagnostics["clouds_processed"] + diagnostics["clouds_dropped"] == 2
    node_log = (out / "node.log").read_text()
    assert "model_path is empty: using the shipped" in node_log
    assert "nclr_synthetic_seg.pt" in node_log and "synthetic scenes only" in node_log
    # the shipped model, not arbitrary labels: a random labelling scores about 1/19
    assert metrics["miou"] > MIN_MIOU, metrics["per_class_iou"]
    assert lines[-1].startswith("mIoU ") and "road" in "\n".join(lines)
