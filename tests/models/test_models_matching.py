"""Soft / hard point-to-cell matching."""
import pytest
import torch

from nclr_core.models.feature_grid import cell_centers
from nclr_core.models.matching import HardMatcher, SoftMatcher, build_matcher


def _one_hot_similarity(targets: torch.Tensor, m: int, scale: float) -> torch.Tensor:
    sim = torch.zeros(targets.numel(), m)
    sim[torch.arange(targets.numel()), targets] = scale
    return sim


def test_soft_matching_one_hot_gives_exact_cell_centres():
    cells = cell_centers(5, 7, 4)
    targets = torch.tensor([0, 3, 34, 17, 17])
    sim = _one_hot_similarity(targets, cells.shape[0], 1e3)
    mask = torch.ones(cells.shape[0], dtype=torch.bool)
    pixels, conf = SoftMatcher()(sim, cells, mask)
    assert torch.equal(pixels, cells[targets])
    assert torch.equal(conf, torch.ones(5))


def test_soft_matching_is_weighted_mean_and_respects_mask():
    cells = torch.tensor([[1.5, 1.5], [5.5, 1.5], [9.5, 1.5]])
    sim = torch.tensor([[0.0, 0.0, 10.0]])
    mask = torch.tensor([True, True, False])
    pixels, conf = SoftMatcher()(sim, cells, mask)
    # cell 2 is masked out: equal weights on cells 0 and 1
    torch.testing.assert_close(pixels, torch.tensor([[3.5, 1.5]]))
    torch.testing.assert_close(conf, torch.tensor([0.5]))
    # a small temperature sharpens the weights onto the best cell
    sim2 = torch.tensor([[0.0, 1.0, 0.0]])
    everything = torch.ones(3, dtype=torch.bool)
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 0.0]])
    p_soft, _ = SoftMatcher(temperature=1.0)(sim2, line, everything)
    p_sharp, _ = SoftMatcher(temperature=0.01)(sim2, cells, everything)
    assert p_soft[0, 0] > 1.1
    torch.testing.assert_close(p_sharp, torch.tensor([[5.5, 1.5]]))


def test_soft_matching_has_gradient():
    cells = cell_centers(3, 3, 4)
    sim = torch.randn(4, 9, requires_grad=True)
    pixels, conf = SoftMatcher()(sim, cells, torch.ones(9, dtype=torch.bool))
    (pixels.sum() + conf.sum()).backward()
    assert sim.grad is not None and sim.grad.abs().sum() > 0


def test_hard_matching_returns_argmax_among_allowed():
    cells = cell_centers(2, 3, 4)
    sim = torch.tensor([[0.0, 5.0, 1.0, 2.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    mask = torch.tensor([True, True, True, True, True, False])
    pixels, conf = HardMatcher()(sim, cells, mask)
    assert torch.equal(pixels, cells[torch.tensor([1, 0])])
    expected = torch.softmax(sim[:, :5], dim=1).max(dim=1).values
    torch.testing.assert_close(conf, expected)


def test_bad_inputs_raise():
    cells = cell_centers(2, 2, 4)
    m = SoftMatcher()
    with pytest.raises(ValueError, match="allows no cell"):
        m(torch.zeros(3, 4), cells, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="cell_pixels"):
        m(torch.zeros(3, 5), cells, torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="cell_mask"):
        m(torch.zeros(3, 4), cells, torch.ones(4))
    with pytest.raises(ValueError, match="matching mode"):
        build_matcher("nearest")
    assert isinstance(build_matcher("hard"), HardMatcher)
