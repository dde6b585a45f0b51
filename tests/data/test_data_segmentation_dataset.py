import numpy as np
import pytest

from nclr_core.data.segmentation_dataset import (
    AugmentPoints,
    SegmentationDataset,
    collate_points,
    segmentation_transform,
)
from nclr_core.data.transforms import RNG_KEY, sample_rng


class _Reader:
    """Two labelled frames of 6 points (frame 1 without instances) and an unlabelled one."""

    def __init__(self) -> None:
        xyz = np.array([[1, 0, 0], [0, 2, 0], [3, 3, -1], [50, 0, 0], [-4, 1, 0.5],
                        [0, 0, 9]], dtype=np.float32)
        self.frames = [
            {"points": np.c_[xyz, np.arange(6, dtype=np.float32)], "labels": np.arange(6),
             "instances": np.arange(6) * 10, "sequence": "00", "frame_id": "000000"},
            {"points": np.c_[xyz, np.zeros(6, dtype=np.float32)], "labels": np.zeros(6, int),
             "sequence": "00", "frame_id": "000001"},
            {"points": np.c_[xyz, np.zeros(6, dtype=np.float32)], "sequence": "00",
             "frame_id": "000002"},
        ]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in self.frames[i].items()}


def test_augmentation_moves_points_rigidly_and_keeps_labels_aligned():
    augment = AugmentPoints(np.pi, (1.0, 1.0), 0.5)
    transform = segmentation_transform((-10, -10, -2, 10, 10, 2), None, augment)
    dataset = SegmentationDataset(_Reader(), [0], transform, seed=4)
    sample = dataset[0]
    # the far (x = 50) and high (z = 9) points are cropped, the others kept in order
    np.testing.assert_array_equal(sample["labels"], [0, 1, 2, 4])
    np.testing.assert_array_equal(sample["instances"], [0, 10, 20, 40])
    np.testing.assert_array_equal(sample["points"][:, 3], [0, 1, 2, 4])  # intensity kept
    original = _Reader()[0]["points"][[0, 1, 2, 4], :3]
    np.testing.assert_allclose(np.linalg.norm(sample["points"][:, :3], axis=1),
                               np.linalg.norm(original, axis=1), rtol=1e-6)
    np.testing.assert_allclose(sample["points"][:, 2], original[:, 2])
    assert not np.allclose(sample["points"][:, :2], original[:, :2])
    again = dataset[0]
    np.testing.assert_array_equal(again["points"], sample["points"])  # (seed, epoch, index)
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[0]["points"], sample["points"])


def test_scale_and_flip():
    sample = {"points": np.array([[1.0, 2.0, 3.0, 0.5]], dtype=np.float32),
              RNG_KEY: sample_rng(0, 0, 0)}
    out = AugmentPoints(0.0, (2.0, 2.0), 1.0)(sample)
    np.testing.assert_allclose(out["points"], [[2.0, -4.0, 6.0, 0.5]])


def test_collate_concatenates_with_offsets_and_fills_missing_instances():
    transform = segmentation_transform((-10, -10, -2, 10, 10, 2), None, None)
    dataset = SegmentationDataset(_Reader(), [0, 1], transform, seed=0)
    batch = collate_points([dataset[0], dataset[1]])
    assert batch["points"].shape == (8, 4) and batch["offset"].tolist() == [4, 8]
    assert batch["labels"].tolist() == [0, 1, 2, 4, 0, 0, 0, 0]
    assert batch["instances"].tolist()[4:] == [0, 0, 0, 0]
    assert batch["frame_id"] == ["000000", "000001"]


def test_unlabelled_frame_and_bad_arguments_raise():
    transform = segmentation_transform((-10, -10, -2, 10, 10, 2), None, None)
    with pytest.raises(ValueError, match="frame 00/000002 has no labels"):
        SegmentationDataset(_Reader(), [2], transform, seed=0)[0]
    empty = segmentation_transform((100, 100, 100, 101, 101, 101), None, None)
    with pytest.raises(ValueError, match="no point inside the point range"):
        SegmentationDataset(_Reader(), [0], empty, seed=0)[0]
    with pytest.raises(ValueError, match="flip_probability"):
        AugmentPoints(0.0, (1.0, 1.0), 2.0)
    with pytest.raises(ValueError, match="no frames"):
        SegmentationDataset(_Reader(), [], transform, seed=0)
