"""Image branch: ResNet stages (strides 4..32), FPN output at stride 4, weight loading."""
import pytest
import torch

from nclr_core.models.image_encoder import ImageEncoder
from nclr_core.models.resnet import ResNet

# torchvision's published parameter counts minus the 1000-class head (fc: 512/2048 * 1000 + 1000)
TORCHVISION_PARAMS_WITHOUT_FC = {
    18: 11_689_512 - 513_000,
    34: 21_797_672 - 513_000,
    50: 25_557_032 - 2_049_000,
}


def _images(batch: int = 2, h: int = 64, w: int = 96) -> torch.Tensor:
    return torch.randn((batch, 3, h, w), generator=torch.Generator().manual_seed(0))


def test_stage_and_output_strides():
    torch.manual_seed(0)
    enc = ImageEncoder(depth=18, out_channels=24, fpn_channels=32)
    stages = enc.encode(_images())
    assert [tuple(s.shape) for s in stages] == [
        (2, 64, 16, 24), (2, 128, 8, 12), (2, 256, 4, 6), (2, 512, 2, 3)
    ]
    f_i = enc.decode(stages)
    assert tuple(f_i.shape) == (2, 24, 64 // 4, 96 // 4)
    assert enc.bottleneck_channels == 512
    assert enc.output_stride == 4 and enc.bottleneck_stride == 32


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnet_matches_torchvision_layout(depth):
    net = ResNet(depth)
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS_WITHOUT_FC[depth]
    expected = (256, 512, 1024, 2048) if depth == 50 else (64, 128, 256, 512)
    assert net.stage_channels == expected


def test_resnet50_bottleneck_channels():
    enc = ImageEncoder(depth=50, out_channels=16, fpn_channels=16)
    assert enc.bottleneck_channels == 2048
    assert enc.lateral[-1].in_channels == 2048


def test_decode_uses_replaced_bottleneck_and_gradients_reach_all_parameters():
    torch.manual_seed(0)
    enc = ImageEncoder(depth=18, out_channels=8, fpn_channels=16)
    stages = enc.encode(_images(h=64, w=64))
    base = enc.decode(stages)
    changed = enc.decode(stages[:-1] + [stages[-1] + 1.0])
    assert not torch.allclose(base, changed)
    weights = torch.randn(base.shape, generator=torch.Generator().manual_seed(1))
    (base * weights).sum().backward()
    no_grad = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_bad_inputs_raise():
    enc = ImageEncoder(depth=18, out_channels=8, fpn_channels=8)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        enc.encode(torch.zeros(1, 1, 32, 32))
    stages = enc.encode(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="4 stage maps"):
        enc.decode(stages[:3])
    with pytest.raises(ValueError, match="stage map"):
        enc.decode(stages[:3] + [torch.zeros(2, 16, 2, 2)])
    with pytest.raises(ValueError, match="depth"):
        ImageEncoder(depth=101)


def test_load_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    src = ResNet(18)
    for p in src.parameters():
        p.data.normal_()
    state = {k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    enc = ImageEncoder(depth=18, out_channels=8, fpn_channels=8)
    enc.load_torchvision_state_dict(path)
    for key, value in src.state_dict().items():
        assert torch.equal(enc.backbone.state_dict()[key], value), key

    with pytest.raises(ValueError, match="resnet18.pth"):
        ImageEncoder(depth=34, out_channels=8, fpn_channels=8).load_torchvision_state_dict(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        enc.load_torchvision_state_dict(tmp_path / "missing.pth")


def test_narrow_resnet_keeps_strides_and_scales_widths():
    encoder = ImageEncoder(18, out_channels=16, fpn_channels=16, base_channels=32)
    assert encoder.stage_channels == (32, 64, 128, 256)
    stages = encoder.encode(torch.zeros(1, 3, 64, 96))
    assert [s.shape[-1] for s in stages] == [24, 12, 6, 3]
    assert encoder.decode(stages).shape == (1, 16, 16, 24)
    with pytest.raises(ValueError, match="base_channels"):
        ResNet(18, base_channels=0)
    with pytest.raises(ValueError, match="upsampling"):
        ImageEncoder(depth=18, out_channels=8, fpn_channels=8, upsampling="nearest")
