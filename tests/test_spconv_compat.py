"""spconv on CPU: forward and backward of the sparse convolutions match dense torch."""
import torch
import torch.nn.functional as F

from nclr_core.spconv_compat import spconv

GRID = (8, 10, 6)  # (D, H, W) = spconv's (z, y, x) spatial shape
C_IN, C_OUT = 3, 4
TOL = 1e-4


def _random_sparse_grid(seed: int = 0, batch: int = 2, occupancy: float = 0.15):
    """Dense features (B, C, D, H, W) that are zero outside a random set of active sites."""
    gen = torch.Generator().manual_seed(seed)
    active = torch.rand((batch, *GRID), generator=gen) < occupancy
    dense = torch.randn((batch, C_IN, *GRID), generator=gen, dtype=torch.float64)
    dense = dense * active.unsqueeze(1)
    # nonzero() is column-major; spconv silently misreads non-contiguous indices.
    indices = active.nonzero().int().contiguous()  # (N, 4): batch, z, y, x
    feats = dense[indices[:, 0].long(), :, indices[:, 1].long(), indices[:, 2].long(),
                  indices[:, 3].long()]
    return dense, active, indices, feats


def _sparse_input(feats: torch.Tensor, indices: torch.Tensor, batch: int):
    return spconv.SparseConvTensor(feats.float(), indices, list(GRID), batch)


def _dense_weight(sparse_weight: torch.Tensor) -> torch.Tensor:
    """spconv (C_out, k, k, k, C_in) -> torch Conv3d (C_out, C_in, k, k, k)."""
    return sparse_weight.permute(0, 4, 1, 2, 3).contiguous()


def gather_in(dense: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Features of a dense (B, C, D, H, W) grid at sparse indices (N, 4) -> (N, C)."""
    i = indices.long()
    return dense[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]]


def _run_pair(sparse_forward, dense_forward, layer):
    """Forward both paths, compare values, then gradients wrt input features and weight."""
    dense_in, active, indices, feats = _random_sparse_grid()
    batch = dense_in.shape[0]
    feats = feats.float().requires_grad_(True)
    dense_leaf = dense_in.clone().requires_grad_(True)
    dense_weight = _dense_weight(layer.weight.detach()).double().requires_grad_(True)

    out_sparse = sparse_forward(_sparse_input(feats, indices, batch))
    out_dense = dense_forward(dense_leaf, dense_weight, active)
    out_sparse_dense = out_sparse.dense().double()
    assert out_sparse_dense.shape == out_dense.shape
    assert (out_sparse_dense - out_dense).abs().max().item() < TOL

    cot = torch.randn(out_dense.shape, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)
    (out_dense * cot).sum().backward()
    (out_sparse.features.double() * gather_in(cot, out_sparse.indices)).sum().backward()
    grad_in_ref = gather_in(dense_leaf.grad, indices)
    assert (feats.grad.double() - grad_in_ref).abs().max().item() < TOL
    grad_w = _dense_weight(layer.weight.grad).double()
    assert (grad_w - dense_weight.grad).abs().max().item() < TOL


def test_subm_conv3d_matches_dense_conv3d():
    torch.manual_seed(0)
    layer = spconv.SubMConv3d(C_IN, C_OUT, 3, padding=1, bias=False)

    def dense(x, w, active):
        return F.conv3d(x, w, padding=1) * active.unsqueeze(1)  # submanifold: input sites only

    _run_pair(layer, dense, layer)


def test_strided_sparse_conv3d_matches_dense_conv3d():
    torch.manual_seed(0)
    layer = spconv.SparseConv3d(C_IN, C_OUT, 3, stride=2, padding=1, bias=False)

    def dense(x, w, active):
        return F.conv3d(x, w, stride=2, padding=1)

    _run_pair(layer, dense, layer)


def test_inverse_conv3d_matches_dense_transposed_conv3d():
    torch.manual_seed(0)
    down = spconv.SparseConv3d(C_IN, C_IN, 3, stride=2, padding=1, bias=False, indice_key="d")
    up = spconv.SparseInverseConv3d(C_IN, C_OUT, 3, indice_key="d", bias=False)
    down_w = _dense_weight(down.weight.detach()).double()

    def sparse_forward(x):
        return up(down(x))

    def dense(x, w, active):
        # The inverse conv is the transpose of `down` restricted to `down`'s input sites.
        coarse = F.conv3d(x, down_w, stride=2, padding=1)
        w_t = w.permute(1, 0, 2, 3, 4)  # (C_out, C_in, k...) -> (C_in, C_out, k...)
        fine = F.conv_transpose3d(coarse, w_t, stride=2, padding=1,
                                  output_padding=tuple(1 - s % 2 for s in GRID))
        return fine * active.unsqueeze(1)

    _run_pair(sparse_forward, dense, up)
