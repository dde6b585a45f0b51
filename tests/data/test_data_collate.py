"""Offset batching of pair samples (nclr_core.data.collate)."""
import numpy as np
import pytest
import torch

from nclr_core.data.collate import batch_to, collate_pairs


def _sample(n: int, seed: int, h: int = 8, w: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(3, h, w)).astype(np.float32),
        "points": rng.normal(size=(n, 4)).astype(np.float32),
        "K": np.diag([10.0 + seed, 11.0, 1.0]),
        "T_gt": np.eye(4) + seed,
        "point_overlap": rng.random(n) < 0.5,
        "point_pixel": rng.normal(size=(n, 2)).astype(np.float32),
        "image_overlap": rng.random((h // 4, w // 4)) < 0.5,
        "labels": rng.integers(0, 20, size=n),
        "stamp": 100.0 + seed,
        "frame_id": f"{seed:06d}",
        "rng": rng,
    }


def test_offsets_and_concatenation_for_unequal_counts() -> None:
    samples = [_sample(5, 0), _sample(0, 1), _sample(3, 2)]
    batch = collate_pairs(samples)
    assert batch["offset"].dtype == torch.int64
    assert batch["offset"].tolist() == [5, 5, 8]
    assert batch["points"].shape == (8, 4) and batch["points"].dtype == torch.float32
    starts = [0, *batch["offset"][:-1].tolist()]
    for s, start, end in zip(samples, starts, batch["offset"].tolist(), strict=True):
        for key in ("points", "point_overlap", "point_pixel", "labels"):
            np.testing.assert_array_equal(batch[key][start:end].numpy(), s[key])


def test_dtypes_and_shapes_follow_the_contract() -> None:
    batch = collate_pairs([_sample(4, 0), _sample(6, 1)])
    assert batch["image"].shape == (2, 3, 8, 12) and batch["image"].dtype == torch.float32
    assert batch["K"].shape == (2, 3, 3) and batch["K"].dtype == torch.float32
    assert batch["K"][1, 0, 0].item() == 11.0
    assert batch["T_gt"].shape == (2, 4, 4) and batch["T_gt"].dtype == torch.float32
    assert batch["image_overlap"].shape == (2, 2, 3) and batch["image_overlap"].dtype == torch.bool
    assert batch["point_overlap"].dtype == torch.bool
    assert batch["point_pixel"].shape == (10, 2) and batch["point_pixel"].dtype == torch.float32
    assert batch["labels"].dtype == torch.int64
    assert batch["stamp"].dtype == torch.float64 and batch["stamp"].tolist() == [100.0, 101.0]
    assert batch["frame_id"] == ["000000", "000001"]
    assert "rng" not in batch and "T_init" not in batch


def test_bad_batches_raise() -> None:
    with pytest.raises(ValueError, match="at least one"):
        collate_pairs([])
    with pytest.raises(ValueError, match="differs"):
        collate_pairs([_sample(2, 0), _sample(2, 1, h=16)])
    partial = _sample(2, 1)
    del partial["T_gt"]
    with pytest.raises(ValueError, match="'T_gt' is present in 1 of 2"):
        collate_pairs([_sample(2, 0), partial])
    raw = _sample(2, 0)
    raw["image"] = np.zeros((8, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="NormalizeImage"):
        collate_pairs([raw])
    short = _sample(3, 0)
    short["labels"] = short["labels"][:2]
    with pytest.raises(ValueError, match="'labels' has 2 rows"):
        collate_pairs([short])


def test_batch_to_moves_tensors_and_keeps_the_rest() -> None:
    batch = collate_pairs([_sample(3, 0)])
    moved = batch_to(batch, torch.device("meta"))
    assert moved["points"].device.type == "meta"
    assert moved["offset"].device.type == "meta"
    assert moved["frame_id"] is batch["frame_id"]
    assert batch["points"].device.type == "cpu"
