"""Domain randomisation of the synthetic data: off changes nothing, on is seeded per sequence,
and every effect does what it claims (on real renders, scans and files)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nclr_core.data.config import DataConfig
from nclr_core.data.datasets import build_pair_dataset
from nclr_core.data.rosbag.rectify import rectify_image
from nclr_core.data.semantickitti import SemanticKittiDataset
from nclr_core.data.synthetic import SyntheticConfig, SyntheticSequence
from nclr_core.data.synthetic.camera import PinholeCamera, render_camera
from nclr_core.data.synthetic.lidar import LidarModel, scan_lidar
from nclr_core.data.synthetic.materials import MATERIAL_REFLECTIVITY, MATERIALS, ROAD
from nclr_core.data.synthetic.randomise import (
    CameraLook,
    RandomiseConfig,
    auto_exposure_gain,
    draw_look,
    expose,
    radial_fold,
    sensor_noise,
    vary_materials,
    vignetting_gain,
)
from nclr_core.data.synthetic.writer import write_dataset
from nclr_core.geometry.projection import project_points_with_camera

REPO_ROOT = Path(__file__).resolve().parents[2]
ON = RandomiseConfig(enabled=True)
# SHA-256 of every file (name and bytes, sorted by name) that main at 7c1fab2, before
# randomisation existed, wrote for write_dataset(out, 1, 2, seed=3,
# SyntheticConfig(width=64, height=32, beams=16)). Update it only for an intended change of
# the renderer.
REFERENCE_SHA256 = "1f1c639dab9e37f21f8ae3fa323b45639efb7eeec77856445fadc0ff5659544e"


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _quiet(look: CameraLook, **changes) -> CameraLook:
    """`look` without blur or sensor noise, with `changes`."""
    return dataclasses.replace(look, read_noise=0.0, shot_noise=0.0, blur_sigma_px=0.0,
                               **changes)


@pytest.fixture(scope="module")
def randomised():
    """A randomised 320 x 97 sequence and its first frame."""
    sequence = SyntheticSequence(11, 0, 1, SyntheticConfig(width=320, height=97, randomise=ON))
    return sequence, sequence.frame(0)


def _render(sequence: SyntheticSequence, look: CameraLook, camera: PinholeCamera | None = None):
    rays = sequence.scene.static_ray_scene()
    T_world_cam = sequence.scene.T_world_lidar(0.0) @ np.linalg.inv(sequence.T_cam_lidar)
    return render_camera(rays, T_world_cam, camera or sequence.camera, sequence.lighting,
                         np.random.default_rng(0), look=look)


def test_randomise_off_writes_the_bytes_main_wrote(tmp_path):
    small = {"width": 64, "height": 32, "beams": 16}
    write_dataset(tmp_path / "default", 1, 2, seed=3, config=SyntheticConfig(**small))
    assert _digest(tmp_path / "default") == REFERENCE_SHA256
    off = SyntheticConfig(**small, randomise=RandomiseConfig(enabled=False))
    write_dataset(tmp_path / "off", 1, 2, seed=3, config=off)
    assert _digest(tmp_path / "off") == REFERENCE_SHA256
    assert "randomise" not in json.loads((tmp_path / "off" / "metrics.json").read_text())[
        "config"]


def test_a_randomised_sequence_depends_only_on_its_seed_and_index(tmp_path):
    config = SyntheticConfig(width=96, height=32, randomise=ON)
    write_dataset(tmp_path / "serial", 2, 2, seed=5, config=config)
    write_dataset(tmp_path / "parallel", 2, 2, seed=5, config=config, workers=2)
    serial = _files(tmp_path / "serial")
    assert serial == _files(tmp_path / "parallel")
    write_dataset(tmp_path / "other", 1, 1, seed=6, config=config)
    name = "sequences/00/image_2/000000.png"
    assert _files(tmp_path / "other")[name] != serial[name]
    # frame 1 alone, generated first, is frame 1 of the written sequence
    late = SyntheticSequence(5, 1, 2, config).frame(1)
    written = np.fromfile(tmp_path / "serial/sequences/01/velodyne/000001.bin", np.float32)
    np.testing.assert_array_equal(late.scan.points.ravel(), written)
    metrics = json.loads((tmp_path / "serial" / "metrics.json").read_text())
    assert metrics["config"]["randomise"]["enabled"] is True
    looks = [metrics["sequences"][s]["look"] for s in ("00", "01")]
    assert looks[0] != looks[1]


def test_draws_stay_within_their_ranges_and_cover_every_beam_choice():
    camera = PinholeCamera.kitti_like()
    corner = np.linalg.norm([(1241.5 - camera.K[0, 2]) / camera.K[0, 0],
                             (374.5 - camera.K[1, 2]) / camera.K[1, 1]])
    looks = [draw_look(np.random.default_rng(i), ON, camera.K, 1242, 375) for i in range(60)]
    assert {look.lidar.num_beams for look in looks} == {32, 64, 128}
    for look in looks:
        c = look.camera
        assert 0.32 <= c.exposure_level <= 0.48 and 1.0 <= c.response_gamma <= 2.2
        assert c.white_balance[1] == 1.0
        assert np.all((c.white_balance >= 0.85) & (c.white_balance <= 1.15))
        assert 0.4 <= c.shadow_strength <= 1.0 and 0.0 <= c.vignetting <= 0.4
        k1, k2, p1, p2, k3 = look.distortion
        assert -0.30 <= k1 <= 0.05 and 0.0 <= k2 <= 0.15 and k3 == 0.0
        assert max(abs(p1), abs(p2)) <= 1e-3
        assert radial_fold(k1, k2) > 1.1 * corner
        elevation = np.degrees(np.arcsin(look.sun_direction[2]))
        assert 8.0 <= elevation <= 75.0
        assert np.linalg.norm(look.sun_direction) == pytest.approx(1.0)
        assert 0.0 <= look.lidar.dropout <= 0.08 and 0.6 <= look.lidar.intensity_gamma <= 1.5
        assert c.material_gain.shape == (len(MATERIALS), 3)
    with pytest.raises(ValueError, match="randomise.beams"):
        RandomiseConfig(beams=(40,))
    with pytest.raises(ValueError, match="randomise.response_gamma"):
        RandomiseConfig(response_gamma=(2.2, 1.0))


def test_a_randomised_sequence_uses_its_draws(randomised):
    sequence, frame = randomised
    look = sequence.look
    assert sequence.lidar is look.lidar
    np.testing.assert_array_equal(sequence.lighting.sun_direction, look.sun_direction)
    np.testing.assert_array_equal(sequence.camera.distortion, look.distortion)
    per_column = frame.scan.points.shape[0] / look.lidar.num_azimuths
    assert per_column <= look.lidar.num_beams


def test_vignetting_darkens_the_corners_relative_to_the_centre(randomised):
    sequence, _ = randomised
    K = sequence.K
    gain = vignetting_gain(320, 97, K, 0.4)
    centre = gain[int(round(K[1, 2])), int(round(K[0, 2]))]
    assert centre == pytest.approx(1.0, abs=1e-3)
    assert gain.min() == pytest.approx(0.6, abs=0.01) and gain.max() <= 1.0
    plain = _quiet(sequence.look.camera, vignetting=0.0)
    dark = _quiet(sequence.look.camera, vignetting=0.4)
    flat = expose(np.full((97, 320, 3), 0.5), dark, K)
    assert flat[0, 0].mean() < 0.65 * flat[48, 160].mean()
    a = _render(sequence, plain).image.astype(float)
    b = _render(sequence, dark).image.astype(float)
    corners = np.r_[b[:12, :30].ravel(), b[-12:, -30:].ravel()].mean() / np.r_[
        a[:12, :30].ravel(), a[-12:, -30:].ravel()].mean()
    centre_ratio = b[42:55, 140:180].mean() / a[42:55, 140:180].mean()
    assert corners < 0.9 * centre_ratio


def test_exposure_white_balance_blur_and_noise_do_what_they_say(randomised):
    sequence, _ = randomised
    K = sequence.K
    look = _quiet(sequence.look.camera, vignetting=0.0, exposure_level=0.4, response_gamma=1.0,
                  white_balance=np.array([1.1, 1.0, 0.9]))
    out = expose(np.full((20, 30, 3), 0.05), look, K)
    # the auto-exposure brings the mean output level to 0.4 whatever the scene's radiance
    assert out.mean() == pytest.approx(0.4, rel=1e-4)
    np.testing.assert_allclose(out[5, 5] / out[5, 5, 1], [1.1, 1.0, 0.9])
    step = np.zeros((20, 30, 3))
    step[:, 15:] = 1.0
    sharp = expose(step, look, K)
    soft = expose(step, dataclasses.replace(look, blur_sigma_px=1.5), K)
    assert np.abs(np.diff(soft[10, :, 0])).max() < 0.5 * np.abs(np.diff(sharp[10, :, 0])).max()
    noisy = dataclasses.replace(look, read_noise=2.0, shot_noise=6.0)
    rng = np.random.default_rng(1)
    for level in (20.0, 200.0):
        values = sensor_noise(np.full((200, 200, 3), level, np.float32), noisy, rng)
        expected = np.sqrt(2.0**2 + 6.0**2 * level / 255.0)
        assert values.std() == pytest.approx(expected, rel=0.03)
        assert values.mean() == pytest.approx(level, abs=0.1)


def test_auto_exposure_holds_the_level_and_a_linear_response_deepens_shadows(randomised):
    sequence, _ = randomised
    looks = {(level, gamma): _quiet(sequence.look.camera, vignetting=0.0, exposure_level=level,
                                    response_gamma=gamma)
             for level in (0.3, 0.45) for gamma in (1.0, 2.2)}
    images = {key: _render(sequence, look).image.astype(float) / 255.0
              for key, look in looks.items()}
    for (level, _), image in images.items():
        assert image.mean() == pytest.approx(level, abs=0.01)
    for level in (0.3, 0.45):
        linear, display = images[(level, 1.0)], images[(level, 2.2)]
        assert np.percentile(linear, 10) < 0.7 * np.percentile(display, 10)
        assert linear.std() > display.std()
    with pytest.raises(ValueError, match="auto-exposure level"):
        auto_exposure_gain(np.ones((4, 4, 3)), 1.0, 2.2)


def test_shadow_strength_decides_how_dark_shadows_are(randomised):
    sequence, _ = randomised
    hard = _render(sequence, _quiet(sequence.look.camera, shadow_strength=1.0)).image
    none = _render(sequence, _quiet(sequence.look.camera, shadow_strength=0.0)).image
    diff = (none.astype(int) - hard.astype(int)).max(axis=2)
    # shadowed surfaces brighten; the rest darkens a little as the auto-exposure compensates
    brightened = diff > 10
    assert brightened.mean() > 0.01 and np.median(diff[brightened]) > 20
    assert np.median(diff) <= 0 and -diff.min() < 0.5 * np.median(diff[brightened])


def test_materials_and_textures_vary_per_look():
    rng = np.random.default_rng(0)
    base = np.tile([[0.3, 0.3, 0.3]], (4, 1))
    textured = base * np.array([[0.8], [1.2], [1.0], [0.9]])
    material = np.array([0, 0, 5, 5])
    gain = np.ones((len(MATERIALS), 3))
    look = CameraLook(0.4, 2.2, np.ones(3), 1.0, 0.0, 0.0, 0.0, 0.0, gain, 1.0)
    np.testing.assert_allclose(vary_materials(textured, base, material, look), textured)
    flat = vary_materials(textured, base, material, dataclasses.replace(look,
                                                                        texture_contrast=0.0))
    np.testing.assert_allclose(flat, base)
    gain = rng.uniform(0.5, 1.5, (len(MATERIALS), 3))
    tinted = vary_materials(textured, base, material, dataclasses.replace(look,
                                                                          material_gain=gain))
    np.testing.assert_allclose(tinted, textured * gain[material])


def test_lidar_preset_128_and_the_reflectance_and_dropout_models(randomised):
    sequence, _ = randomised
    vls = LidarModel.preset(128)
    elevation = np.degrees(np.arcsin(vls.ray_directions[:, 2]))
    assert vls.num_beams == 128 and elevation.max() == pytest.approx(15.0)
    assert elevation.min() == pytest.approx(-25.0)
    rays = sequence.scene.static_ray_scene()
    T = sequence.scene.T_world_lidar(0.0)
    clean = dataclasses.replace(LidarModel.preset(32), dropout=0.0, dark_dropout=0.0,
                                intensity_noise_std=0.0, range_noise_std=0.0)
    base = scan_lidar(rays, T, clean, np.random.default_rng(0))
    dropped = scan_lidar(rays, T, dataclasses.replace(clean, dropout=0.3),
                         np.random.default_rng(0))
    assert dropped.points.shape[0] / base.points.shape[0] == pytest.approx(0.7, abs=0.02)
    scale = tuple(np.linspace(0.8, 1.2, len(MATERIALS)))
    flat = dataclasses.replace(clean, incidence_floor=1.0, intensity_gamma=2.0,
                               reflectivity_scale=scale)
    scan = scan_lidar(rays, T, flat, np.random.default_rng(0))
    road = [i for i, m in enumerate(MATERIALS) if m.name == "road"][0]
    on_road = scan.semantic == ROAD
    assert on_road.sum() > 1000
    np.testing.assert_allclose(scan.points[on_road, 3],
                               (MATERIAL_REFLECTIVITY[road] * scale[road]) ** 2, rtol=1e-6)
    # default response: head-on returns brighter than grazing ones on the same road
    assert base.points[base.semantic == ROAD, 3].std() > 0.005


def test_distortion_round_trips_through_the_reader_and_points_land_on_the_geometry(
        tmp_path):
    strong = RandomiseConfig(enabled=True, distortion_k1=(-0.30, -0.25))
    config = SyntheticConfig(width=320, height=97, randomise=strong)
    sequence = SyntheticSequence(11, 0, 1, config)
    frame = sequence.frame(0)
    write_dataset(tmp_path, 1, 1, seed=11, config=config)
    raw = SemanticKittiDataset(tmp_path, ("00",), rectify=False)[0]
    camera = raw["camera"]
    assert camera.distortion == "plumb_bob"
    np.testing.assert_allclose(camera.D, sequence.look.distortion, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(camera.K, sequence.K, rtol=1e-11)
    assert (camera.width, camera.height) == (320, 97)
    np.testing.assert_array_equal(raw["image"], frame.render.image)

    def on_geometry(lens):
        """Share of the points in the image that land on a pixel of their depth and class."""
        proj = project_points_with_camera(raw["points"], raw["T_cam_lidar"], lens)
        idx = np.flatnonzero(proj.in_image)
        u, v = proj.pixels()[idx].T
        depth = proj.depth[idx]
        visible = np.abs(depth - frame.render.depth[v, u]) < 0.1 + 0.02 * depth
        same = frame.render.semantic[v, u] == frame.scan.semantic[idx]
        assert idx.size > 10_000
        return (visible & same).mean()

    assert on_geometry(camera) > 0.85
    # without the lens the same points miss: the distortion is in the pixels
    assert on_geometry(PinholeCamera(320, 97, sequence.K).model) < 0.7


def test_the_reader_rectifies_a_distorted_camera_to_its_pinhole_image(tmp_path):
    lens = np.array([-0.28, 0.12, 0.0, 0.0, 0.0])
    config = SyntheticConfig(width=320, height=97, randomise=ON)
    sequence = SyntheticSequence(2, 0, 1, config)
    look = _quiet(sequence.look.camera)
    distorted = PinholeCamera(320, 97, sequence.K, lens)
    raw = _render(sequence, look, distorted).image
    pinhole = _render(sequence, look, PinholeCamera(320, 97, sequence.K)).image
    rectified = rectify_image(raw, distorted.model)
    inner = (slice(10, -10), slice(20, -20))

    def error(image):
        return np.abs(image[inner].astype(float) - pinhole[inner].astype(float)).mean()

    assert error(rectified) < 0.5 * error(raw)
    # and the reader does the same with the D2 it reads
    write_dataset(tmp_path, 1, 1, seed=2, config=config)
    sample = SemanticKittiDataset(tmp_path, ("00",))[0]
    raw_sample = SemanticKittiDataset(tmp_path, ("00",), rectify=False)[0]
    assert "camera" not in sample
    np.testing.assert_array_equal(sample["image"],
                                  rectify_image(raw_sample["image"], raw_sample["camera"]))


def test_cli_randomised_sequence_loads_and_builds_pretext_pairs(tmp_path):
    out = tmp_path / "dr"
    cmd = [sys.executable, str(REPO_ROOT / "training" / "make_synthetic.py"), "--out", str(out),
           "--sequences", "1", "--frames", "2", "--seed", "4", "--width", "320", "--height",
           "97", "--randomise", "--beams", "32", "--preview"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO_ROOT, timeout=300)
    calib = (out / "sequences" / "00" / "calib.txt").read_text()
    assert calib.splitlines()[-1].startswith("D2: ")
    assert (out / "preview" / "00_overlay.png").is_file()
    look = json.loads((out / "metrics.json").read_text())["sequences"]["00"]["look"]
    assert look["lidar_beams"] == 32  # --beams fixes the randomised preset
    cfg = DataConfig(dataset="synthetic", root=str(out), train_split=["00"], val_split=["00"],
                     image_height=64, image_width=192, max_points=4000)
    for train in (True, False):
        pairs = build_pair_dataset(cfg, train=train, seed=0)
        assert len(pairs) == 2
        pair = pairs[0]
        assert pair["image"].shape == (3, 64, 192)
        assert pair["points"].shape[1] == 4
        assert pair["point_overlap"].sum() > 100
        assert pair["image_overlap"].any()
        R = pair["T_gt"][:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
