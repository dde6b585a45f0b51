"""The exported nuScenes keyframe folder (../shared/data/real/nuscenes_keyframe)."""
import json
from pathlib import Path

import numpy as np
import pytest

from nclr_core.data.files import DataFormatError
from nclr_core.data.nuscenes_keyframe import NuScenesKeyframeDataset
from nclr_core.geometry.projection import project_points


def test_every_camera_is_a_sample_whose_points_land_in_its_image(real_data: Path):
    root = real_data / "nuscenes_keyframe"
    calib = json.loads((root / "calib.json").read_text())
    dataset = NuScenesKeyframeDataset(root)
    assert len(dataset) == 6 and dataset.cameras == sorted(calib["cams"])
    for sample in dataset:
        channel = sample["camera_frame"]
        np.testing.assert_array_equal(sample["T_cam_lidar"], calib["cams"][channel]["lidar2cam"])
        assert sample["points"].shape == (34688, 4) and sample["ring"].max() == 31
        assert abs(sample["camera_stamp"] - sample["stamp"]) < 0.05
        h, w = sample["image"].shape[:2]
        projection = project_points(sample["points"][:, :3], sample["T_cam_lidar"],
                                    sample["K"], (h, w))
        assert projection.in_image.sum() > 1000, channel  # each camera sees part of the sweep


def test_unknown_camera_and_broken_calib_are_named(real_data: Path, tmp_path: Path):
    root = real_data / "nuscenes_keyframe"
    with pytest.raises(ValueError, match="no camera CAM_TOP"):
        NuScenesKeyframeDataset(root, cameras=["CAM_TOP"])
    (tmp_path / "calib.json").write_text("{")
    with pytest.raises(DataFormatError, match="not a keyframe calib.json"):
        NuScenesKeyframeDataset(tmp_path)


def test_intensity_is_brought_to_zero_one(real_data: Path):
    from nclr_core.data.files import read_bin_points

    root = real_data / "nuscenes_keyframe"
    raw = read_bin_points(next(root.glob("*LIDAR_TOP*.pcd.bin")), 5)[:, 3]
    points = NuScenesKeyframeDataset(root, cameras=["CAM_FRONT"])[0]["points"]
    assert raw.max() > 1.0 and points[:, 3].max() <= 1.0
    np.testing.assert_allclose(points[:, 3], raw / 255.0, rtol=1e-6)
