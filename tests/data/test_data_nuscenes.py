"""nuScenes reader: table composition, ego motion, the real keyframe rebuilt as tables, and
scene selection by name or token (with the pre-training split checks)."""
import importlib.util
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from nclr_core.config import ConfigError
from nclr_core.data import datasets
from nclr_core.data.config import DataConfig
from nclr_core.data.datasets import build_pair_dataset, build_pair_datasets, check_splits
from nclr_core.data.files import DataFormatError
from nclr_core.data.nuscenes import NuScenesDataset, nuscenes_T_cam_lidar, resolve_scenes
from nclr_core.geometry.se3 import (
    compose,
    invert,
    make_transform,
    matrix_from_rpy,
    quaternion_xyzw_from_matrix,
    transform_points,
)

REPO = Path(__file__).resolve().parents[2]
LIDAR_FILE = "n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"


def _record(T: np.ndarray, **extra: object) -> dict:
    """translation + rotation (w, x, y, z) as nuScenes stores them."""
    q = np.roll(quaternion_xyzw_from_matrix(T[:3, :3]), 1)
    return {"translation": T[:3, 3].tolist(), "rotation": q.tolist(), **extra}


def _stamp(filename: str) -> int:
    return int(filename.split("__")[-1].split(".")[0])


def test_T_cam_lidar_maps_a_static_world_point_between_stamps() -> None:
    rng = np.random.default_rng(1)
    T_ego_lidar = make_transform(matrix_from_rpy([0.01, -0.02, 1.6]), [0.9, 0.0, 1.8])
    T_ego_cam = make_transform(matrix_from_rpy([-1.57, 0.0, -1.57]), [1.7, 0.02, 1.5])
    T_g_egolidar = make_transform(matrix_from_rpy([0.0, 0.01, 0.7]), [400.0, 1100.0, 0.5])
    # the vehicle drove 0.3 m forward and turned slightly between the camera and the LiDAR
    T_g_egocam = compose(
        T_g_egolidar, make_transform(matrix_from_rpy([0.0, 0.0, -0.004]), [-0.3, 0.01, 0.0])
    )
    T = nuscenes_T_cam_lidar(
        _record(T_ego_lidar), _record(T_g_egolidar), _record(T_ego_cam), _record(T_g_egocam)
    )
    p_global = rng.uniform(-30, 30, (10, 3)) + [400.0, 1100.0, 0.0]
    p_lidar = transform_points(invert(compose(T_g_egolidar, T_ego_lidar)), p_global)
    p_cam = transform_points(invert(compose(T_g_egocam, T_ego_cam)), p_global)
    np.testing.assert_allclose(transform_points(T, p_lidar), p_cam, atol=1e-9)
    with pytest.raises(DataFormatError, match="cs_cam"):
        nuscenes_T_cam_lidar(
            _record(T_ego_lidar), _record(T_g_egolidar), {"translation": [0, 0, 0]},
            _record(T_g_egocam),
        )


def _write_tables(root: Path, src: Path, calib: dict, ego_motion: bool) -> None:
    """nuScenes tables for the real keyframe (all six cameras) under root/v1.0-mini.

    calib.json holds lidar2ego, cam2ego and lidar2cam but no ego poses. The LiDAR ego pose is
    an arbitrary global pose G; with `ego_motion` each camera's ego pose is G . inv(M), where
    M = cam2ego . lidar2cam . inv(lidar2ego) is the ego motion that the provided lidar2cam
    implies; without it every camera shares G.
    """
    table_dir = root / "v1.0-mini"
    table_dir.mkdir(parents=True)
    lidar_dir = root / "samples" / "LIDAR_TOP"
    lidar_dir.mkdir(parents=True)
    (lidar_dir / LIDAR_FILE).symlink_to(src / LIDAR_FILE)
    T_ego_lidar = np.array(calib["lidar2ego"])
    G = make_transform(matrix_from_rpy([0.003, -0.01, 2.2]), [411.3, 1180.9, 0.0])
    sensor = [{"token": "s_lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    cs = [_record(T_ego_lidar, token="cs_lidar", sensor_token="s_lidar", camera_intrinsic=[])]
    pose = [_record(G, token="ep_lidar", timestamp=_stamp(LIDAR_FILE))]
    sd = [{"token": "sd_lidar", "sample_token": "smp", "ego_pose_token": "ep_lidar",
           "calibrated_sensor_token": "cs_lidar", "timestamp": _stamp(LIDAR_FILE),
           "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0,
           "filename": f"samples/LIDAR_TOP/{LIDAR_FILE}", "prev": "", "next": ""}]
    for ch, cam in calib["cams"].items():
        cam_dir = root / "samples" / ch
        cam_dir.mkdir(parents=True)
        (cam_dir / cam["img"]).symlink_to(src / cam["img"])
        T_ego_cam = np.array(cam["cam2ego"])
        M = T_ego_cam @ np.array(cam["lidar2cam"]) @ np.linalg.inv(T_ego_lidar)
        T_g_egocam = G @ np.linalg.inv(M) if ego_motion else G
        sensor.append({"token": f"s_{ch}", "channel": ch, "modality": "camera"})
        cs.append(_record(T_ego_cam, token=f"cs_{ch}", sensor_token=f"s_{ch}",
                          camera_intrinsic=cam["K"]))
        pose.append(_record(T_g_egocam, token=f"ep_{ch}", timestamp=_stamp(cam["img"])))
        sd.append({"token": f"sd_{ch}", "sample_token": "smp", "ego_pose_token": f"ep_{ch}",
                   "calibrated_sensor_token": f"cs_{ch}", "timestamp": _stamp(cam["img"]),
                   "fileformat": "jpg", "is_key_frame": True, "height": cam["H"],
                   "width": cam["W"], "filename": f"samples/{ch}/{cam['img']}",
                   "prev": "", "next": ""})
    sample = [{"token": "smp", "timestamp": _stamp(LIDAR_FILE), "scene_token": "scene-0061",
               "prev": "", "next": ""}]
    for name, records in [("sensor", sensor), ("calibrated_sensor", cs), ("ego_pose", pose),
                          ("sample_data", sd), ("sample", sample)]:
        (table_dir / f"{name}.json").write_text(json.dumps(records))


@pytest.fixture()
def keyframe(real_data: Path) -> tuple[Path, dict]:
    src = real_data / "nuscenes_keyframe"
    return src, json.loads((src / "calib.json").read_text())


def test_provided_ego_motion_is_a_consistent_forward_drive(keyframe: tuple[Path, dict]) -> None:
    """The lidar2cam in calib.json implies one forward speed for all six cameras."""
    _, calib = keyframe
    L = np.array(calib["lidar2ego"])
    speeds = []
    for cam in calib["cams"].values():
        M = np.array(cam["cam2ego"]) @ np.array(cam["lidar2cam"]) @ np.linalg.inv(L)
        dt = (_stamp(LIDAR_FILE) - _stamp(cam["img"])) * 1e-6
        speeds.append(M[0, 3] / dt)
    assert np.ptp(speeds) < 0.05 * np.mean(speeds) and 5.0 < np.mean(speeds) < 15.0


def test_real_keyframe_reproduces_lidar2cam(tmp_path: Path, keyframe: tuple[Path, dict]) -> None:
    src, calib = keyframe
    _write_tables(tmp_path, src, calib, ego_motion=True)
    for ch, cam in calib["cams"].items():
        ds = NuScenesDataset(tmp_path, camera=ch)
        assert len(ds) == 1
        s = ds[0]
        np.testing.assert_allclose(s["T_cam_lidar"], cam["lidar2cam"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(s["K"], cam["K"])
        assert s["image"].shape == (cam["H"], cam["W"], 3) and s["image"].dtype == np.uint8
        assert s["camera_frame"] == ch and s["lidar_frame"] == "LIDAR_TOP"
        assert s["stamp"] == pytest.approx(_stamp(LIDAR_FILE) * 1e-6)
        assert s["camera_stamp"] == pytest.approx(_stamp(cam["img"]) * 1e-6)
    assert s["points"].shape == (34688, 4) and s["points"].dtype == np.float32
    assert s["ring"].dtype == np.int64 and s["ring"].min() >= 0 and s["ring"].max() == 31
    assert s["sequence"] == "scene-0061" and s["frame_id"] == "smp"


def test_ignoring_ego_motion_misses_lidar2cam(tmp_path: Path, keyframe: tuple[Path, dict]) -> None:
    """With equal ego poses the front camera is off by the ~0.33 m driven in 35 ms."""
    src, calib = keyframe
    _write_tables(tmp_path, src, calib, ego_motion=False)
    s = NuScenesDataset(tmp_path, camera="CAM_FRONT")[0]
    expected = np.array(calib["cams"]["CAM_FRONT"]["lidar2cam"])
    assert np.abs(s["T_cam_lidar"][:3, 3] - expected[:3, 3]).max() > 0.3


def test_layout_errors(tmp_path: Path, keyframe: tuple[Path, dict]) -> None:
    src, calib = keyframe
    with pytest.raises(FileNotFoundError, match="v1.0-mini"):
        NuScenesDataset(tmp_path)
    _write_tables(tmp_path, src, calib, ego_motion=True)
    with pytest.raises(ValueError, match="CAM_NOPE"):
        NuScenesDataset(tmp_path, camera="CAM_NOPE")
    table = tmp_path / "v1.0-mini" / "ego_pose.json"
    records = [r for r in json.loads(table.read_text()) if r["token"] != "ep_CAM_FRONT"]
    table.write_text(json.dumps(records))
    ds = NuScenesDataset(tmp_path)
    with pytest.raises(DataFormatError, match=r"ego_pose\.json.*ep_CAM_FRONT"):
        ds[0]
    (tmp_path / "v1.0-mini" / "sample.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"sample\.json"):
        NuScenesDataset(tmp_path)


def _write_scene_tables(root: Path, scenes: dict[str, int]) -> dict[str, str]:
    """Tables under root/v1.0-mini with scene.json: {scene name: sample count}; returns
    {name: token}. Every sample has a LIDAR_TOP and a CAM_FRONT keyframe (shared files)."""
    table_dir = root / "v1.0-mini"
    table_dir.mkdir(parents=True)
    (root / "samples").mkdir()
    np.zeros((3, 5), np.float32).tofile(root / "samples" / "cloud.pcd.bin")
    cv2.imwrite(str(root / "samples" / "image.png"), np.zeros((4, 6, 3), np.uint8))
    eye = _record(np.eye(4))
    tables: dict[str, list] = {
        "sensor": [{"token": "s_lidar", "channel": "LIDAR_TOP"},
                   {"token": "s_cam", "channel": "CAM_FRONT"}],
        "calibrated_sensor": [
            {**eye, "token": "cs_lidar", "sensor_token": "s_lidar", "camera_intrinsic": []},
            {**eye, "token": "cs_cam", "sensor_token": "s_cam",
             "camera_intrinsic": [[100.0, 0.0, 3.0], [0.0, 100.0, 2.0], [0.0, 0.0, 1.0]]}],
        "ego_pose": [{**eye, "token": "ep", "timestamp": 0}],
        "sample_data": [], "sample": [], "scene": []}
    tokens = {}
    stamp = 1_000_000
    for i, (name, count) in enumerate(scenes.items()):
        tokens[name] = f"{i:02d}c0ffee{i:02d}"
        tables["scene"].append({"token": tokens[name], "name": name, "nbr_samples": count})
        for j in range(count):
            smp, stamp = f"smp_{i}_{j}", stamp + 500_000
            tables["sample"].append({"token": smp, "timestamp": stamp,
                                     "scene_token": tokens[name]})
            for ch, file in (("lidar", "cloud.pcd.bin"), ("cam", "image.png")):
                tables["sample_data"].append(
                    {"token": f"sd_{ch}_{i}_{j}", "sample_token": smp, "ego_pose_token": "ep",
                     "calibrated_sensor_token": f"cs_{ch}", "timestamp": stamp,
                     "is_key_frame": True, "filename": f"samples/{file}"})
    for name, records in tables.items():
        (table_dir / f"{name}.json").write_text(json.dumps(records))
    return tokens


SCENES = {"scene-0061": 2, "scene-0103": 1, "scene-0916": 3}


def test_scenes_select_by_name_or_token(tmp_path: Path) -> None:
    tokens = _write_scene_tables(tmp_path, SCENES)
    assert len(NuScenesDataset(tmp_path)) == 6
    by_name = NuScenesDataset(tmp_path, scenes=["scene-0916", "scene-0103"])
    by_token = NuScenesDataset(tmp_path, scenes=[tokens["scene-0916"], tokens["scene-0103"]])
    mixed = NuScenesDataset(tmp_path, scenes=[tokens["scene-0916"], "scene-0103"])
    for ds in (by_name, by_token, mixed):
        # `sequence` stays the scene token
        assert [s["sequence"] for s in ds] == [tokens["scene-0103"]] + [tokens["scene-0916"]] * 3
    rest = NuScenesDataset(tmp_path, exclude_scenes=["scene-0103", tokens["scene-0916"]])
    assert {s["sequence"] for s in rest} == {tokens["scene-0061"]} and len(rest) == 2
    assert resolve_scenes(tmp_path, "v1.0-mini", ["scene-0061", tokens["scene-0103"]]) == [
        tokens["scene-0061"], tokens["scene-0103"]]
    assert resolve_scenes(tmp_path / "nowhere", "v1.0-mini", []) == []


def test_unknown_scene_names_the_entries_and_the_folder(tmp_path: Path) -> None:
    tokens = _write_scene_tables(tmp_path, SCENES)
    with pytest.raises(ValueError, match=r"\['scene-9999', 'nope'\] in .*v1\.0-mini") as err:
        NuScenesDataset(tmp_path, scenes=["scene-0061", "scene-9999", tokens["scene-0103"],
                                          "nope"])
    assert not isinstance(err.value, DataFormatError)
    with pytest.raises(ValueError, match="scene-9999"):
        NuScenesDataset(tmp_path, exclude_scenes=["scene-9999"])
    (tmp_path / "v1.0-mini" / "scene.json").unlink()
    NuScenesDataset(tmp_path)  # scene.json is read only when scenes are named
    with pytest.raises(FileNotFoundError, match=r"scene\.json"):
        NuScenesDataset(tmp_path, scenes=["scene-0061"])


def _nuscenes_data(root: Path, **splits: list[str]) -> DataConfig:
    return DataConfig(dataset="nuscenes", root=str(root), nuscenes_version="v1.0-mini",
                      camera="CAM_FRONT", **splits)


def test_nuscenes_splits_checked_and_empty_train_is_every_other_scene(tmp_path: Path) -> None:
    tokens = _write_scene_tables(tmp_path, SCENES)
    data = _nuscenes_data(tmp_path, train_split=[], val_split=["scene-0103"])
    assert len(build_pair_dataset(data, train=True, seed=0)) == 5
    assert len(build_pair_dataset(data, train=False, seed=0)) == 1
    data = _nuscenes_data(tmp_path, train_split=["scene-0061"], val_split=["scene-0916"])
    assert len(build_pair_dataset(data, train=True, seed=0)) == 2
    with pytest.raises(ConfigError, match="data.val_split is empty"):
        check_splits(_nuscenes_data(tmp_path, train_split=[], val_split=[]))
    with pytest.raises(ConfigError, match=r"shares scene\(s\) \['scene-0103'\]"):
        check_splits(_nuscenes_data(tmp_path, train_split=[tokens["scene-0103"]],
                                    val_split=["scene-0916", "scene-0103"]))
    with pytest.raises(ConfigError, match=r"data.train_split: unknown .*scene-0000"):
        check_splits(_nuscenes_data(tmp_path, train_split=["scene-0000"],
                                    val_split=["scene-0916"]))
    with pytest.raises(ConfigError, match="data.val_split is empty"):
        build_pair_dataset(_nuscenes_data(tmp_path, train_split=[], val_split=[]), True, 0)
    # other datasets keep their behaviour: nothing checked
    check_splits(DataConfig(train_split=["00"], val_split=["00"]))
    check_splits(DataConfig(dataset="kitti_object", train_split=["training"], val_split=[]))


@pytest.mark.parametrize(("sets", "message"), [
    (["data.val_split=[]"], "data.val_split is empty"),
    (["data.train_split=[scene-0061, scene-0103]", "data.val_split=[scene-0103]"],
     r"shares scene\(s\) \['scene-0103'\]"),
    (["data.val_split=[scene-9999]"], r"data.val_split: unknown nuScenes scene\(s\)"),
])
def test_pretrain_refuses_nuscenes_without_held_out_scenes(
        tmp_path: Path, capsys: pytest.CaptureFixture, sets: list[str], message: str) -> None:
    _write_scene_tables(tmp_path / "nuscenes", SCENES)
    spec = importlib.util.spec_from_file_location("pretrain_script",
                                                  REPO / "training" / "pretrain.py")
    pretrain_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain_script)
    argv = ["--config", str(REPO / "training" / "configs" / "nuscenes.yaml")]
    for item in [f"data.root={tmp_path / 'nuscenes'}", "data.nuscenes_version=v1.0-mini",
                 f"output_root={tmp_path / 'runs'}", "train.device=cpu", *sets]:
        argv += ["--set", item]
    assert pretrain_script.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pretrain.py: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "runs").exists()  # refused before a run folder is made


def test_both_pair_datasets_are_built_with_one_check_of_the_splits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_scene_tables(tmp_path, SCENES)
    data = _nuscenes_data(tmp_path, train_split=[], val_split=["scene-0103"])
    checks = []
    monkeypatch.setattr(datasets, "check_splits", lambda cfg: checks.append(cfg))
    train, val = build_pair_datasets(data, seed=0)
    assert (len(train), len(val), len(checks)) == (5, 1, 1)
    train, val = build_pair_datasets(data, seed=0, validation=False)
    assert (len(train), val, len(checks)) == (5, None, 2)
