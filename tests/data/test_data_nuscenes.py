"""nuScenes reader: table composition, ego motion, and the real keyframe rebuilt as tables."""
import json
from pathlib import Path

import numpy as np
import pytest

from nclr_core.data.files import DataFormatError
from nclr_core.data.nuscenes import NuScenesDataset, nuscenes_T_cam_lidar
from nclr_core.geometry.se3 import (
    compose,
    invert,
    make_transform,
    matrix_from_rpy,
    quaternion_xyzw_from_matrix,
    transform_points,
)

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
