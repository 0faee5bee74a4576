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
"""

from __future__ import annotations

import torch
from torch import nn

from shapebias.errors import check_choice, check_fraction

MODES = ("topk", "topk_mean", "complement")


def kept_count(k: float, spatial: int) -> int:
    """Number of positions kept per channel: ``max(1, int(k * spatial))``."""
    return max(1, int(k * spatial))


def topk_mask(x: torch.Tensor, k: float) -> torch.Tensor:
    """Boolean mask of the kept positions, same shape as ``x`` (N, C, H, W).

    Ties are broken as ``torch.topk`` breaks them on ``|x|`` flattened over (H, W).
    """
    n, c, h, w = x.shape
    flat = x.detach().reshape(n, c, h * w)
    keep = kept_count(k, h * w)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep >= h * w:
        mask.fill_(True)
    else:
        idx = flat.abs().topk(keep, dim=-1, sorted=False).indices
        mask.scatter_(-1, idx, True)
    return mask.reshape(n, c, h, w)


def topk_reference(x: torch.Tensor, k: float, mode: str = "topk") -> torch.Tensor:
    """The direct formulation (indices from ``torch.topk``, then a scattered mask).

    Kept as the definition that faster implementations are tested against.
    """
    check_choice("mode", mode, MODES)
    mask = topk_mask(x, k).to(x.dtype)
    if mode == "topk":
        return x * mask
    if mode == "complement":
        return x * (1 - mask)
    kept = x * mask
    count = mask.sum(dim=(2, 3), keepdim=True)
    mean = kept.sum(dim=(2, 3), keepdim=True) / count
    return mean * mask


class TopK(nn.Module):
    """Spatial Top-K sparsity per sample and channel (see the module docstring).

    Args:
        k: fraction of spatial positions kept, in (0, 1].
        mode: ``topk``, ``topk_mean`` or ``complement``.
    """

    def __init__(self, k: float, mode: str = "topk") -> None:
        super().__init__()
        self.k = check_fraction("topk", k)
        check_choice("mode", mode, MODES)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"TopK expects a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if self.mode == "topk" and self.k >= 1.0:
            return x
        return topk_reference(x, self.k, self.mode)

    def extra_repr(self) -> str:
        return f"k={self.k}, mode={self.mode!r}"
