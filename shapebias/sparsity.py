"""The Top-K operation of Li et al. (2023): spatial activation sparsity.

For every sample and every channel of a feature map ``(N, C, H, W)``, keep the
``max(1, int(k * H * W))`` spatial positions with the largest absolute value.

Modes
-----
``topk``        kept values, every other position zero; gradients flow only through kept positions.
``topk_mean``   every kept position gets the mean of that channel's kept values; the rest zero.
``complement``  only the positions that ``topk`` would drop (the paper's ablation).

``TopK(1.0)`` is the identity in ``topk`` mode. With k = 1, ``topk_mean`` replaces every value by
its channel's mean and ``complement`` is all zero.

Ties
----
Where several positions share the k-th largest ``|x|``, the ones with the lowest flat spatial
index (``h * W + w``) are kept. This is the definition (:func:`reference_mask`, a stable sort), and
every implementation here follows it exactly. ``torch.topk`` on the CPU documents no rule for
ties (it breaks them as its partial sort happens to leave them), so :func:`topk_direct`, the
plain "``torch.topk`` indices, then a scattered mask" formulation, agrees with the definition
wherever the k-th largest value is unique, which is almost always the case for real activations.
NaN inputs are not supported.

Implementations
---------------
:func:`topk` (what :class:`TopK` calls) picks, per call:

* ``cpu``: a small C kernel (OpenMP; compiled with the system's ``cc`` on first use in about a
  second, cached in ``~/.cache/shapebias`` or ``$SHAPEBIAS_CACHE_DIR``, loaded through ctypes) for
  float32 CPU tensors. Per row it finds the exact k-th largest
  ``|x|`` by a radix select on the float's bits, then writes the output and a boolean mask in one
  pass (ties resolved in index order). Backward is ``grad * mask``: only the bool mask is saved.
* ``torch``: the same threshold method in plain PyTorch (``topk`` values, compare, ties resolved by
  a cumulative count only where they occur) for CUDA, other dtypes, and machines without a
  compiler.
* ``reference``: :func:`topk_reference`, the definition.

``SHAPEBIAS_TOPK_BACKEND`` (``auto``, ``cpu``, ``torch``, ``reference``) overrides the choice;
``auto`` uses the C kernel where it applies and builds, else ``torch``. ``topk_mean`` repeats the
definition's arithmetic in the definition's order (a sum over (H, W), a division by the count),
so its values and gradients are bitwise those of the definition too.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from shapebias.errors import check_choice, check_fraction

MODES = ("topk", "topk_mean", "complement")
BACKENDS = ("auto", "cpu", "torch", "reference")
BACKEND_ENV = "SHAPEBIAS_TOPK_BACKEND"


def kept_count(k: float, spatial: int) -> int:
    """Number of positions kept per channel: ``max(1, int(k * spatial))``."""
    return max(1, int(k * spatial))


def reference_mask(x: torch.Tensor, k: float) -> torch.Tensor:
    """Boolean mask of the kept positions, same shape as ``x`` (N, C, H, W): the definition.

    The ``kept_count(k, H*W)`` largest ``|x|`` over (H, W) flattened; ties to the lowest index
    (a stable descending sort). Slow, and meant to be: it is what faster code is tested against.
    """
    n, c, h, w = x.shape
    flat = x.detach().reshape(n, c, h * w)
    keep = kept_count(k, h * w)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep >= h * w:
        mask.fill_(True)
    else:
        idx = flat.abs().sort(dim=-1, descending=True, stable=True).indices[..., :keep]
        mask.scatter_(-1, idx, True)
    return mask.reshape(n, c, h, w)


def _apply_mask(x: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The definition's arithmetic given the mask of kept positions (differentiable in ``x``)."""
    m = mask.to(x.dtype)
    if mode == "topk":
        return x * m
    if mode == "complement":
        return x * (1 - m)
    kept = x * m
    count = m.sum(dim=(2, 3), keepdim=True)
    mean = kept.sum(dim=(2, 3), keepdim=True) / count
    return mean * m


def topk_reference(x: torch.Tensor, k: float, mode: str = "topk") -> torch.Tensor:
    """The definition: the mask of :func:`reference_mask`, then plain arithmetic (autograd does the rest).

    Kept as the definition that faster implementations are tested against.
    """
    check_choice("mode", mode, MODES)
    return _apply_mask(x, reference_mask(x, k), mode)


def topk_direct(x: torch.Tensor, k: float, mode: str = "topk") -> torch.Tensor:
    """The direct formulation: indices from ``torch.topk``, a scattered mask, then arithmetic.

    Equal to :func:`topk_reference` except where the k-th largest ``|x|`` is tied (see the module
    docstring). It is the baseline the benchmarks compare the fast path against.
    """
    check_choice("mode", mode, MODES)
    n, c, h, w = x.shape
    flat = x.detach().reshape(n, c, h * w)
    keep = kept_count(k, h * w)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep >= h * w:
        mask.fill_(True)
    else:
        mask.scatter_(-1, flat.abs().topk(keep, dim=-1, sorted=False).indices, True)
    return _apply_mask(x, mask.reshape(n, c, h, w), mode)


# --------------------------------------------------------------------------------------------
# Fast masks
# --------------------------------------------------------------------------------------------


def _threshold_mask(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Mask of kept positions by thresholding at the k-th largest ``|x|`` (any device, dtype)."""
    n, c, h, w = x.shape
    a = x.detach().abs().reshape(n, c, h * w)
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


_C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Exact k-th largest of u[0..n) (non-negative float bit patterns, so integer order is float
 * order) by an MSD radix select over digits of 8/8/8/7 bits. Sets the threshold's bits and how
 * many elements equal to it are kept (every other kept element is strictly greater). */
static void radix_select(const uint32_t *u, int64_t n, int64_t keep, uint32_t *buf_a,
                         uint32_t *buf_b, int64_t *hist, uint32_t *t_out, int64_t *need_out,
                         int64_t *equal_out) {
  /* hist[256] holds the histogram of the first digit (u >> 23) on entry */
  static const int shift[4] = {23, 15, 7, 0};
  static const uint32_t digit_mask[4] = {0xffu, 0xffu, 0xffu, 0x7fu};
  const uint32_t *src = u;
  int64_t m = n, remaining = keep;
  uint32_t prefix = 0;
  for (int d = 0; d < 4; ++d) {
    const int s = shift[d];
    const uint32_t dm = digit_mask[d];
    if (d > 0) {
      memset(hist, 0, 256 * sizeof(int64_t));
      for (int64_t i = 0; i < m; ++i) hist[(src[i] >> s) & dm]++;
    }
    int64_t above = 0;
    int b = (int)dm;
    for (; b > 0; --b) {
      if (above + hist[b] >= remaining) break;
      above += hist[b];
    }
    remaining -= above;
    prefix |= ((uint32_t)b) << s;
    if (d == 3) {
      *equal_out = hist[b]; /* the last digit: every element of bin b equals the threshold */
      break;
    }
    if (hist[b] == remaining) { /* the whole bin is kept: the threshold is its minimum */
      uint32_t lo = 0xffffffffu;
      int64_t eq = 0;
      for (int64_t i = 0; i < m; ++i) {
        const uint32_t v = src[i];
        if (((v >> s) & dm) == (uint32_t)b && v < lo) lo = v;
      }
      for (int64_t i = 0; i < m; ++i) eq += (src[i] == lo);
      *t_out = lo;
      *need_out = eq;
      *equal_out = eq;
      return;
    }
    uint32_t *dst = (src == buf_a) ? buf_b : buf_a;
    int64_t j = 0;
    for (int64_t i = 0; i < m; ++i) { /* keep the candidates of bin b */
      const uint32_t v = src[i];
      dst[j] = v;
      j += (((v >> s) & dm) == (uint32_t)b);
    }
    src = dst;
    m = j;
  }
  *t_out = prefix;
  *need_out = remaining;
}

/* out = g * pass (as the definition's backward) over `numel` elements of dense tensors with identical strides. */
void shapebias_mask_mul_f32(const float *g, const uint8_t *pass, float *out, int64_t numel,
                            int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < numel; ++i) out[i] = g[i] * (float)pass[i];
}

/* For each of the `rows` (n, c) rows (row r starts at (r / C) * sN + (r % C) * sC; its n
 * positions are `ss` elements apart, in x, out and pass alike): pass = kept (or dropped when
 * `complement`), out = x * pass (skipped when out is NULL). Ties: lowest index first. */
int shapebias_topk_f32(const float *x, float *out, uint8_t *pass, int64_t rows, int64_t C,
                       int64_t sN, int64_t sC, int64_t ss, int64_t n, int64_t keep,
                       int complement, int threads) {
  int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    uint32_t *u = (uint32_t *)malloc(sizeof(uint32_t) * 3 * (size_t)n);
    if (!u) failed = 1;
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      if (!u) continue;
      const int64_t base = (r / C) * sN + (r % C) * sC;
      const float *xr = x + base;
      uint8_t *mr = pass + base;
      int64_t hist[256];
      memset(hist, 0, sizeof(hist));
      for (int64_t i = 0; i < n; ++i) {
        uint32_t v;
        memcpy(&v, xr + i * ss, 4);
        v &= 0x7fffffffu;
        u[i] = v;
        hist[v >> 23]++;
      }
      uint32_t t = 0;
      int64_t need = n, equal = n;
      if (keep < n) radix_select(u, n, keep, u + n, u + 2 * n, hist, &t, &need, &equal);
      const uint8_t flip = (uint8_t)(complement != 0);
      if (need == equal && ss == 1) { /* no tie to break (the usual case): a plain compare */
        for (int64_t i = 0; i < n; ++i) mr[i] = (uint8_t)(u[i] >= t) ^ flip;
        if (out) {
          float *orow = out + base;
          for (int64_t i = 0; i < n; ++i) orow[i] = xr[i] * (float)mr[i]; /* branch-free: masks are random */
        }
      } else if (out) {
        float *orow = out + base;
        for (int64_t i = 0; i < n; ++i) {
          const uint32_t v = u[i];
          const int tie = (v == t) & (need > 0);
          need -= tie;
          const uint8_t p = (uint8_t)((v > t) | tie) ^ flip;
          mr[i * ss] = p;
          orow[i * ss] = xr[i * ss] * (float)p; /* x * mask, as the definition */
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const uint32_t v = u[i];
          const int tie = (v == t) & (need > 0);
          need -= tie;
          mr[i * ss] = (uint8_t)((v > t) | tie) ^ flip;
        }
      }
    }
    free(u);
  }
  return failed;
}
"""
_CFLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp")

_lib = None
_lib_error: str | None = None
_lib_lock = threading.Lock()


def _cache_dir() -> Path:
    env = os.environ.get("SHAPEBIAS_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shapebias"


def _build_cpu_kernel() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    digest = hashlib.sha256((_C_SOURCE + " ".join(_CFLAGS) + compiler + platform.machine()).encode()).hexdigest()[:16]
    target = _cache_dir() / f"topk_cpu_{digest}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src = Path(tmp) / "topk_cpu.c"
            src.write_text(_C_SOURCE)
            built = Path(tmp) / target.name
            proc = subprocess.run(
                [compiler, *_CFLAGS, str(src), "-o", str(built)], capture_output=True, text=True, timeout=300
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-500:]}")
            os.replace(built, target)  # atomic: concurrent builders (Ray workers) do not collide
    lib = ctypes.CDLL(str(target))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.shapebias_topk_f32.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, ctypes.c_int, ctypes.c_int]
    lib.shapebias_topk_f32.restype = ctypes.c_int
    lib.shapebias_mask_mul_f32.argtypes = [ptr, ptr, ptr, i64, ctypes.c_int]
    lib.shapebias_mask_mul_f32.restype = None
    return lib


def cpu_kernel():
    """The compiled C kernel (built on first use, cached); None, with one warning, if it cannot be."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        with _lib_lock:
            if _lib is None and _lib_error is None:
                try:
                    _lib = _build_cpu_kernel()
                except Exception as exc:  # no compiler, read-only cache, ...: fall back, say so once
                    _lib_error = f"{type(exc).__name__}: {exc}"
                    warnings.warn(
                        f"shapebias: the C Top-K kernel is unavailable ({_lib_error}); "
                        "using the plain PyTorch threshold path (exact, slower)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
    return _lib


def _cpu_topk(x: torch.Tensor, keep: int, complement: bool, want_out: bool):
    """Run the C kernel on a float32 CPU (N, C, H, W) tensor: (out or None, pass mask)."""
    x = _layout_ok(x.detach())
    n_, c, h, w = x.shape
    s_n, s_c, s_h, s_w = x.stride()
    if not (h == 1 or w == 1 or s_h == w * s_w):
        x = x.contiguous()
        s_n, s_c, s_h, s_w = x.stride()
    ss = s_w if w > 1 else s_h
    # x is dense (one of the two contiguous formats): outputs with exactly its strides are dense too
    passed = torch.empty_strided(x.shape, x.stride(), dtype=torch.bool)
    out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype) if want_out else None
    rc = cpu_kernel().shapebias_topk_f32(
        x.data_ptr(), out.data_ptr() if want_out else None, passed.data_ptr(),
        n_ * c, c, s_n, s_c, ss, h * w, keep, int(complement), torch.get_num_threads(),
    )
    if rc != 0:
        raise MemoryError("the C Top-K kernel could not allocate its row buffers")
    return out, passed


def _backend(x: torch.Tensor, backend: str | None) -> str:
    choice = backend or os.environ.get(BACKEND_ENV, "auto") or "auto"
    check_choice(BACKEND_ENV, choice, BACKENDS)
    cpu_ok = x.device.type == "cpu" and x.dtype == torch.float32
    if choice == "auto":
        return "cpu" if cpu_ok and cpu_kernel() is not None else "torch"
    if choice == "cpu" and not cpu_ok:
        return "torch"  # the kernel covers float32 CPU tensors only
    if choice == "cpu" and cpu_kernel() is None:
        raise RuntimeError(f"{BACKEND_ENV}=cpu but the C Top-K kernel is unavailable: {_lib_error}")
    return choice


def _layout_ok(x: torch.Tensor) -> torch.Tensor:
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def topk_mask(x: torch.Tensor, k: float, backend: str | None = None) -> torch.Tensor:
    """Boolean mask of the kept positions, same shape as ``x`` (N, C, H, W).

    Exactly :func:`reference_mask` (same positions, ties to the lowest index), computed fast.
    """
    n, c, h, w = x.shape
    keep = kept_count(k, h * w)
    chosen = _backend(x, backend)
    if chosen == "reference":
        return reference_mask(x, k)
    if keep >= h * w:
        return torch.ones_like(x, dtype=torch.bool)
    if chosen == "cpu":
        return _cpu_topk(x, keep, False, want_out=False)[1]
    return _threshold_mask(x, keep)


class _MaskedPass(torch.autograd.Function):
    """``out = x * pass``, saving only the boolean ``pass`` mask; backward ``grad * pass``."""

    @staticmethod
    def forward(ctx, x, k: float, complement: bool, backend: str):
        n, c, h, w = x.shape
        keep = kept_count(k, h * w)
        if backend == "cpu":
            out, passed = _cpu_topk(x, keep, complement, want_out=True)
        else:
            kept = _threshold_mask(x, keep) if keep < h * w else torch.ones_like(x, dtype=torch.bool)
            passed = ~kept if complement else kept
            out = x * passed
        ctx.save_for_backward(passed)
        ctx.mark_non_differentiable(passed)
        return out, passed

    @staticmethod
    def backward(ctx, grad_out, _grad_mask):
        (passed,) = ctx.saved_tensors
        return _masked_grad(grad_out, passed), None, None, None


def _masked_grad(grad: torch.Tensor, passed: torch.Tensor) -> torch.Tensor:
    """``grad * passed`` (the definition's backward): by the C kernel where layouts match."""
    if (
        grad.dtype == torch.float32 and grad.device.type == "cpu" and grad.stride() == passed.stride()
        and (grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last))
        and cpu_kernel() is not None
    ):
        out = torch.empty_strided(grad.shape, grad.stride(), dtype=grad.dtype)
        cpu_kernel().shapebias_mask_mul_f32(grad.data_ptr(), passed.data_ptr(), out.data_ptr(), grad.numel(), torch.get_num_threads())
        return out
    return grad * passed


class _MeanPass(torch.autograd.Function):
    """``topk_mean`` with the definition's arithmetic, in the same order (so bitwise equal), saving
    only the boolean mask: forward ``sum(kept) / keep * mask``, backward ``sum(grad * mask) / keep * mask``."""

    @staticmethod
    def forward(ctx, x, k: float, backend: str):
        n, c, h, w = x.shape
        keep = kept_count(k, h * w)
        if backend == "cpu" and x.is_contiguous():
            kept, mask = _cpu_topk(x, keep, False, want_out=True)  # same layout as x * mask: same sum
        elif backend == "cpu":
            mask = _cpu_topk(x, keep, False, want_out=False)[1].contiguous()  # the definition's layout
            kept = x * mask
        else:
            mask = _threshold_mask(x, keep) if keep < h * w else torch.ones_like(x, dtype=torch.bool)
            kept = x * mask
        count = torch.tensor(float(keep), dtype=x.dtype, device=x.device)
        mean = kept.sum(dim=(2, 3), keepdim=True) / count
        ctx.save_for_backward(mask, count)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(mask, mean, zero)  # = mean * mask (a where is cheaper than a bool multiply)

    @staticmethod
    def backward(ctx, grad_out):
        mask, count = ctx.saved_tensors
        zero = torch.zeros((), dtype=grad_out.dtype, device=grad_out.device)
        # the product (not a where) for the sum: same layout, so same summation order, as the definition
        grad_mean = (grad_out * mask).sum(dim=(2, 3), keepdim=True) / count
        return torch.where(mask, grad_mean, zero), None, None


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
    if mode == "topk_mean":
        return _MeanPass.apply(x, k, chosen)
    out, _ = _MaskedPass.apply(x, k, mode == "complement", chosen)
    return out


class TopK(nn.Module):
    """Spatial Top-K sparsity per sample and channel (see the module docstring).

    Args:
        k: fraction of spatial positions kept, in (0, 1].
        mode: ``topk``, ``topk_mean`` or ``complement``.
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
