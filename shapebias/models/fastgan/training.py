"""What FastGAN training needs besides the networks: DiffAugment, losses, EMA, perturbation.

* **DiffAugment** (Zhao et al., 2020) "color,translation" on real and fake images before D.
* **Hinge loss with random margins** (margin drawn in [0.8, 1.0] per logit) for D, ``-D(G(z))``
  for G, and an **EMA** copy of G (decay 0.999) for sampling.
* **Reconstruction loss** of D's decoders: LPIPS (VGG) *summed* over the batch, as the authors'
  ``percept(rec, target).sum()``; ``l1`` is a named substitute for machines without VGG-16 weights.
* **Perturbation** after a rollback: every parameter plus U(-eps, eps), the authors' ``perturb_params``.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shapebias.errors import ConfigError, WeightsError, check_choice
from shapebias.models.fastgan_spec import AUGMENT, RECON_LOSSES


def diff_augment(x: torch.Tensor, policy: str = AUGMENT) -> torch.Tensor:
    """DiffAugment: differentiable augmentations, per sample.

    ``color``: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the channel mean),
    contrast (x U(0.5, 1.5) around the image mean). ``translation``: shift by up to 1/8 of the
    size with zero padding.
    """
    for name in filter(None, policy.split(",")):
        if name == "color":
            n = x.shape[0]
            x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean
        elif name == "translation":
            x = _translate(x, 0.125)
        else:
            raise ConfigError(f"DiffAugment policy {name!r} is not supported; choose from: color, translation")
    return x


def _translate(x: torch.Tensor, ratio: float) -> torch.Tensor:
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - ty  # output (y, x) reads input (y - ty, x - tx)
    xs = torch.arange(w, device=x.device).view(1, 1, w) - tx
    valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return out * valid.to(x.dtype)


def d_hinge_real(logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss on real logits with a random margin in [0.8, 1.0] per logit."""
    return F.relu(torch.rand_like(logits) * 0.2 + 0.8 - logits).mean()


def d_hinge_fake(logits: torch.Tensor) -> torch.Tensor:
    return F.relu(torch.rand_like(logits) * 0.2 + 0.8 + logits).mean()


def g_loss(logits: torch.Tensor) -> torch.Tensor:
    return -logits.mean()


def random_part() -> int:
    return random.randint(0, 3)


def ema_copy(generator: nn.Module) -> nn.Module:
    ema = copy.deepcopy(generator).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float = 0.999) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


@torch.no_grad()
def perturb(model: nn.Module, eps: float, generator: torch.Generator | None = None) -> None:
    """Add U(-eps, eps) noise to every parameter (the authors' ``perturb_params``)."""
    for p in model.parameters():
        noise = torch.rand(p.shape, generator=generator).to(p.device, p.dtype)
        p.add_((noise - 0.5) * 2 * eps)


VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG-16, which LPIPS builds on


def check_recon_loss(name: str) -> None:
    """ConfigError for an unknown loss; WeightsError if LPIPS's VGG-16 weights are absent."""
    check_choice("recon_loss", name, RECON_LOSSES)
    if name == "lpips":
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        if not (hub / VGG16_FILE).is_file():
            raise WeightsError(
                f"recon_loss=lpips needs torchvision's ImageNet VGG-16 weights {VGG16_FILE}, which are not in {hub}; "
                f"put the file there (https://download.pytorch.org/models/{VGG16_FILE}), or choose the named "
                f"substitute recon_loss=l1 (logged with the run)"
            )


def sum_over_batch(per_sample):
    """``loss(x, y) = sum_n per_sample(x, y)[n]``: the authors' ``percept(x, y).sum()``."""
    return lambda x, y: per_sample(x, y).sum()


def reconstruction_loss(name: str, device: torch.device | str = "cpu"):
    """``loss(x, y) -> scalar`` for images in [-1, 1], summed over the batch.

    ``lpips``: LPIPS (VGG, v0.1 linear layers) per sample, as the authors' ``PerceptualLoss``.
    ``l1``: the mean absolute difference per sample (a substitute without VGG-16 weights).
    """
    check_recon_loss(name)
    if name == "l1":
        return sum_over_batch(lambda x, y: (x - y).abs().flatten(1).mean(1))
    import lpips

    net = lpips.LPIPS(net="vgg", verbose=False).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return sum_over_batch(lambda x, y: net(x, y).flatten())
