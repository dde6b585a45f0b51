"""Cross-modal fusion: keypoint sampling, IDW propagation, attention mixing and masking;
position encodings; overlap head."""
import math

import pytest
import torch

from nclr_core.models.fusion import (
    CrossModalFusion,
    farthest_point_sampling,
    idw_interpolate,
    sample_keypoints,
)
from nclr_core.models.heads import OverlapHead
from nclr_core.models.position_encoding import SinusoidalEncoding

CP, CI = 12, 20


def _fusion(num_keypoints: int = 6, **kwargs) -> CrossModalFusion:
    torch.manual_seed(0)
    return CrossModalFusion(CP, CI, d_model=16, num_heads=2, num_layers=2,
                            num_keypoints=num_keypoints, **kwargs).eval()


def _frame(count: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn((count, CP), generator=gen)
    xyz = torch.randn((count, 3), generator=gen) * 10.0
    image = torch.randn((1, CI, 2, 3), generator=gen)
    return feats, xyz, image


def _batch(frames):
    feats = torch.cat([f for f, _, _ in frames])
    xyz = torch.cat([x for _, x, _ in frames])
    batch = torch.cat([torch.full((f.shape[0],), b) for b, (f, _, _) in enumerate(frames)])
    image = torch.cat([i for _, _, i in frames])
    return feats, xyz, batch, image


def test_fps_hand_case_and_short_frames():
    xyz = torch.zeros((2, 10, 3))
    xyz[0, :, 0] = torch.arange(10.0)
    xyz[1, :2, 0] = torch.tensor([0.0, 1.0])
    valid = torch.zeros((2, 10), dtype=torch.bool)
    valid[0] = True
    valid[1, :2] = True
    chosen = farthest_point_sampling(xyz, valid, 3)
    assert chosen[0].tolist() == [0, 9, 4]
    assert set(chosen[1, :2].tolist()) == {0, 1}

    index, key_valid = sample_keypoints(
        xyz[valid], torch.tensor([0] * 10 + [1] * 2), 2, 3, "fps"
    )
    assert index[0].tolist() == [0, 9, 4]
    assert key_valid.tolist() == [[True, True, True], [True, True, False]]
    assert set(index[1, :2].tolist()) == {10, 11}


def test_random_sampling_stays_in_frame_without_repeats():
    batch = torch.tensor([1, 0, 1, 1, 0, 1, 1])
    index, valid = sample_keypoints(torch.randn(7, 3), batch, 2, 4, "random")
    assert valid.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert set(index[0, :2].tolist()) == {1, 4}
    assert len(set(index[1].tolist())) == 4 and bool((batch[index[1]] == 1).all())
    with pytest.raises(ValueError, match="sampling"):
        sample_keypoints(torch.randn(7, 3), batch, 2, 4, "grid")


def test_idw_exact_on_hand_case():
    keys = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]]])
    feats = torch.tensor([[[1.0, 0], [0, 1], [2, 2], [9, 9]]])
    valid = torch.tensor([[True, True, True, False]])
    query = torch.tensor([[1.0, 0, 0], [0.5, 0, 0], [5, 5, 5]])
    out = idw_interpolate(query, torch.zeros(3, dtype=torch.long), keys, feats, valid, k=3)
    torch.testing.assert_close(out[0], feats[0, 1])  # a keypoint itself: its own feature
    w = torch.tensor([1 / 0.5, 1 / 0.5, 1 / math.sqrt(1.25)])
    expected = (w[:, None] * feats[0, :3]).sum(0) / w.sum()
    torch.testing.assert_close(out[1], expected)
    # The padded key at (5, 5, 5) is never used.
    d = torch.tensor([math.sqrt(75), math.sqrt(66), math.sqrt(66)])
    expected = ((1 / d)[:, None] * feats[0, :3]).sum(0) / (1 / d).sum()
    torch.testing.assert_close(out[2], expected)


def test_cross_attention_weights_are_separate_per_direction():
    fusion = _fusion()
    for layer in fusion.layers:
        a, b = layer.cross_attn_point_from_image, layer.cross_attn_image_from_point
        assert a is not b
        ptrs_a = {p.data_ptr() for p in a.parameters()}
        assert ptrs_a.isdisjoint(p.data_ptr() for p in b.parameters())
        assert not torch.equal(a.in_proj_weight, b.in_proj_weight)


def test_outputs_mix_modalities_and_keep_shapes():
    fusion = _fusion()
    feats, xyz, batch, image = _batch([_frame(9, 1), _frame(4, 2)])
    with torch.no_grad():
        p_out, i_out = fusion(feats, xyz, batch, image)
        assert p_out.shape == feats.shape and i_out.shape == image.shape
        p_img, _ = fusion(feats, xyz, batch, image + torch.randn_like(image))
        _, i_pts = fusion(feats + torch.randn_like(feats), xyz, batch, image)
    assert (p_img - p_out).abs().max() > 1e-4  # image changes -> point output changes
    assert (i_pts - i_out).abs().max() > 1e-4  # points change -> image output changes


def test_frames_are_independent_under_padding():
    fusion = _fusion(num_keypoints=6)
    small = _frame(4, 3)  # fewer voxels than keypoints: padded in a batch
    with torch.no_grad():
        p_alone, i_alone = fusion(*_batch([small]))
        p_pair, i_pair = fusion(*_batch([small, _frame(9, 4)]))
        p_other, i_other = fusion(*_batch([small, _frame(7, 5)]))
    torch.testing.assert_close(p_pair[:4], p_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(i_pair[:1], i_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p_other[:4], p_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(i_other[:1], i_alone, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    fusion = _fusion().train()
    feats, xyz, batch, image = _batch([_frame(9, 1), _frame(4, 2)])
    feats.requires_grad_(True)
    p_out, i_out = fusion(feats, xyz, batch, image)
    gen = torch.Generator().manual_seed(0)
    loss = (p_out * torch.randn(p_out.shape, generator=gen)).sum() + (
        i_out * torch.randn(i_out.shape, generator=gen)
    ).sum()
    loss.backward()
    no_grad = [n for n, p in fusion.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_bad_inputs_raise():
    fusion = _fusion()
    feats, xyz, batch, image = _batch([_frame(5, 1), _frame(4, 2)])
    with pytest.raises(ValueError, match="frames needs bottleneck voxels"):
        fusion(feats, xyz, torch.zeros_like(batch), image)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        fusion(feats, xyz, batch + 1, image)
    with pytest.raises(ValueError, match="image_map"):
        fusion(feats, xyz, batch, image[:, :3])
    with pytest.raises(ValueError, match="point_feats"):
        fusion(feats[:, :3], xyz, batch, image)
    with pytest.raises(ValueError, match="divisible"):
        CrossModalFusion(CP, CI, d_model=10, num_heads=3)


def test_sinusoidal_encoding_values():
    enc = SinusoidalEncoding(3, 14, min_wavelength=2.0, max_wavelength=8.0)  # 2 freqs per axis
    out = enc(torch.tensor([[0.5, 0.0, 2.0]]))
    assert out.shape == (1, 14)
    # layout per axis: sin(f1), sin(f2), cos(f1), cos(f2); wavelengths 2 and 8
    expected_x = [math.sin(math.pi * 0.5), math.sin(math.pi * 0.125),
                  math.cos(math.pi * 0.5), math.cos(math.pi * 0.125)]
    torch.testing.assert_close(out[0, :4], torch.tensor(expected_x))
    torch.testing.assert_close(out[0, 4:8], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(out[0, 12:], torch.zeros(2))  # leftover channels


def test_overlap_head_shapes():
    head = OverlapHead(8)
    assert head(torch.randn(5, 8)).shape == (5,)
    assert head(torch.randn(2, 3, 4, 8)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="last dimension 8"):
        head(torch.randn(5, 7))
