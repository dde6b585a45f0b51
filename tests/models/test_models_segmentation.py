import numpy as np
import pytest
import torch

from nclr_core.models.segmentation import (
    SegmentationNet,
    instance_center_offsets,
    mean_shift,
)

BACKBONE = {"variant": "minkunet18", "in_channels": 4, "out_channels": 8, "voxel_size": 0.5,
            "base_channels": 4, "point_range": [-8.0, -8.0, -2.0, 8.0, 8.0, 2.0]}


def _cloud(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([14.0, 14.0, 3.0])
    return torch.cat((xyz, torch.rand(n, 1, generator=g)), dim=1)


def test_forward_backward_on_a_tiny_batch_reaches_every_parameter():
    model = SegmentationNet(BACKBONE, num_classes=5, instance_head=True, thing_classes=[0, 1])
    points = torch.cat((_cloud(300, 0), _cloud(200, 1)))
    offset = torch.tensor([300, 500])
    labels = torch.randint(0, 5, (500,), generator=torch.Generator().manual_seed(2))
    labels[:20] = 255
    instances = torch.where(labels <= 1, 1 + (points[:, 0] > 0).long(), 0)
    out = model(points, offset)
    assert out["logits"].shape == (500, 5) and out["offsets"].shape == (500, 3)
    losses = model.loss(out, points, offset, labels, instances)
    assert set(losses) == {"loss", "loss_sem", "loss_offset"}
    assert torch.isfinite(losses["loss"]) and losses["loss_offset"] > 0
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    # given labels, the forward returns the same losses beside its outputs (the training
    # loop's contract: {"loss": ...})
    with torch.no_grad():
        labelled = model(points, offset, labels, instances)
    assert set(labelled) == {"logits", "offsets", "loss", "loss_sem", "loss_offset"}
    for key, value in losses.items():
        torch.testing.assert_close(labelled[key], value.detach())


def test_semantic_only_model_and_all_ignored_labels():
    model = SegmentationNet(BACKBONE, num_classes=3)
    points = _cloud(100, 3)
    out = model(points, torch.tensor([100]))
    assert set(out) == {"logits"}
    losses = model.loss(out, points, torch.tensor([100]), torch.full((100,), 255))
    assert float(losses["loss"].detach()) == 0.0
    losses["loss"].backward()  # still a graph: a batch of unlabelled points is harmless


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="thing_classes"):
        SegmentationNet(BACKBONE, num_classes=3, instance_head=True)
    with pytest.raises(ValueError, match=r"thing_classes \[7\]"):
        SegmentationNet(BACKBONE, num_classes=3, thing_classes=[7])


def test_instance_center_offsets_point_to_the_mean_per_frame_class_and_instance():
    xyz = torch.tensor([[0.0, 0, 0], [2, 0, 0], [10, 0, 0], [0, 4, 0], [5, 5, 5]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    labels = torch.tensor([0, 0, 0, 0, 3])
    instances = torch.tensor([1, 1, 2, 1, 0])  # id 1 in frame 0 and frame 1 are different
    valid = instances > 0
    target = instance_center_offsets(xyz, batch, labels, instances, valid)
    expected = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    torch.testing.assert_close(target, expected)
    # the same instance id on points of two classes: two instances
    labels = torch.tensor([0, 1, 0, 0, 3])
    target = instance_center_offsets(xyz, batch, labels, instances, valid)
    torch.testing.assert_close(target[:2], torch.zeros(2, 3))


def test_mean_shift_separates_two_blobs_and_drops_small_clusters():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(120, 3, generator=g) * 0.3
    b = torch.randn(80, 3, generator=g) * 0.3 + torch.tensor([6.0, 0.0, 0.0])
    stray = torch.tensor([[20.0, 20.0, 0.0]] * 3)
    ids = mean_shift(torch.cat((a, b, stray)), bandwidth=1.2, min_points=50)
    assert torch.all(ids[:120] == 1) and torch.all(ids[120:200] == 2)  # ordered by size
    assert torch.all(ids[200:] == 0)
    assert mean_shift(torch.zeros(0, 3), 1.2, 50).shape == (0,)


def test_panoptic_prediction_votes_the_class_of_each_instance():
    model = SegmentationNet(BACKBONE, num_classes=3, instance_head=True, thing_classes=[0, 1],
                            cluster_min_points=5)
    g = torch.Generator().manual_seed(1)
    xyz = torch.cat((torch.randn(30, 3, generator=g) * 0.2,
                     torch.randn(30, 3, generator=g) * 0.2 + 5, torch.zeros(10, 3)))
    semantic = torch.tensor([0] * 28 + [1] * 2 + [1] * 30 + [2] * 10)
    sem, inst = model.predict_instances(xyz, semantic, torch.zeros(70, 3))
    assert torch.all(sem[:30] == 0) and torch.all(sem[30:60] == 1) and torch.all(sem[60:] == 2)
    assert set(inst[:30].tolist()) == {1} and set(inst[30:60].tolist()) == {2}
    assert torch.all(inst[60:] == 0)  # stuff points carry no instance


def test_segmenter_labels_every_point_of_a_real_kitti_scan(real_data):
    from nclr_core.segmenter import Segmenter

    path = real_data / "kitti_object" / "training" / "velodyne" / "000001.bin"
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    torch.manual_seed(0)
    model = SegmentationNet({**BACKBONE, "voxel_size": 1.0,
                             "point_range": [-16.0, -16.0, -3.0, 16.0, 16.0, 1.0]}, 3)
    segmenter = Segmenter(model, ["a", "b", "c"])
    result = segmenter.run(points)
    assert result.labels.shape == (len(points),) and result.labels.dtype == np.uint16
    assert result.labels.max() < 3
    assert np.all((result.confidence >= 1 / 3 - 1e-6) & (result.confidence <= 1))
    xyz = points[:, :3]
    inside = np.all((xyz >= [-16, -16, -3]) & (xyz <= [16, 16, 1]), axis=1)
    np.testing.assert_array_equal(result.in_range, inside)
    assert 0 < inside.sum() < len(points)
    labels, confidence = segmenter.segment(points[:10])
    assert labels.shape == confidence.shape == (10,)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        segmenter.segment(points[:, :3])
