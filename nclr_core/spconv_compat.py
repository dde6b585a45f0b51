"""spconv import point: makes spconv's backward pass run on a CPU-only torch.

Indices handed to spconv must be contiguous int32 (N, 4) = (batch, z, y, x): a
non-contiguous tensor (e.g. straight from `nonzero()`) is silently misread.

spconv 2.3.x asks `torch.cuda.current_stream()` for a stream handle in its backward
kernels, which raises on a CPU-only torch. Where CUDA is absent we hand spconv stream 0
(the null stream, ignored by its CPU kernels). Import spconv through this module:

    from nclr_core.spconv_compat import spconv
"""
import spconv.pytorch as spconv
import torch
from spconv.pytorch import hash as _spconv_hash
from spconv.pytorch import ops as _spconv_ops
from spconv.pytorch import utils as _spconv_utils

__all__ = ["spconv"]


def _cpu_safe_current_stream() -> int:
    """The current CUDA stream handle, or 0 (null stream) when CUDA is unavailable."""
    if torch.cuda.is_available():
        return torch.cuda.current_stream().cuda_stream
    return 0


for _module in (_spconv_ops, _spconv_hash, _spconv_utils):
    _module.get_current_stream = _cpu_safe_current_stream
