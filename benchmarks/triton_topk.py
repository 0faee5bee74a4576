"""A Triton threshold select for Top-K on CUDA, a candidate for a faster GPU path.

The keep-th largest key of each row comes from ``torch.topk``; one Triton program per (sample,
channel) row then compares every position with it and writes the output, a byte mask and the
row's kept count in a single pass. Where a row's count differs from keep (ties at the threshold),
the whole call falls back to :func:`shapebias.sparsity.topk`'s PyTorch path, so the result is
always the definition's. The mean modes take the mask from here and the arithmetic from
:mod:`shapebias.sparsity`. Runs on the CPU under ``TRITON_INTERPRET=1`` (for tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from shapebias import sparsity


@triton.jit
def _select(
    x_ptr, kth_ptr, out_ptr, mask_ptr, count_ptr, C, s_n, s_c, s_h, s_w, W, n, RAW: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0)
    base = (row // C) * s_n + (row % C) * s_c
    pos = tl.arange(0, BLOCK)
    valid = pos < n
    offs = base + (pos // W) * s_h + (pos % W) * s_w
    x = tl.load(x_ptr + offs, mask=valid, other=0.0)
    t = tl.load(kth_ptr + row)
    key = x if RAW else tl.abs(x)
    keep = (key >= t) & valid
    tl.store(out_ptr + offs, tl.where(keep, x, tl.zeros_like(x)), mask=valid)
    tl.store(mask_ptr + offs, keep.to(tl.int8), mask=valid)
    tl.store(count_ptr + row, tl.sum(keep.to(tl.int32), axis=0))


def select(x: torch.Tensor, keep: int, raw: bool = False):
    """(out, bool mask) by the threshold select, or None where ties make the count differ."""
    n_, c, h, w = x.shape
    xd = x.detach()
    flat = xd.reshape(n_ * c, h * w)
    kth = (flat if raw else flat.abs()).topk(keep, dim=-1, sorted=False).values.amin(dim=-1).contiguous()
    out = torch.empty_like(xd)  # same strides as x (dense formats)
    mask = torch.empty_like(xd, dtype=torch.int8)
    counts = torch.empty(n_ * c, dtype=torch.int32, device=x.device)
    s_n, s_c, s_h, s_w = xd.stride()
    if out.stride() != xd.stride() or mask.stride() != xd.stride():
        return None
    _select[(n_ * c,)](
        xd, kth, out, mask, counts, c, s_n, s_c, s_h, s_w, w, h * w, RAW=raw, BLOCK=triton.next_power_of_2(h * w)
    )
    if bool((counts != keep).any()):
        return None
    return out, mask.bool()


def mask_and_out(x: torch.Tensor, keep: int, raw: bool = False):
    """(x where kept, bool mask): by the Triton select, or by the PyTorch threshold where it ties."""
    selected = select(x, keep, raw) if keep < x.shape[-2] * x.shape[-1] else None
    if selected is None:
        mask = sparsity._threshold_mask(x, keep, raw)
        return x.detach() * mask, mask
    return selected


class _TritonTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep: int):
        out, mask = mask_and_out(x, keep)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def topk(x: torch.Tensor, k: float, mode: str = "topk") -> torch.Tensor:
    """Top-K with the Triton select (``topk`` and the mean modes); ``complement`` and layouts other
    than the two contiguous formats by the PyTorch path."""
    keep = sparsity.kept_count(k, x.shape[-2] * x.shape[-1])
    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    if mode == "complement" or not dense:
        return sparsity.topk(x, k, mode, backend="torch")
    if mode in sparsity.MEAN_MODES:
        raw = sparsity.ranks_raw(mode)
        return sparsity._MeanReplace.apply(x, mask_and_out(x, keep, raw)[1], raw, keep)
    return _TritonTopK.apply(x, keep)
