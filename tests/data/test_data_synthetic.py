"""Synthetic scenes: sensor consistency, class content, SemanticKITTI output, determinism."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh.ray

from nclr_core.data.semantickitti import IGNORE_INDEX, SemanticKittiDataset
from nclr_core.data.synthetic import SyntheticConfig, SyntheticSequence
from nclr_core.data.synthetic.lidar import LidarModel
from nclr_core.data.synthetic.materials import BUILDING, CAR, MOVING_ID, ROAD, VEGETATION
from nclr_core.data.synthetic.mesh import SoupBuilder, box_geometry
from nclr_core.data.synthetic.raycast import RayScene
from nclr_core.data.synthetic.sequence import default_T_cam_lidar
from nclr_core.data.synthetic.writer import calib_text, label_words, write_dataset
from nclr_core.geometry.projection import project_points

REPO_ROOT = Path(__file__).resolve().parents[2]
# Small settings for the CLI / determinism runs (a full-resolution frame is checked once).
SMALL = ["--beams", "16", "--width", "320", "--height", "97"]


@pytest.fixture(scope="module")
def full_frame():
    """One full-resolution (1242 x 375, 64-beam) frame and its sequence."""
    sequence = SyntheticSequence(seed=7, index=0, num_frames=1)
    return sequence, sequence.frame(0)


def test_ray_casting_uses_embree_and_hits_a_box_at_the_right_distance():
    assert trimesh.ray.has_embree
    b = SoupBuilder()
    v, f = box_geometry((2.0, 2.0, 2.0))
    b.add(v + np.array([10.0, 0.0, 0.0]), f, "facade")
    scene = RayScene([b.build()])
    origins = np.zeros((3, 3))
    dirs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    hits = scene.cast(origins, dirs)
    np.testing.assert_array_equal(hits.hit, [True, False, False])
    assert hits.distance[0] == pytest.approx(9.0, abs=1e-9)
    np.testing.assert_allclose(hits.normal[0], [-1.0, 0.0, 0.0], atol=1e-12)
    assert hits.semantic[0] == BUILDING
    assert np.isinf(hits.distance[1:]).all()
    np.testing.assert_array_equal(scene.occluded(origins, dirs), [True, False, False])


def test_lidar_presets_have_the_documented_layouts():
    hdl64 = LidarModel.preset(64)
    rays = hdl64.ray_directions
    elevation = np.degrees(np.arcsin(rays[:, 2]))
    assert rays.shape == (hdl64.num_azimuths * 64, 3)
    assert elevation.max() == pytest.approx(2.0) and elevation.min() == pytest.approx(-24.9)
    assert 2000 < hdl64.num_azimuths < 2200
    assert LidarModel.preset(32).num_beams == 32 and LidarModel.preset(16).num_beams == 16
    with pytest.raises(ValueError, match="no LiDAR preset for 40 beams"):
        LidarModel.preset(40)


def test_label_words_pack_class_low_and_instance_high():
    words = label_words(np.array([40, 252]), np.array([0, 7]))
    np.testing.assert_array_equal(words & 0xFFFF, [40, 252])
    np.testing.assert_array_equal(words >> 16, [0, 7])
    assert words.dtype == np.uint32
    with pytest.raises(ValueError, match="instance ids must fit in 16 bits"):
        label_words(np.array([40]), np.array([1 << 16]))


def test_calib_text_recovers_the_camera_2_extrinsics():
    K = np.array([[700.0, 0.0, 600.0], [0.0, 700.0, 180.0], [0.0, 0.0, 1.0]])
    T = default_T_cam_lidar()
    rows = dict(line.split(": ") for line in calib_text(K, T).splitlines())
    P2 = np.array(rows["P2"].split(), dtype=float).reshape(3, 4)
    Tr = np.vstack([np.array(rows["Tr"].split(), dtype=float).reshape(3, 4), [0, 0, 0, 1]])
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(P2[:, :3], P2[:, 3])
    np.testing.assert_allclose(offset @ Tr, T, atol=1e-10)
    assert set(rows) == {"P0", "P1", "P2", "P3", "Tr"}


def test_lidar_points_land_on_pixels_of_the_same_class(full_frame):
    sequence, frame = full_frame
    render, scan = frame.render, frame.scan
    assert render.image.shape == (375, 1242, 3) and render.image.dtype == np.uint8
    proj = project_points(scan.points, sequence.T_cam_lidar, sequence.K, (375, 1242))
    idx = np.flatnonzero(proj.in_image)
    u, v = proj.pixels()[idx].T
    rendered = render.depth[v, u]
    depth = proj.depth[idx]
    visible = np.abs(depth - rendered) < 0.1 + 0.02 * depth
    assert visible.sum() > 5000
    same = render.semantic[v, u][visible] == scan.semantic[idx][visible]
    assert same.mean() >= 0.95, f"only {same.mean():.3f} of visible points match their pixel"


def test_mean_colour_differs_between_classes(full_frame):
    _, frame = full_frame
    image = frame.render.image.reshape(-1, 3).astype(np.float64)
    semantic = frame.render.semantic.ravel()
    ids, counts = np.unique(semantic, return_counts=True)
    means = [image[semantic == c].mean(axis=0) for c in ids[counts >= 300]]
    distinct: list[np.ndarray] = []
    for m in means:
        if all(np.linalg.norm(m - d) > 12.0 for d in distinct):
            distinct.append(m)
    assert len(distinct) >= 5, f"only {len(distinct)} classes with distinct mean colours"


def test_class_histogram_is_plausible(full_frame):
    _, frame = full_frame
    ids, counts = np.unique(frame.scan.semantic, return_counts=True)
    hist = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    n = frame.scan.points.shape[0]
    assert n > 80_000
    assert hist.get(ROAD, 0) > 0.1 * n
    assert hist.get(BUILDING, 0) > 0.01 * n
    assert hist.get(VEGETATION, 0) > 0.005 * n
    assert hist.get(CAR, 0) + hist.get(MOVING_ID[CAR], 0) > 0.01 * n
    assert 0 not in hist  # every LiDAR return hits a labelled surface
    things = np.isin(frame.scan.semantic, [CAR, MOVING_ID[CAR]])
    assert (frame.scan.instance[things] > 0).all()
    assert (frame.scan.instance[frame.scan.semantic == ROAD] == 0).all()
    assert np.unique(frame.scan.instance[things]).size >= 3
    intensity = frame.scan.points[:, 3]
    assert intensity.min() >= 0.0 and intensity.max() <= 1.0 and intensity.std() > 0.05


def test_extrinsics_jitter_per_sequence_only_when_asked():
    base = SyntheticConfig(width=64, height=32, beams=16)
    T0 = SyntheticSequence(1, 0, 1, base).T_cam_lidar
    np.testing.assert_allclose(T0, default_T_cam_lidar())
    jitter = SyntheticConfig(width=64, height=32, beams=16, extrinsic_jitter_rad=0.01,
                             extrinsic_jitter_m=0.02)
    Ta = SyntheticSequence(1, 0, 1, jitter).T_cam_lidar
    Tb = SyntheticSequence(1, 1, 1, jitter).T_cam_lidar
    assert not np.allclose(Ta, T0) and not np.allclose(Ta, Tb)
    np.testing.assert_allclose(Ta[:3, :3] @ Ta[:3, :3].T, np.eye(3), atol=1e-12)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "preview" not in p.parts
    }


def test_cli_output_loads_through_the_reader_and_is_deterministic(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO_ROOT / "training" / "make_synthetic.py"), "--out", str(out),
           "--sequences", "1", "--frames", "3", "--seed", "3", "--preview", *SMALL]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO_ROOT, timeout=300)
    assert (out / "preview" / "00_overlay.png").is_file()
    assert (out / "preview" / "00_bev.png").is_file()

    dataset = SemanticKittiDataset(out, sequences=("00",))
    assert len(dataset) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    T_truth = np.array(metrics["sequences"]["00"]["T_cam_lidar"])
    for i in range(3):
        sample = dataset[i]
        assert sample["image"].shape == (97, 320, 3)
        assert sample["points"].dtype == np.float32 and sample["points"].shape[1] == 4
        np.testing.assert_allclose(sample["T_cam_lidar"], T_truth, atol=1e-10)
        assert sample["stamp"] == pytest.approx(0.1 * i)
        labels = sample["labels"]
        assert labels.shape == (sample["points"].shape[0],)
        assert (labels != IGNORE_INDEX).all() and labels.max() <= 18
    np.testing.assert_allclose(dataset[0]["pose"], np.eye(4), atol=1e-12)
    assert dataset[2]["pose"][2, 3] > 0.5  # camera 0 moved forward along its z axis

    # Same seed in this process -> byte-identical files; another seed -> different data.
    again = tmp_path / "again"
    config = SyntheticConfig(width=320, height=97, beams=16)
    write_dataset(again, 1, 3, seed=3, config=config)
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    write_dataset(other, 1, 1, seed=4, config=config)
    name = "sequences/00/velodyne/000000.bin"
    assert _files(other)[name] != _files(out)[name]


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        SyntheticSequence(0, 0, 0)
    with pytest.raises(ValueError, match="image size must be at least"):
        SyntheticSequence(0, 0, 1, SyntheticConfig(width=1, height=10))
    with pytest.raises(ValueError, match="num_sequences must be in 1..100"):
        write_dataset(tmp_path, 0, 1, seed=0)


def test_existing_sequence_is_kept_unless_overwrite(tmp_path):
    config = SyntheticConfig(width=32, height=16, beams=16)
    write_dataset(tmp_path, 1, 2, seed=0, config=config)
    with pytest.raises(FileExistsError, match="sequence folder exists"):
        write_dataset(tmp_path, 1, 1, seed=0, config=config)
    write_dataset(tmp_path, 1, 1, seed=0, config=config, overwrite=True)
    scans = sorted((tmp_path / "sequences" / "00" / "velodyne").iterdir())
    assert [p.name for p in scans] == ["000000.bin"]


def test_parallel_generation_writes_the_same_bytes(tmp_path):
    config = SyntheticConfig(width=96, height=32, beams=16)
    write_dataset(tmp_path / "serial", 2, 1, seed=5, config=config)
    write_dataset(tmp_path / "parallel", 2, 1, seed=5, config=config, workers=2)
    serial, parallel = _files(tmp_path / "serial"), _files(tmp_path / "parallel")
    assert "sequences/01/velodyne/000000.bin" in serial
    assert parallel == serial
