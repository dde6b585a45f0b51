"""Learnable transformation alignment: W_f = Q D Qᵀ, symmetric, identity at start."""
import pytest
import torch
import torch.nn.functional as F

from nclr_core.models.alignment import TransformationAlignment


def _cosine_over_tau(p: torch.Tensor, i: torch.Tensor, tau: float) -> torch.Tensor:
    return F.normalize(p, dim=-1) @ F.normalize(i, dim=-1).transpose(-1, -2) / tau


def test_init_similarity_equals_cosine_over_tau():
    torch.manual_seed(0)
    lta = TransformationAlignment(16, mode="lta", temperature=0.07)
    p, i = torch.randn(2, 5, 16) * 3.0, torch.randn(2, 7, 16)
    assert torch.equal(lta.W, torch.eye(16))
    sim = lta.similarity(p, i)
    assert sim.shape == (2, 5, 7)
    torch.testing.assert_close(sim, _cosine_over_tau(p, i, 0.07))


def test_w_symmetric_and_orthogonally_decomposed_during_training():
    torch.manual_seed(1)
    lta = TransformationAlignment(8, mode="lta", temperature=0.1)
    opt = torch.optim.Adam(lta.parameters(), lr=0.05)
    p, i = torch.randn(32, 8), torch.randn(40, 8)
    target = torch.randn(32, 40)
    w0 = lta.W.detach().clone()
    for _ in range(6):
        opt.zero_grad()
        loss = ((lta.similarity(p, i) - target) ** 2).mean()
        loss.backward()
        opt.step()
        w = lta.W.detach()
        assert torch.equal(w, w.T)
        q = lta.q.weight.detach()
        torch.testing.assert_close(q @ q.T, torch.eye(8), atol=1e-5, rtol=0)
    assert not torch.allclose(lta.W.detach(), w0)
    # Q moved too (it has no gradient at the very first step, where D = 1)
    assert not torch.allclose(lta.q.weight.detach(), torch.eye(8))
    # similarity really uses W: compare with the explicit formula
    pn, inn = F.normalize(p, dim=-1), F.normalize(i, dim=-1)
    torch.testing.assert_close(lta.similarity(p, i), pn @ lta.W @ inn.T / 0.1)


def test_similarity_is_bidirectional():
    torch.manual_seed(2)
    lta = TransformationAlignment(6)
    with torch.no_grad():
        lta.d.copy_(torch.linspace(-1.0, 2.0, 6))
    p, i = torch.randn(4, 6), torch.randn(3, 6)
    torch.testing.assert_close(lta.similarity(p, i), lta.similarity(i, p).T)


def test_cosine_mode_has_no_parameters():
    lta = TransformationAlignment(4, mode="cosine", temperature=0.5)
    assert list(lta.parameters()) == []
    p, i = torch.randn(3, 4), torch.randn(5, 4)
    torch.testing.assert_close(lta(p, i), _cosine_over_tau(p, i, 0.5))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="similarity mode"):
        TransformationAlignment(4, mode="dot")
    with pytest.raises(ValueError, match="temperature"):
        TransformationAlignment(4, temperature=0.0)
    with pytest.raises(ValueError, match="channels"):
        TransformationAlignment(4).similarity(torch.randn(2, 5), torch.randn(2, 4))
