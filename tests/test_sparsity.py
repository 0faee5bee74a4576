"""Top-K: the definition, the direct formulation, and the fast paths, compared exactly.

Exact means ``torch.equal`` on outputs, on the kept-position masks and on gradients (ties
included), not a tolerance.
"""

from __future__ import annotations

import ctypes
import mmap
import warnings
from pathlib import Path

import pytest
import torch

from shapebias import _topk_kernel as K
from shapebias import sparsity as S
from shapebias.errors import ConfigError

FAST = ["cpu", "torch"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")


def distinct(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Values with distinct |x| in every row (no ties), random signs."""
    g = torch.Generator().manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    mags = (torch.randperm(n, generator=g).to(torch.float64) + 1) / n
    signs = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    return (mags * signs).reshape(shape).to(dtype)


def tied(*shape: int, seed: int = 0, levels: int = 3, dtype=torch.float32) -> torch.Tensor:
    """Few distinct magnitudes (plenty of ties at the threshold), both signs and zeros."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-levels, levels + 1, shape, generator=g).to(dtype)) / 2


def run(fn, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (gx,) = torch.autograd.grad(y, x, grad)
    return y.detach(), gx


def assert_same(fast, ref, x: torch.Tensor, seed: int = 1):
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    y1, g1 = run(fast, x, g)
    y2, g2 = run(ref, x, g)
    assert y1.dtype == y2.dtype and y1.shape == y2.shape
    assert torch.equal(y1, y2), "values differ"
    assert torch.equal(g1, g2), "gradients differ"


# ---- the definition and the direct formulation -----------------------------------------------


@pytest.mark.parametrize("mode", S.MODES)
@pytest.mark.parametrize("k", [0.001, 0.05, 0.2, 0.5, 1.0])
def test_reference_matches_direct_formulation_without_ties(mode, k):
    x = distinct(2, 3, 9, 11)
    assert_same(lambda t: S.topk_direct(t, k, mode), lambda t: S.topk_reference(t, k, mode), x)


def test_reference_semantics_by_hand():
    x = torch.tensor([[[[3.0, -5.0], [1.0, -2.0]]]], requires_grad=True)
    # k = 0.5 keeps 2 of 4 positions: -5 and 3
    assert torch.equal(S.topk_reference(x, 0.5), torch.tensor([[[[3.0, -5.0], [0.0, 0.0]]]]))
    assert torch.equal(S.topk_reference(x, 0.5, "complement"), torch.tensor([[[[0.0, 0.0], [1.0, -2.0]]]]))
    assert torch.equal(S.topk_reference(x, 0.5, "topk_mean"), torch.tensor([[[[-1.0, -1.0], [0.0, 0.0]]]]))
    # k so small that one position is kept
    assert torch.equal(S.topk_reference(x, 0.01), torch.tensor([[[[0.0, -5.0], [0.0, 0.0]]]]))
    # k = 1: identity, channel mean, nothing
    assert torch.equal(S.topk_reference(x, 1.0), x.detach())
    assert torch.equal(S.topk_reference(x, 1.0, "topk_mean"), torch.full((1, 1, 2, 2), -0.75))
    assert not S.topk_reference(x, 1.0, "complement").any()
    # gradients of topk_mean: every kept position receives (sum of kept grads) / keep
    y = S.topk_reference(x, 0.5, "topk_mean")
    (g,) = torch.autograd.grad(y, x, torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]]))
    assert torch.equal(g, torch.tensor([[[[1.5, 1.5], [0.0, 0.0]]]]))


def test_tie_rule_is_lowest_index():
    x = torch.tensor([[[[1.0, 2.0, -1.0, 1.0, 0.0, -1.0]]]])
    # keep 3: the 2, then two of the four |x| == 1 ties: the lowest indices 0 and 2
    assert S.reference_mask(x, 0.5).flatten().tolist() == [True, True, True, False, False, False]
    for backend in FAST:
        assert torch.equal(S.topk_mask(x, 0.5, backend), S.reference_mask(x, 0.5))
    zeros = torch.zeros(1, 1, 4, 4)
    for backend in FAST:
        assert S.topk_mask(zeros, 0.25, backend).flatten().tolist() == [True] * 4 + [False] * 12


def test_kept_count():
    assert S.kept_count(0.2, 3136) == 627
    assert S.kept_count(1e-6, 49) == 1
    assert S.kept_count(1.0, 49) == 49


# ---- the fast paths, exactly equal to the definition ---------------------------------------


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", S.MODES)
@pytest.mark.parametrize("k", [1e-4, 0.05, 0.2, 0.7, 1.0])
@pytest.mark.parametrize("make", [distinct, tied], ids=["distinct", "ties"])
def test_fast_equals_definition(backend, mode, k, make):
    x = make(3, 4, 7, 13)  # odd spatial size (91 positions)
    assert_same(lambda t: S.topk(t, k, mode, backend), lambda t: S.topk_reference(t, k, mode), x)
    assert torch.equal(S.topk_mask(x, k, backend), S.reference_mask(x, k))


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 17), (2, 3, 17, 1), (1, 2, 2, 2), (2, 5, 56, 56)])
def test_fast_odd_shapes(backend, shape):
    for k in (0.01, 0.3, 1.0):
        x = tied(*shape, levels=5) + 0.01 * distinct(*shape)
        for mode in S.MODES:
            assert_same(
                lambda t, k=k, mode=mode: S.topk(t, k, mode, backend),
                lambda t, k=k, mode=mode: S.topk_reference(t, k, mode),
                x,
            )


@pytest.mark.parametrize("backend", FAST)
def test_fast_real_activations(backend):
    # post-ReLU maps: many exact zeros, so at large k the threshold is a tie at 0
    x = torch.relu(torch.randn(4, 8, 28, 28, generator=torch.Generator().manual_seed(3)))
    for k in (0.05, 0.2, 0.6, 0.9):
        for mode in S.MODES:
            assert_same(
                lambda t, k=k, mode=mode: S.topk(t, k, mode, backend),
                lambda t, k=k, mode=mode: S.topk_reference(t, k, mode),
                x,
            )


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "size1_view"])
def test_fast_layouts(backend, layout):
    base = tied(2, 6, 10, 12, levels=4) + 0.001 * distinct(2, 6, 10, 12)
    if layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = base.transpose(2, 3)  # (2, 6, 12, 10), not contiguous in any format
    elif layout == "sliced":
        x = base[:, ::2, 1:, ::3]  # strided view
    else:
        x = base[:1, 2:3]  # contiguous by torch's rules, with the parent's strides on size-1 dims
        assert x.is_contiguous() and x.stride() != torch.empty(x.shape).stride()
        x = x.expand(1, 1, 10, 12).as_strided((1, 1, 10, 12), (999, 777, 12, 1))
        assert x.is_contiguous()
    assert layout == "size1_view" or not x.is_contiguous()
    for mode in S.MODES:
        assert_same(
            lambda t, mode=mode: S.topk(t, 0.2, mode, backend), lambda t, mode=mode: S.topk_reference(t, 0.2, mode), x
        )


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_fast_dtypes(backend, dtype):
    # bfloat16/float16 have few distinct values, so ties are frequent: a real test of the tie rule
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(5)).to(dtype)
    for mode in S.MODES:
        for k in (0.1, 0.5):
            assert_same(
                lambda t, k=k, mode=mode: S.topk(t, k, mode, backend),
                lambda t, k=k, mode=mode: S.topk_reference(t, k, mode),
                x,
            )


def misleading_sample(kind: str, seed: int = 0) -> torch.Tensor:
    """(2, 3, 32, 32) maps whose every fourth position differs from the others: the positions the
    C kernel samples (256 of a 1024-position row) to guess the bin (top byte of the key) that holds
    the threshold. ``near``: the sample sits one bin below the others, so the guess is one bin off;
    ``far``: far below, so both guesses are wrong and the full histogram decides."""
    g = torch.Generator().manual_seed(seed)
    mags = 1 + torch.rand(2, 3, 32, 32, generator=g)  # [1, 2): the others
    sampled = torch.rand(2, 3, 32, 8, generator=g)
    mags[..., ::4] = 0.5 + sampled / 2 if kind == "near" else 1e-3 * (1 + sampled)
    return mags * (torch.randint(0, 2, mags.shape, generator=g) * 2 - 1)


@pytest.mark.parametrize("kind", ["near", "far"])
def test_fast_rows_whose_sample_misleads(kind):
    x = misleading_sample(kind)
    for k in (0.05, 0.2, 0.5, 0.9):
        for mode in S.MODES:
            assert_same(
                lambda t, k=k, mode=mode: S.topk(t, k, mode),
                lambda t, k=k, mode=mode: S.topk_reference(t, k, mode),
                x,
            )


def test_cpu_kernel_builds_and_is_used():
    if S.cpu_kernel() is None:
        pytest.skip(f"no C compiler here: {K.error}")
    x = distinct(1, 2, 5, 5)
    assert S._backend(x, None) == "cpu"
    assert S._backend(x.double(), None) == "torch"  # the kernel covers float32 only


@pytest.mark.parametrize("mode", S.MODES)
def test_fast_saves_only_a_mask(mode):
    x = distinct(2, 3, 8, 8).requires_grad_(True)
    saved = S.topk(x, 0.2, mode, "torch").grad_fn.saved_tensors
    assert all(t.dtype == torch.bool for t in saved)
    if S.cpu_kernel() is None:
        return
    (bits,) = S.topk(x, 0.2, mode, "cpu").grad_fn.saved_tensors  # packed: one bit per position and code bit
    planes = 2 if mode in S.MEAN_MODES else 1
    assert bits.dtype == torch.uint8 and bits.shape == (2 * 3, planes * 8)


def test_fallback_without_compiler(monkeypatch, tmp_path):
    monkeypatch.setattr(K, "_lib", None)
    monkeypatch.setattr(K, "error", None)
    monkeypatch.setenv("SHAPEBIAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    x = tied(2, 3, 6, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert S._backend(x, None) == "torch"
    assert any("C Top-K kernel is unavailable" in str(w.message) for w in caught)
    assert_same(lambda t: S.topk(t, 0.3), lambda t: S.topk_reference(t, 0.3), x)
    with pytest.raises(RuntimeError, match="unavailable"):
        S.topk(x, 0.3, backend="cpu")


def test_huge_pages_setting(monkeypatch):
    if S.cpu_kernel() is None:
        pytest.skip(f"no C compiler here: {K.error}")
    x = distinct(2, 3, 8, 8)
    for value in ("0", "1"):
        monkeypatch.setenv(S.HUGE_PAGES_ENV, value)
        for mode in S.MODES:
            assert_same(
                lambda t, mode=mode: S.topk(t, 0.2, mode, "cpu"), lambda t, mode=mode: S.topk_reference(t, 0.2, mode), x
            )
    monkeypatch.setenv(S.HUGE_PAGES_ENV, "yes")
    with pytest.raises(ConfigError, match="SHAPEBIAS_TOPK_HUGE_PAGES='yes'.*0, 1"):
        S.topk(x, 0.2, backend="cpu")


def _vm_flags(address: int) -> set[str]:
    """VmFlags of this process's mapping that holds ``address`` (``hg``: huge pages asked for by madvise)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if not head.endswith(":"):  # a mapping's first line: "start-end perms ..."
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_kernel_asks_for_huge_pages_for_its_output():
    """The request (madvise MADV_HUGEPAGE, the mapping's ``hg`` flag) is checked, not whether the
    system granted the pages: that depends on its free memory, not on the kernel."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[never]" in thp.read_text():
        pytest.skip("transparent huge pages are not available here")
    if S.cpu_kernel() is None:
        pytest.skip(f"no C compiler here: {K.error}")
    x = torch.rand(32, 64, 32, 32)  # 8 MiB: at least three whole 2 MiB pages in a mapping of its size
    keep = S.kept_count(0.2, 32 * 32)
    bits = torch.empty(32 * 64, 2 * 128, dtype=torch.uint8)
    lib = S.cpu_kernel()
    found = {}
    for huge in (1, 0):
        for name in ("shapebias_topk_f32", "shapebias_topk_backward_f32"):
            # fresh, untouched private anonymous memory, as a large torch.empty's
            out = mmap.mmap(-1, x.numel() * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            address = ctypes.addressof(ctypes.c_char.from_buffer(out))
            if name == "shapebias_topk_f32":
                args = (x.data_ptr(), address, None, bits.data_ptr())
            else:
                args = (x.data_ptr(), bits.data_ptr(), address)
            assert getattr(lib, name)(*args, *S._rows(x), keep, K.MODE_MEAN_NONZERO, 1, huge) == 0
            found[huge, name] = "hg" in _vm_flags(address + x.numel() * 2)
            out.close()
    assert found == {
        (1, "shapebias_topk_f32"): True,
        (1, "shapebias_topk_backward_f32"): True,
        (0, "shapebias_topk_f32"): False,
        (0, "shapebias_topk_backward_f32"): False,
    }


def test_backend_setting(monkeypatch):
    x = distinct(1, 1, 4, 4)
    monkeypatch.setenv(S.BACKEND_ENV, "reference")
    assert S._backend(x, None) == "reference"
    monkeypatch.setenv(S.BACKEND_ENV, "fastest")
    with pytest.raises(ConfigError, match="SHAPEBIAS_TOPK_BACKEND='fastest'"):
        S.topk(x, 0.5)


# ---- the module ------------------------------------------------------------------------------


def test_module_validation_and_identity():
    x = distinct(2, 2, 4, 4)
    assert S.TopK(1.0)(x) is x
    assert "k=0.2" in repr(S.TopK(0.2, "topk_mean"))
    with pytest.raises(ConfigError, match="topk"):
        S.TopK(0.0)
    with pytest.raises(ConfigError, match="topk"):
        S.TopK(1.5)
    with pytest.raises(ConfigError, match="mode"):
        S.TopK(0.2, "median")
    with pytest.raises(ConfigError, match="backend"):
        S.TopK(0.2, backend="gpu")
    with pytest.raises(ValueError, match="N, C, H, W"):
        S.TopK(0.2)(torch.ones(3, 4))


@pytest.mark.parametrize("mode", S.MODES)
def test_module_in_a_network_trains_like_the_definition(mode):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 10, 10)

    def loss(fn):
        conv.zero_grad()
        out = fn(torch.relu(conv(x))).square().mean()
        out.backward()
        return out.detach(), conv.weight.grad.clone()

    a = loss(S.TopK(0.2, mode))
    b = loss(lambda t: S.topk_reference(t, 0.2, mode))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---- CUDA (skipped where absent) ------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("mode", S.MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_equals_definition(mode, dtype):
    for make in (distinct, tied):
        x = make(4, 8, 14, 14).to(dtype).cuda()
        for k in (0.01, 0.2, 1.0):
            assert_same(
                lambda t, k=k, mode=mode: S.topk(t, k, mode), lambda t, k=k, mode=mode: S.topk_reference(t, k, mode), x
            )
            assert torch.equal(S.topk_mask(x, k), S.reference_mask(x, k))


@CUDA
def test_cuda_channels_last():
    x = tied(2, 8, 12, 12).cuda().contiguous(memory_format=torch.channels_last)
    assert_same(lambda t: S.topk(t, 0.2), lambda t: S.topk_reference(t, 0.2), x)
