"""pretrain.py end to end on a tiny synthetic set: steps, exact resume, torchrun DDP."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nclr_core.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "training" / "pretrain.py"
CONFIG = REPO / "training" / "configs" / "synthetic_cpu.yaml"

# The CPU config, shrunk: 2 frames a batch, 3 steps an epoch, pose loss from step 3.
TINY = [
    "data.train_split=['00', '01']", "data.val_split=['01']", "data.val_max_frames=1",
    "data.image_height=96", "data.image_width=320", "data.max_points=3000",
    "model.fpn_channels=16", "model.point_base_channels=8", "model.voxel_size=0.5",
    "model.channels=16", "model.fusion_d_model=32", "model.fusion_heads=2",
    "model.fusion_keypoints=32", "model.info_nce_points=64", "model.info_nce_cells=64",
    "model.max_negatives=128", "model.max_match_points=64",
    "train.epochs=2", "train.batch_size=2", "train.log_every=1",
    "train.pose_loss_start_fraction=0.5", "train.val_every_epochs=1", "model.use_pose_loss=true",
]


def _run(args, cwd, env=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _sets(root, output_root, *extra):
    out = []
    for item in (f"data.root={root}", f"output_root={output_root}", *TINY, *extra):
        out += ["--set", item]
    return out


def _only_run(output_root: Path) -> Path:
    runs = sorted((output_root / "synthetic_cpu").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_resume_continues_at_the_step_and_matches_an_uninterrupted_run(tiny_synthetic, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _run([PRETRAIN, "--config", CONFIG,
          *_sets(tiny_synthetic, straight, "train.max_steps=4")], tmp_path)
    _run([PRETRAIN, "--config", CONFIG,
          *_sets(tiny_synthetic, interrupted, "train.max_steps=2")], tmp_path)
    run = _only_run(interrupted)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    _run([PRETRAIN, "--resume", run / "checkpoints" / "last.pt",
          "--set", "train.max_steps=4"], tmp_path)

    resumed = load_checkpoint(run / "checkpoints" / "last.pt")
    reference = load_checkpoint(_only_run(straight) / "checkpoints" / "last.pt")
    assert resumed["step"] == reference["step"] == 4
    log = (run / "train.log").read_text()
    assert "resumed from step 2" in log and "step 3 " in log and "loss_pose" in log
    # L_p's gradient norm beside L_f's, and the frames that passed the pose-loss gate
    for key in ("grad_norm_pose=", "grad_norm_feature=", "pose_loss_frames="):
        assert key in log, key
    for name, value in reference["model"].items():
        assert torch.allclose(resumed["model"][name].float(), value.float(), atol=1e-5), name
    for name in ("config.yaml", "metrics.json", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())


def test_two_processes_under_torchrun(tiny_synthetic, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(PRETRAIN),
         "--config", str(CONFIG),
         *_sets(tiny_synthetic, tmp_path / "ddp", "train.max_steps=2", "train.batch_size=1")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = load_checkpoint(_only_run(tmp_path / "ddp") / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 2


def test_init_weights_start_a_fresh_run_from_a_checkpoint(tiny_synthetic, tmp_path):
    _run([PRETRAIN, "--config", CONFIG, *_sets(tiny_synthetic, tmp_path / "first",
                                               "train.max_steps=1", "model.fine_matching=false")],
         tmp_path)
    first = load_checkpoint(_only_run(tmp_path / "first") / "checkpoints" / "last.pt")["model"]
    source = _only_run(tmp_path / "first") / "checkpoints" / "last.pt"
    # lr 0: the parameters stay what init_weights loaded (BatchNorm statistics still move)
    _run([PRETRAIN, "--config", CONFIG, *_sets(tiny_synthetic, tmp_path / "second",
          "train.max_steps=1", "train.lr=0", "model.fine_matching=false",
          f"train.init_weights={source}")], tmp_path)
    run = _only_run(tmp_path / "second")
    second = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert f"initial weights from {source}" in (run / "train.log").read_text()
    for name, value in first.items():
        if "running_" not in name and "num_batches" not in name:
            assert torch.equal(second[name], value), name

    # a model with the fine stage starts from weights without one: the stage starts fresh
    _run([PRETRAIN, "--config", CONFIG, *_sets(tiny_synthetic, tmp_path / "fine",
          "train.max_steps=1", "train.lr=0", "model.fine_matching=true",
          f"train.init_weights={source}")], tmp_path)
    run = _only_run(tmp_path / "fine")
    fine = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert "fine_matcher not in it: freshly initialised" in (run / "train.log").read_text()
    assert any(name.startswith("fine_matcher.") for name in fine)
    for name, value in first.items():
        if "running_" not in name and "num_batches" not in name:
            assert torch.equal(fine[name], value), name

    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(PRETRAIN), "--config", str(CONFIG),
         *_sets(tiny_synthetic, tmp_path / "third", "model.channels=8",
                f"train.init_weights={source}")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert "weights do not fit the configured model" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "third").exists()  # issue 16: it used to leave an empty run folder


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_bag_pretrains_as_the_config_stands_and_resumes(tiny_synthetic, tmp_path, storage):
    from nclr_ros.bag_convert import convert

    # 3 frames 0.1 s apart: frames 0 and 1 train, frame 2 validates; one step an epoch
    bag = convert("synthetic", tiny_synthetic, tmp_path / "drive", storage=storage).path
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # the default cache folder
    sets = ["--set", "data.dataset=rosbag", *_sets(bag, tmp_path / "runs", "train.epochs=3",
                                                   "train.max_steps=2")]
    first = _run([PRETRAIN, "--config", CONFIG, *sets], tmp_path, env)
    assert "3 pairs decoded into" in first.stderr
    run = _only_run(tmp_path / "runs")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert "2 training frames" in (run / "train.log").read_text()
    assert len(list((tmp_path / "cache" / "nclr" / "rosbag").iterdir())) == 1
    resumed = _run([PRETRAIN, "--resume", run / "checkpoints" / "last.pt", "--set",
                    "train.max_steps=3"], tmp_path, env)
    assert "decoded into" not in resumed.stderr  # the cache, not the bag again
    assert "3 decoded pairs from the cache" in resumed.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert "resumed from step 2" in (run / "train.log").read_text()

    # a topic the bag lacks: one line naming the option, no run folder
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, str(PRETRAIN), "--config", str(CONFIG), *sets, "--set",
         f"output_root={tmp_path / 'bad'}", "--set", "data.rosbag.points_topic=/velodyne"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no PointCloud2 topic '/velodyne'" in done.stderr
    assert "data.rosbag.points_topic" in done.stderr
    assert not (tmp_path / "bad").exists()
