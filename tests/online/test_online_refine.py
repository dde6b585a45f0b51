"""The training-free `refine` stage: synthetic frames with a known pose, real KITTI frames,
and the refusals."""
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from nclr_core.data.kitti import KittiObjectDataset
from nclr_core.data.synthetic.sequence import SyntheticConfig, SyntheticSequence
from nclr_core.geometry.camera import CameraModel
from nclr_core.geometry.metrics import pose_errors
from nclr_core.online.pose import prior_at_distance
from nclr_core.online.refine import RefineFrame, RefineResult, RefineSettings, refine
from nclr_core.online.refine_features import spread_edges

# the simulator casts thin rays (no beam divergence)
SIMULATED = RefineSettings(beam_divergence_deg=0.0)
WIDTH, HEIGHT = 1242, 375  # KITTI's size: at half of it, the search is much less reliable
PLUMB_BOB = np.array([-0.25, 0.08, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def drive() -> SyntheticSequence:
    return SyntheticSequence(7, 0, 3, SyntheticConfig(width=WIDTH, height=HEIGHT, beams=64))


@pytest.fixture(scope="module")
def synthetic_frames(drive: SyntheticSequence) -> list:
    return [drive.frame(i) for i in range(drive.num_frames)]


def _pinhole_window(drive, synthetic_frames) -> list[RefineFrame]:
    camera = CameraModel(drive.K, WIDTH, HEIGHT)
    return [RefineFrame(f.render.image, f.scan.points, camera) for f in synthetic_frames]


def _distorted_window(drive, synthetic_frames) -> list[RefineFrame]:
    """The same frames as a camera with barrel distortion sees them (images warped)."""
    camera = CameraModel(drive.K, WIDTH, HEIGHT, "plumb_bob", PLUMB_BOB)
    u, v = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    pinhole = camera.undistort_points(np.stack([u.ravel(), v.ravel()], 1))
    map_u = pinhole[:, 0].reshape(HEIGHT, WIDTH).astype(np.float32)
    map_v = pinhole[:, 1].reshape(HEIGHT, WIDTH).astype(np.float32)
    return [RefineFrame(cv2.remap(f.render.image, map_u, map_v, cv2.INTER_LINEAR),
                        f.scan.points, camera) for f in synthetic_frames]


def _errors(T: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    e = pose_errors(T, T_true)
    return float(e["rre_geodesic_deg"]), float(e["rte_m"])


def _assert_closer(result: RefineResult, T_prior: np.ndarray, T_true: np.ndarray) -> None:
    assert result.solved, result.reason
    rot, trans = _errors(result.estimate.T_cam_lidar, T_true)
    prior_rot, prior_trans = _errors(T_prior, T_true)
    assert rot < prior_rot and trans < prior_trans, (rot, trans)


def test_spread_edges_halve_every_decay_and_average_zero() -> None:
    edges = np.zeros((60, 80), np.float32)
    edges[30, 40] = 1.0
    spread = spread_edges(edges, decay_px=4.0, self_weight=0.0)
    assert spread.mean() == pytest.approx(0.0, abs=1e-6)
    # city-block distance 8 (two decays): a quarter of the edge's reward
    assert spread[30, 48] - spread[0, 0] == pytest.approx(0.25 - 0.5 ** (70 / 4.0), rel=1e-4)
    assert spread[26, 44] == pytest.approx(spread[30, 48])
    # with the local mean removed, a uniformly textured image scores nothing anywhere
    texture = np.ones((60, 80), np.float32)
    assert np.allclose(spread_edges(texture, 4.0, 1.0 / 3.0, local_mean_px=16.0), 0.0,
                       atol=1e-5)


def test_converges_on_synthetic_frames_with_a_known_pose(drive, synthetic_frames) -> None:
    T_true = drive.T_cam_lidar
    T_prior = prior_at_distance(T_true, 3.0, 0.1, np.random.default_rng(1))
    result = refine(_pinhole_window(drive, synthetic_frames), T_prior, SIMULATED)
    _assert_closer(result, T_prior, T_true)
    rot, trans = _errors(result.estimate.T_cam_lidar, T_true)
    assert rot < 0.2 and trans < 0.03
    assert result.frames_used == 3 and result.objective_end > result.objective_start
    assert np.all(result.estimate.sigma_rot_deg > 0) and np.all(result.estimate.sigma_trans_m > 0)


def test_projects_through_the_lens_model(drive, synthetic_frames) -> None:
    T_true = drive.T_cam_lidar
    T_prior = prior_at_distance(T_true, 3.0, 0.1, np.random.default_rng(1))
    distorted = _distorted_window(drive, synthetic_frames)
    result = refine(distorted, T_prior, SIMULATED)
    _assert_closer(result, T_prior, T_true)
    rot, trans = _errors(result.estimate.T_cam_lidar, T_true)
    assert rot < 0.2 and trans < 0.03
    # the same images taken for a pinhole's: the maximum lands elsewhere
    as_pinhole = [replace(f, camera=CameraModel(drive.K, WIDTH, HEIGHT)) for f in distorted]
    wrong = refine(as_pinhole, T_prior, SIMULATED)
    assert _errors(wrong.T_found, T_true)[0] > rot + 0.1


def test_a_blank_image_is_refused_with_a_reason(drive, synthetic_frames) -> None:
    blank = [replace(f, image=np.full_like(f.image, 128))
             for f in _pinhole_window(drive, synthetic_frames)]
    T_prior = prior_at_distance(drive.T_cam_lidar, 3.0, 0.1, np.random.default_rng(1))
    result = refine(blank, T_prior, SIMULATED)
    assert not result.solved and result.estimate is None
    assert "flat" in result.reason or "no significant improvement" in result.reason


def test_too_few_contours_are_refused(drive, synthetic_frames) -> None:
    frame = _pinhole_window(drive, synthetic_frames)[0]
    behind = frame.points[frame.points[:, 0] < 0.0]  # the LiDAR looks forward along x
    result = refine([replace(frame, points=behind)], drive.T_cam_lidar, SIMULATED)
    assert not result.solved and result.reason.startswith("too few contour points")
    assert result.T_found is None


def test_a_maximum_beyond_the_bounds_is_refused(drive, synthetic_frames) -> None:
    T_prior = prior_at_distance(drive.T_cam_lidar, 3.0, 0.1, np.random.default_rng(1))
    tight = replace(SIMULATED, max_rotation_deg=1.0, max_translation_m=0.05)
    result = refine(_pinhole_window(drive, synthetic_frames), T_prior, tight)
    assert not result.solved and result.estimate is None, result.reason


def test_bad_input_is_named() -> None:
    camera = CameraModel(np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]]), 100, 80)
    with pytest.raises(ValueError, match="image must be"):
        RefineFrame(np.zeros((80, 100), np.uint8), np.zeros((10, 4), np.float32), camera)
    with pytest.raises(ValueError, match="points must be"):
        RefineFrame(np.zeros((80, 100, 3), np.uint8), np.zeros((10, 2), np.float32), camera)
    with pytest.raises(ValueError, match="at least one frame"):
        refine([], np.eye(4))


def _kitti_window(real_data: Path) -> tuple[list[RefineFrame], np.ndarray]:
    """The 11 frames of the 2011_09_26 calibration (training/000000 has its own)."""
    frames, T_true = [], None
    for split in ("training", "testing"):
        dataset = KittiObjectDataset(real_data / "kitti_object", split)
        for i in range(len(dataset)):
            sample = dataset[i]
            if sample["K"][0, 0] != pytest.approx(721.5377):
                continue
            image = sample["image"]
            camera = CameraModel(sample["K"], image.shape[1], image.shape[0])
            frames.append(RefineFrame(image, sample["points"], camera))
            T_true = sample["T_cam_lidar"]
    return frames, T_true


def test_real_kitti_window_beats_the_prior(real_data: Path) -> None:
    frames, T_true = _kitti_window(real_data)
    assert len(frames) == 11
    T_prior = prior_at_distance(T_true, 5.0, 0.2, np.random.default_rng(3))
    result = refine(frames, T_prior)
    _assert_closer(result, T_prior, T_true)
    rot, trans = _errors(result.estimate.T_cam_lidar, T_true)
    assert rot < 0.5 and trans < 0.06


def test_one_real_frame_is_never_returned_worse_than_its_prior(real_data: Path) -> None:
    frames, T_true = _kitti_window(real_data)
    T_prior = prior_at_distance(T_true, 5.0, 0.2, np.random.default_rng(4))
    result = refine(frames[:1], T_prior)
    if result.solved:
        _assert_closer(result, T_prior, T_true)
    else:
        assert result.estimate is None and result.reason


def test_the_pipeline_runs_refine_alone_once_its_window_is_full(drive, synthetic_frames) -> None:
    from nclr_core.online.pipeline import Frame, OnlineCalibration, OnlineSettings

    T_true = drive.T_cam_lidar
    T_prior = prior_at_distance(T_true, 3.0, 0.1, np.random.default_rng(1))
    settings = OnlineSettings(stages=("refine",), refine=SIMULATED, refine_window=3,
                              refine_every=3)
    pipeline = OnlineCalibration(None, settings, T_prior)
    camera = CameraModel(drive.K, WIDTH, HEIGHT)
    records = [pipeline.process(Frame(f.render.image, f.scan.points, camera)).record
               for f in synthetic_frames]
    assert all(r.accepted and r.stage == "refine" and not r.solved for r in records)
    assert records[0].aggregate is None and records[1].aggregate is None
    estimate = pipeline.estimate()
    assert estimate.stage == "refine" and estimate.num_frames == 3
    rot, trans = _errors(estimate.T_cam_lidar, T_true)
    prior_rot, prior_trans = _errors(T_prior, T_true)
    assert rot < prior_rot and trans < prior_trans
    with pytest.raises(ValueError, match="needs a prior"):
        OnlineCalibration(None, settings)
