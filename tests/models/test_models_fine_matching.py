"""FineMatcher: windows, the soft-argmax's sub-pixel answer, its loss, and that it learns."""
import math

import pytest
import torch
import torch.nn.functional as F

from nclr_core.models.fine_matching import FineMatcher

H2, W2 = 24, 40  # fine map (stride 2): a 48 x 80 image


def _position_code(uv: torch.Tensor, wavelengths=(9.0, 13.0, 23.0, 37.0)) -> torch.Tensor:
    """(..., 2) pixels -> (..., 16) smooth code: cosine similarity of two codes falls off
    smoothly with the distance of their pixels, peaking where they coincide."""
    parts = []
    for lam in wavelengths:
        phase = 2 * math.pi * uv / lam
        parts += [phase.cos(), phase.sin()]
    return torch.cat(parts, -1)


def _oracle_map() -> torch.Tensor:
    """(16, H2, W2) fine map: each cell carries the code of its centre (2j, 2i)."""
    rows, cols = torch.meshgrid(torch.arange(H2) * 2.0, torch.arange(W2) * 2.0, indexing="ij")
    return _position_code(torch.stack((cols, rows), -1)).permute(2, 0, 1)


def test_refine_finds_the_true_pixel_from_coarse_errors_to_sub_pixel():
    matcher = FineMatcher(16, 8, channels=16, window_radius=5, temperature=0.1)
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(200, 2, generator=gen) * torch.tensor([60.0, 28.0]) + 10.0
    coarse = truth + (torch.rand(200, 2, generator=gen) * 2 - 1) * 6.0  # coarse errors ±6 px
    with torch.no_grad():
        refined, spread = matcher.refine(_position_code(truth), _oracle_map(), coarse)
    error = (refined - truth).norm(dim=1)
    assert float((coarse - truth).norm(dim=1).median()) > 3.0
    assert float(error.max()) < 0.4 and float(error.median()) < 0.2  # sub-pixel
    assert float((refined - truth).mean(0).abs().max()) < 0.05  # no bias
    assert spread.shape == (200,) and bool((spread > 0).all())


def test_windows_at_the_border_stay_inside_the_image():
    matcher = FineMatcher(16, 8, channels=16, window_radius=3, temperature=0.1,
                          train_jitter_px=4.0)
    truth = torch.tensor([[0.0, 0.0], [78.0, 46.0], [0.0, 46.0]])
    coarse = torch.tensor([[-30.0, -5.0], [95.0, 60.0], [3.0, 50.0]])  # even off the image
    with torch.no_grad():
        refined, _ = matcher.refine(_position_code(truth), _oracle_map(), coarse)
    assert bool(torch.isfinite(refined).all())
    assert bool((refined[:, 0] >= 0).all() and (refined[:, 0] <= 78).all())
    assert bool((refined[:, 1] >= 0).all() and (refined[:, 1] <= 46).all())
    assert float((refined - truth).norm(dim=1).max()) < 1.0


def test_loss_is_lower_for_the_oracle_and_reaches_every_parameter():
    torch.manual_seed(0)
    matcher = FineMatcher(16, 8, channels=16, window_radius=5, temperature=0.02)
    truth = torch.rand(64, 2) * torch.tensor([60.0, 28.0]) + 10.0
    oracle = matcher.loss(_position_code(truth), _oracle_map(), truth).mean()
    noise = matcher.loss(torch.randn(64, 16), _oracle_map(), truth).mean()
    assert float(oracle) < 0.5 * float(noise)
    stem = torch.randn(1, 8, H2, W2)
    coarse = torch.randn(1, 16, H2 // 2, W2 // 2)
    loss = matcher.loss(matcher.point_features(torch.randn(64, 16)),
                        matcher.image_features(stem, coarse)[0], truth).mean()
    loss.backward()
    missing = [n for n, p in matcher.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_fine_stage_learns_to_localise_on_a_textured_image():
    """A random texture seen by the stem; each point's feature is the coarse descriptor
    of the texture around its true pixel. Trained with its own loss for 150 steps, the
    stage refines coarse guesses ±5 px off to well under a pixel."""
    torch.manual_seed(0)
    texture = F.avg_pool2d(torch.randn(1, 4, 2 * H2, 2 * W2), 3, 1, 1)  # the "image"
    stem = F.avg_pool2d(texture, 2)  # (1, 4, H2, W2), cell j at pixel 2j + 0.5: shift below
    coarse = F.avg_pool2d(texture, 4)  # (1, 4, H2/2, W2/2)

    def descriptor(uv: torch.Tensor) -> torch.Tensor:
        """Texture patch (5x5 px) at pixels uv (P, 2), bilinearly sampled: (P, 100)."""
        offsets = torch.stack(torch.meshgrid(torch.arange(-2.0, 3), torch.arange(-2.0, 3),
                                             indexing="xy"), -1).reshape(-1, 2)
        at = uv[:, None, :] + offsets  # (P, 25, 2)
        size = torch.tensor([2 * W2 - 1.0, 2 * H2 - 1.0])
        grid = (at / size * 2 - 1)[None]
        sampled = F.grid_sample(texture, grid, align_corners=True)  # (1, 4, P, 25)
        return sampled[0].permute(1, 0, 2).reshape(len(uv), -1)

    matcher = FineMatcher(100, 4, channels=32, window_radius=4, train_jitter_px=5.0)
    lift = torch.nn.Conv2d(4, 100, 1)  # the coarse F^I of this toy: the coarse map lifted
    optimizer = torch.optim.Adam([*matcher.parameters(), *lift.parameters()], lr=3e-3)

    def error(count: int = 300) -> float:
        truth = torch.rand(count, 2) * torch.tensor([2 * W2 - 21.0, 2 * H2 - 21.0]) + 10
        coarse_px = truth + (torch.rand(count, 2) * 2 - 1) * 5.0
        with torch.no_grad():
            fine = matcher.image_features(stem, lift(coarse))[0]
            refined, _ = matcher.refine(matcher.point_features(descriptor(truth)), fine,
                                        coarse_px)
        return float((refined - truth).norm(dim=1).median())

    before = error()
    for _ in range(150):
        truth = torch.rand(128, 2) * torch.tensor([2 * W2 - 21.0, 2 * H2 - 21.0]) + 10
        fine = matcher.image_features(stem, lift(coarse))[0]
        loss = matcher.loss(matcher.point_features(descriptor(truth)), fine, truth).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = error()
    assert before > 2.0 and after < 1.0, (before, after)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="jitter"):
        FineMatcher(16, 8, window_radius=3, train_jitter_px=6.0)
    with pytest.raises(ValueError, match="positive"):
        FineMatcher(16, 8, temperature=0.0)
    matcher = FineMatcher(16, 8, channels=16)
    with pytest.raises(ValueError, match="coarse_pixels"):
        matcher.refine(torch.zeros(3, 16), _oracle_map(), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="image_fine"):
        matcher.refine(torch.zeros(3, 16), torch.zeros(8, 4, 4), torch.zeros(3, 2))
