"""The Top-K operation of Li et al. (2023): spatial activation sparsity.

For every sample and every channel of a feature map ``(N, C, H, W)``, keep ``keep =
max(1, int(k * H * W))`` spatial positions: those with the largest ``|x|`` (or, in
``topk_mean_raw``, the largest ``x``).

Modes
-----
``topk``           kept values, every other position zero; gradients flow only through kept
                   positions (the authors' and the earlier reproduction's Top-K: both rank ``|x|``).
``topk_mean``      the ResNet mean replacement of the earlier reproduction
                   (``COMP6258-Reproducibility-Challenge/emergence-of-shape-bias``,
                   ``cnns-train-top-k/resnet_model.py``, ``top_k_mean_replace``; the source of
                   Table 1's "Mean Rpl." rows): rank ``|x|``; ``mean = sum(kept values) / keep``;
                   every kept position whose value is non-zero gets ``mean``, kept zeros stay zero,
                   the rest is zero.
``topk_mean_raw``  the GAN mean replacement of the authors (``Crazy-Jack/nips2023_shape_vs_texture``,
                   ``few-shot-img-syn/TopKGen/TopkLoss/topk_loss_module.py``,
                   ``sparse_hw_replace_w_mean``): rank the raw, signed ``x`` (no absolute value);
                   every kept position gets ``mean = sum(kept values) / keep``, the rest is zero.
``complement``     only the positions that ``topk`` would drop (the paper's ablation).

Gradients are those of each source's code under autograd: ``topk_mean`` passes ``sum(grad where
the mean was written) / keep`` to every kept position, plus the position's own gradient at kept
zeros (where the source wrote the kept value itself); ``topk_mean_raw`` passes ``sum(grad at kept
positions) / keep`` to every kept position. ``TopK(1.0)`` is the identity in ``topk`` mode.

Ties and summation order
------------------------
Where several positions share the keep-th largest key, the ones with the lowest flat spatial index
(``h * W + w``) are kept (:func:`reference_mask`, a stable sort). The mean modes sum in one fixed
order, :func:`tree_sum` (pad the H*W values with zeros to a power of two, then add the upper half
to the lower half until one value is left), so that every implementation here gives the same bits.
The sources used ``torch.topk`` (no documented tie rule) and ``torch.sum`` (an unspecified order);
wherever the keep-th key is unique and the sum is exact in float32, the results are identical.
NaN and infinite inputs are not supported.

Implementations
---------------
:func:`topk` (what :class:`TopK` calls) picks, per call:

* ``cpu``: the C kernel of :mod:`shapebias._topk_kernel` (``csrc/topk.c``; OpenMP; compiled on
  first use and cached) for float32 CPU tensors. Per row, the bin (top byte of the key) holding
  the keep-th largest key is guessed from a sample and checked by counting (a histogram of every
  key where the guess is wrong), a radix select among that bin's members finds the key exactly,
  and one pass writes the output; the backward reads only packed bits (one bit per position:
  kept; two in the mean modes: kept, receives the mean), an eighth of a bool mask. The kernel asks
  Linux for transparent huge pages for its outputs (``SHAPEBIAS_TOPK_HUGE_PAGES=0`` does not).
* ``torch``: the same threshold method in plain PyTorch (``topk`` values, compare, ties resolved by
  a cumulative count only where they occur) for CUDA, other dtypes, and machines without a compiler.
* ``reference``: :func:`topk_reference`, the definition.

``SHAPEBIAS_TOPK_BACKEND`` (``auto``, ``cpu``, ``torch``, ``reference``) overrides the choice;
``auto`` uses the C kernel where it applies and builds, else ``torch``. Every backend's values and
gradients are bitwise those of the definition (``torch.equal``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from shapebias import _topk_kernel as kernel
from shapebias.errors import check_choice, check_fraction

MODES = ("topk", "topk_mean", "topk_mean_raw", "complement")
MEAN_MODES = ("topk_mean", "topk_mean_raw")
BACKENDS = ("auto", "cpu", "torch", "reference")
BACKEND_ENV = "SHAPEBIAS_TOPK_BACKEND"
HUGE_PAGES_ENV = "SHAPEBIAS_TOPK_HUGE_PAGES"
_KERNEL_MODE = {
    "topk": kernel.MODE_TOPK,
    "complement": kernel.MODE_COMPLEMENT,
    "topk_mean": kernel.MODE_MEAN_NONZERO,
    "topk_mean_raw": kernel.MODE_MEAN_RAW,
}


def kept_count(k: float, spatial: int) -> int:
    """Number of positions kept per channel: ``max(1, int(k * spatial))``."""
    return max(1, int(k * spatial))


def ranks_raw(mode: str) -> bool:
    """Whether ``mode`` ranks the raw values (``topk_mean_raw``) rather than ``|x|``."""
    return mode == "topk_mean_raw"


def reference_mask(x: torch.Tensor, k: float, raw: bool = False) -> torch.Tensor:
    """Boolean mask of the kept positions, same shape as ``x`` (N, C, H, W): the definition.

    The ``kept_count(k, H*W)`` largest ``|x|`` (``x`` itself when ``raw``) over (H, W) flattened;
    ties to the lowest index (a stable descending sort). Slow, and meant to be: it is what faster
    code is tested against.
    """
    n, c, h, w = x.shape
    flat = x.detach().reshape(n, c, h * w)
    keep = kept_count(k, h * w)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep >= h * w:
        mask.fill_(True)
    else:
        key = flat if raw else flat.abs()
        mask.scatter_(-1, key.sort(dim=-1, descending=True, stable=True).indices[..., :keep], True)
    return mask.reshape(n, c, h, w)


def tree_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum over (H, W) of an (N, C, H, W) tensor in the mean modes' fixed order: (N, C, 1, 1).

    The H*W values in flat index order, padded with zeros to the next power of two, then halved
    (``v[:half] + v[half:]``) until one is left. ``csrc/topk.c`` sums in exactly this order.
    """
    n, c, h, w = v.shape
    flat = v.reshape(n, c, h * w)
    p = 1 << (h * w - 1).bit_length()
    if p > h * w:
        flat = F.pad(flat, (0, p - h * w))
    while flat.shape[-1] > 1:
        half = flat.shape[-1] // 2
        flat = flat[..., :half] + flat[..., half:]
    return flat.reshape(n, c, 1, 1)


def _mean_backward(grad: torch.Tensor, kept: torch.Tensor, gets: torch.Tensor, keep: int) -> torch.Tensor:
    """The mean modes' gradient: ``(0 where the mean was written, else grad) + gm`` at kept
    positions, 0 elsewhere; ``gm = tree_sum(grad where the mean was written) / keep``."""
    zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
    gm = tree_sum(torch.where(gets, grad, zero)) / keep
    return torch.where(kept, torch.where(gets, zero, grad) + gm, zero)


class _MeanReplace(torch.autograd.Function):
    """The mean modes' arithmetic given the mask of kept positions (the definition's, and the
    PyTorch path's): ``out = mean where it is written, else x * kept``, explicit backward."""

    @staticmethod
    def forward(ctx, x, kept, raw: bool, keep: int):
        values = x * kept
        gets = kept if raw else kept & (values != 0)
        mean = tree_sum(values) / keep
        ctx.save_for_backward(kept, gets)
        ctx.keep = keep
        return torch.where(gets, mean, values)

    @staticmethod
    def backward(ctx, grad_out):
        kept, gets = ctx.saved_tensors
        return _mean_backward(grad_out, kept, gets, ctx.keep), None, None, None


def _apply_mask(x: torch.Tensor, mask: torch.Tensor, mode: str, keep: int) -> torch.Tensor:
    """The definition's arithmetic given the mask of the ``keep`` kept positions per row."""
    if mode in MEAN_MODES:
        return _MeanReplace.apply(x, mask, ranks_raw(mode), keep)
    m = mask.to(x.dtype)
    return x * m if mode == "topk" else x * (1 - m)


def topk_reference(x: torch.Tensor, k: float, mode: str = "topk") -> torch.Tensor:
    """The definition: the mask of :func:`reference_mask`, then plain arithmetic.

    Kept as the definition that faster implementations are tested against.
    """
    check_choice("mode", mode, MODES)
    keep = kept_count(k, x.shape[-2] * x.shape[-1])
    return _apply_mask(x, reference_mask(x, k, ranks_raw(mode)), mode, keep)


def topk_direct(x: torch.Tensor, k: float, mode: str = "topk") -> torch.Tensor:
    """The direct formulation: indices from ``torch.topk``, a scattered mask, then arithmetic.

    Equal to :func:`topk_reference` except where the keep-th largest key is tied (``torch.topk``
    breaks ties as it happens to). It is the baseline the benchmarks compare the fast path against.
    """
    check_choice("mode", mode, MODES)
    n, c, h, w = x.shape
    flat = x.detach().reshape(n, c, h * w)
    keep = kept_count(k, h * w)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep >= h * w:
        mask.fill_(True)
    else:
        key = flat if ranks_raw(mode) else flat.abs()
        mask.scatter_(-1, key.topk(keep, dim=-1, sorted=False).indices, True)
    return _apply_mask(x, mask.reshape(n, c, h, w), mode, keep)


# --------------------------------------------------------------------------------------------
# Fast paths
# --------------------------------------------------------------------------------------------


def _threshold_mask(x: torch.Tensor, keep: int, raw: bool = False) -> torch.Tensor:
    """Mask of kept positions by thresholding at the keep-th largest key (any device, dtype)."""
    n, c, h, w = x.shape
    if keep >= h * w:
        return torch.ones_like(x, dtype=torch.bool)
    a = x.detach().reshape(n, c, h * w)
    a = a if raw else a.abs()
    kth = a.topk(keep, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    mask = a > kth
    ties = a == kth
    need = keep - mask.sum(dim=-1, keepdim=True)  # how many tied positions each row still keeps
    over = ties.sum(dim=-1, keepdim=True) > need
    if bool(over.any()):  # rare for real activations: resolve ties in index order
        rows = over.squeeze(-1).nonzero(as_tuple=True)
        t = ties[rows]
        t &= t.cumsum(dim=-1) <= need[rows]
        ties[rows] = t
    mask |= ties
    return mask.reshape(n, c, h, w)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` if it is dense in one of the two contiguous formats with evenly strided rows, else a copy."""
    _, _, h, w = x.shape
    s_h, s_w = x.stride()[2:]
    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    return x if dense and (h == 1 or w == 1 or s_h == w * s_w) else x.contiguous()


def _rows(x: torch.Tensor) -> tuple[int, ...]:
    """The kernel's row arguments of a dense (N, C, H, W) tensor: rows, C, sN, sC, ss, n."""
    n, c, h, w = x.shape
    s_n, s_c, s_h, s_w = x.stride()
    return n * c, c, s_n, s_c, (s_w if w > 1 else s_h), h * w


def _huge_pages() -> int:
    """Whether the C kernel asks for huge pages for its outputs: ``$SHAPEBIAS_TOPK_HUGE_PAGES``,
    ``1`` (default) or ``0``."""
    value = os.environ.get(HUGE_PAGES_ENV, "1") or "1"
    check_choice(HUGE_PAGES_ENV, value, ("0", "1"))
    return int(value)


def _cpu_topk(x: torch.Tensor, keep: int, mode: str, want_out: bool = True, want_mask: bool = False):
    """Run the C kernel on a float32 CPU (N, C, H, W) tensor: (out, packed bits, bool mask).

    ``out`` (when ``want_out``) has ``x``'s strides; the packed bits (what the backward reads: one
    bit per position, two in the mean modes) are (N * C, bytes per row) and returned when
    ``want_out``; the bool mask of passed positions (kept, or dropped in ``complement``) when
    ``want_mask``. What is not wanted is None."""
    x = _dense(x.detach())
    rows, n = x.shape[0] * x.shape[1], x.shape[2] * x.shape[3]
    planes = 2 if mode in MEAN_MODES else 1
    out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype) if want_out else None
    bits = torch.empty((rows, planes * ((n + 7) // 8)), dtype=torch.uint8) if want_out else None
    mask = torch.empty_strided(x.shape, x.stride(), dtype=torch.uint8) if want_mask else None
    rc = kernel.loaded().shapebias_topk_f32(
        x.data_ptr(),
        *(t.data_ptr() if t is not None else None for t in (out, mask, bits)),
        *_rows(x),
        keep,
        _KERNEL_MODE[mode],
        torch.get_num_threads(),
        _huge_pages(),
    )
    if rc != 0:
        raise MemoryError("the C Top-K kernel could not allocate its row buffers")
    return out, bits, (mask & 1).bool() if mask is not None else None


def _cpu_backward(grad: torch.Tensor, bits: torch.Tensor, keep: int, mode: str) -> torch.Tensor:
    """The backward of every mode by the C kernel, from the packed bits of :func:`_cpu_topk`."""
    grad = _dense(grad)
    out = torch.empty_strided(grad.shape, grad.stride(), dtype=grad.dtype)
    rc = kernel.loaded().shapebias_topk_backward_f32(
        grad.data_ptr(),
        bits.data_ptr(),
        out.data_ptr(),
        *_rows(grad),
        keep,
        _KERNEL_MODE[mode],
        torch.get_num_threads(),
        _huge_pages(),
    )
    if rc != 0:
        raise MemoryError("the C Top-K kernel could not allocate its row buffers")
    return out


def _backend(x: torch.Tensor, backend: str | None) -> str:
    choice = backend or os.environ.get(BACKEND_ENV, "auto") or "auto"
    check_choice(BACKEND_ENV, choice, BACKENDS)
    cpu_ok = x.device.type == "cpu" and x.dtype == torch.float32
    if choice == "auto":
        return "cpu" if cpu_ok and kernel.kernel() is not None else "torch"
    if choice == "cpu" and not cpu_ok:
        return "torch"  # the kernel covers float32 CPU tensors only
    if choice == "cpu" and kernel.kernel() is None:
        raise RuntimeError(f"{BACKEND_ENV}=cpu but the C Top-K kernel is unavailable: {kernel.error}")
    return choice


def topk_mask(x: torch.Tensor, k: float, backend: str | None = None, raw: bool = False) -> torch.Tensor:
    """Boolean mask of the kept positions, same shape as ``x`` (N, C, H, W).

    Exactly :func:`reference_mask` (same positions, ties to the lowest index), computed fast.
    """
    n, c, h, w = x.shape
    keep = kept_count(k, h * w)
    chosen = _backend(x, backend)
    if chosen == "reference":
        return reference_mask(x, k, raw)
    if chosen == "cpu" and keep < h * w:
        return _cpu_topk(x, keep, "topk_mean_raw" if raw else "topk", want_out=False, want_mask=True)[2]
    return _threshold_mask(x, keep, raw)


class _KernelTopK(torch.autograd.Function):
    """Every mode by the C kernel, saving only the packed bits of :func:`_cpu_topk` (one bit per
    position, two in the mean modes) for the backward."""

    @staticmethod
    def forward(ctx, x, keep: int, mode: str):
        out, bits, _ = _cpu_topk(x, keep, mode)
        ctx.save_for_backward(bits)
        ctx.keep, ctx.mode = keep, mode
        return out

    @staticmethod
    def backward(ctx, grad):
        (bits,) = ctx.saved_tensors
        return _cpu_backward(grad, bits, ctx.keep, ctx.mode), None, None


class _MaskedPass(torch.autograd.Function):
    """``topk``/``complement`` in PyTorch: ``out = x * pass``, saving only the boolean ``pass``;
    backward ``grad * pass``."""

    @staticmethod
    def forward(ctx, x, keep: int, mode: str):
        kept = _threshold_mask(x, keep)
        passed = ~kept if mode == "complement" else kept
        ctx.save_for_backward(passed)
        return x * passed

    @staticmethod
    def backward(ctx, grad):
        (passed,) = ctx.saved_tensors
        return grad * passed, None, None


def topk(x: torch.Tensor, k: float, mode: str = "topk", backend: str | None = None) -> torch.Tensor:
    """Top-K sparsity, exactly equal to :func:`topk_reference` (values, kept positions, gradients).

    Args:
        x: (N, C, H, W) tensor.
        k: fraction of spatial positions kept, in (0, 1].
        mode: one of :data:`MODES`.
        backend: one of :data:`BACKENDS`; default ``$SHAPEBIAS_TOPK_BACKEND`` or ``auto``.
    """
    check_choice("mode", mode, MODES)
    if x.dim() != 4:
        raise ValueError(f"Top-K expects a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    chosen = _backend(x, backend)
    if chosen == "reference":
        return topk_reference(x, k, mode)
    keep = kept_count(k, x.shape[-2] * x.shape[-1])
    if chosen == "cpu":
        return _KernelTopK.apply(x, keep, mode)
    if mode in MEAN_MODES:
        return _MeanReplace.apply(x, _threshold_mask(x, keep, ranks_raw(mode)), ranks_raw(mode), keep)
    return _MaskedPass.apply(x, keep, mode)


class TopK(nn.Module):
    """Spatial Top-K sparsity per sample and channel (see the module docstring).

    Args:
        k: fraction of spatial positions kept, in (0, 1].
        mode: one of :data:`MODES` (``topk``, ``topk_mean``, ``topk_mean_raw``, ``complement``).
        backend: implementation (see :data:`BACKENDS`); default ``$SHAPEBIAS_TOPK_BACKEND``/``auto``.
    """

    def __init__(self, k: float, mode: str = "topk", backend: str | None = None) -> None:
        super().__init__()
        self.k = check_fraction("topk", k)
        check_choice("mode", mode, MODES)
        if backend is not None:
            check_choice("backend", backend, BACKENDS)
        self.mode = mode
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"TopK expects a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if self.mode == "topk" and self.k >= 1.0:
            return x
        return topk(x, self.k, self.mode, self.backend)

    def extra_repr(self) -> str:
        return f"k={self.k}, mode={self.mode!r}"


def cpu_kernel():
    """The compiled C kernel (see :mod:`shapebias._topk_kernel`), or None where it cannot be built."""
    return kernel.kernel()
