"""Masks and statistics: Top-K / complement masks, Gram matrices, the synthesis loss."""

from __future__ import annotations

import torch

from shapebias.errors import check_choice
from shapebias.sparsity import topk_mask
from shapebias.synthesis.vgg import VGGFeatures
from shapebias.synthesis_spec import MASKS, METHODS  # noqa: F401  (also importable here)


def apply_mask(f: torch.Tensor, mask: str, k: float) -> torch.Tensor:
    """Keep ``all`` activations, only the ``topk`` positions, or their ``complement``.

    The mask is computed from ``f`` itself (detached: it is a selection, gradients flow through
    the kept values), per sample and channel, over the spatial positions.
    """
    check_choice("mask", mask, MASKS)
    if mask == "all":
        return f
    keep = topk_mask(f, k)
    if mask == "complement":
        keep = ~keep
    return f * keep.to(f.dtype)


def gram_matrix(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix of a feature map (N, C, H, W) -> (N, C, C), averaged over positions.

    ``G[n, i, j] = sum_p f[n, i, p] * f[n, j, p] / (H * W)``.
    """
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def _statistic(f: torch.Tensor, method: str) -> torch.Tensor:
    return gram_matrix(f) if method == "texture" else f


def target_statistics(
    model: VGGFeatures, target: torch.Tensor, mask: str, k: float, method: str
) -> dict[str, torch.Tensor]:
    """The masked statistics (Gram matrices or feature maps) of the target, per layer."""
    with torch.no_grad():
        feats = model(target)
    return {name: _statistic(apply_mask(f, mask, k), method).detach() for name, f in feats.items()}


def synthesis_loss(
    model: VGGFeatures, x: torch.Tensor, targets: dict[str, torch.Tensor], mask: str, k: float, method: str
) -> torch.Tensor:
    """Sum over layers of ``||S(x) - S(t)||^2 / ||S(t)||^2`` with S the masked statistic."""
    feats = model(x)
    loss = x.new_zeros(())
    for name, target in targets.items():
        stat = _statistic(apply_mask(feats[name], mask, k), method)
        loss = loss + (stat - target).pow(2).sum() / (target.pow(2).sum() + 1e-8)
    return loss


def range_penalty(x: torch.Tensor) -> torch.Tensor:
    """Squared distance of the pixels outside [0, 1] (keeps L-BFGS in range without clamping it)."""
    return (torch.relu(x - 1).pow(2) + torch.relu(-x).pow(2)).sum()
