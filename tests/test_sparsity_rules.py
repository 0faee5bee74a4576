"""The two mean-replacement rules against independently written versions of their sources' code.

Inputs and gradients are multiples of 1/16 of modest size, so that every sum is exact in float32
and the sources' summation order (``torch.sum``, ``torch.mean``) gives the same bits as the
definition's fixed order: the comparison is ``torch.equal``, values and gradients.
"""

from __future__ import annotations

import pytest
import torch

from shapebias import sparsity as S

BACKENDS = ["cpu", "torch", "reference"]


def sixteenths(*shape: int, seed: int, shift: torch.Tensor | float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.round((torch.randn(shape, generator=g) + shift) * 16) / 16


def sparse_post_relu(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Post-ReLU maps whose channels range from mostly zero to mostly positive, so that at
    k = 0.2 some channels have fewer positive values than kept positions (kept zeros)."""
    shift = torch.linspace(-2.5, 0.5, c).reshape(1, c, 1, 1)
    return torch.relu(sixteenths(n, c, h, w, seed=seed, shift=shift))


def prior_mean_replace(x: torch.Tensor, k: float) -> torch.Tensor:
    """The earlier reproduction's ResNet rule, restated: rank |x|, sum of kept / kept count,
    written where the kept value is non-zero (the kept value itself elsewhere)."""
    n, c, h, w = x.shape
    keep = max(1, int(k * h * w))
    rows = x.reshape(n * c, h * w)
    order = torch.argsort(rows.abs(), dim=1, descending=True, stable=True)[:, :keep]
    onehot = torch.zeros_like(rows).scatter(1, order, 1.0)
    kept = rows * onehot
    mean = kept.sum(dim=1, keepdim=True) / keep
    return torch.where(kept != 0, mean, kept).reshape(n, c, h, w)


def authors_gan_mean_replace(x: torch.Tensor, k: float) -> torch.Tensor:
    """The authors' GAN rule, restated: the keep largest raw values, their mean scattered back."""
    n, c, h, w = x.shape
    keep = max(1, int(k * h * w))
    rows = x.reshape(n, c, h * w)
    values, index = rows.topk(keep, dim=2)
    mean = values.mean(dim=2, keepdim=True).expand(-1, -1, keep)
    return torch.zeros_like(rows).scatter(2, index, mean).reshape(n, c, h, w)


def value_and_grad(fn, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (gx,) = torch.autograd.grad(y, x, grad)
    return y.detach(), gx


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_topk_mean_is_the_prior_reproduction_rule_on_sparse_post_relu_maps(backend, layout):
    x = sparse_post_relu(2, 12, 14, 14)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    g = sixteenths(*x.shape, seed=1)
    positives = (x > 0).flatten(2).sum(-1)
    keep = S.kept_count(0.2, 14 * 14)
    assert (positives < keep).any() and (positives > keep).any()  # both kinds of channel present
    y, gx = value_and_grad(lambda t: S.topk(t, 0.2, "topk_mean", backend), x, g)
    y_ref, gx_ref = value_and_grad(lambda t: prior_mean_replace(t, 0.2), x, g)
    assert torch.equal(y, y_ref), "values differ"
    assert torch.equal(gx, gx_ref), "gradients differ"
    # kept zeros stay zero: no more non-zeros than positive values in a channel, never more than keep
    nonzero = (y != 0).flatten(2).sum(-1)
    assert torch.equal(nonzero, torch.minimum(positives, torch.full_like(positives, keep)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_mean_raw_is_the_authors_gan_rule_on_signed_inputs(backend):
    n, c, h, w = 2, 5, 9, 11
    g = torch.Generator().manual_seed(2)
    values = (torch.randperm(n * c * h * w, generator=g).float() - n * c * h * w / 2) / 16
    x = values.reshape(n, c, h, w)  # distinct signed values: no ties to break
    grad = sixteenths(n, c, h, w, seed=3)
    for k in (0.05, 0.2, 0.7):
        y, gx = value_and_grad(lambda t, k=k: S.topk(t, k, "topk_mean_raw", backend), x, grad)
        y_ref, gx_ref = value_and_grad(lambda t, k=k: authors_gan_mean_replace(t, k), x, grad)
        assert torch.equal(y, y_ref), f"values differ at k={k}"
        assert torch.equal(gx, gx_ref), f"gradients differ at k={k}"


def test_the_two_rules_differ_where_their_sources_do():
    x = torch.tensor([[[[4.0, -6.0, 1.0, 0.0]]]])
    # |x| ranking keeps -6 and 4: mean -1; raw ranking keeps 4 and 1: mean 2.5
    assert S.topk_reference(x, 0.5, "topk_mean").flatten().tolist() == [-1.0, -1.0, 0.0, 0.0]
    assert S.topk_reference(x, 0.5, "topk_mean_raw").flatten().tolist() == [2.5, 0.0, 2.5, 0.0]
    # a kept zero: the prior reproduction leaves it at zero, the authors' GAN rule writes the mean
    z = torch.tensor([[[[3.0, 0.0, 0.0, 0.0]]]])
    assert S.topk_reference(z, 0.5, "topk_mean").flatten().tolist() == [1.5, 0.0, 0.0, 0.0]
    assert S.topk_reference(z, 0.5, "topk_mean_raw").flatten().tolist() == [1.5, 1.5, 0.0, 0.0]


def test_tree_sum_order_by_hand():
    v = torch.tensor([1e8, 1.0, -1e8, 1.0, 3.0]).reshape(1, 1, 1, 5)
    # padded to 8: ((1e8 + 3) + (-1e8 + 0)) + ((1 + 0) + (1 + 0)) = 0 + 2 in float32 (1e8 + 3 rounds to 1e8)
    assert S.tree_sum(v).item() == 2.0
    assert S.tree_sum(torch.full((2, 3, 7, 7), 0.5)).flatten().tolist() == [24.5] * 6


def test_kernel_source_is_package_data():
    from shapebias import _topk_kernel

    assert "shapebias_topk_f32" in _topk_kernel.source()
    with open(S.__file__) as f:
        assert "#include" not in f.read()
