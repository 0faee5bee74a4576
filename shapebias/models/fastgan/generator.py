"""The FastGAN generator (Liu et al., ICLR 2021) as the authors of Li et al. (2023) built it.

A 4x4 init layer (transposed conv + GLU), then up-blocks (nearest upsampling, 3x3 conv, batch norm,
GLU) that double the resolution up to ``im_size``; every other block (8, 32, 128, 512 px) is the
heavier "comp" block with two convolutions and optional **noise injection**. **Skip-layer
excitation** (SLE) gates the 64/128/256/512 px features with the 4/8/16/32 px ones. Two outputs:
the image at ``im_size`` and a small one (128 px at 256+).

As in the authors' ``TopKGen/models.py``: at 256 and 512 px both outputs are the last
convolutions *without* ``tanh`` (only their 1,024 px generator applies ``tanh``); here the same
holds for every size below 1,024. Top-K sits right after the 32x32 feature map.

Noise injection is the seed's fix of the authors' dead code: ``x + w * n`` with per-pixel
``n ~ N(0, 1)`` and ``w`` a learned scalar that starts at 0, so the flag changes nothing at
initialisation and the generator learns how much noise to use.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from shapebias.errors import check_choice
from shapebias.models.fastgan.common import (
    NZ,
    SkipLayerExcitation,
    channels,
    check_im_size,
    conv,
    init_weights,
    small_size,
    up_block,
)
from shapebias.models.fastgan_spec import SPARSITY, SPARSITY_MODES, TOPK_RESOLUTION
from shapebias.sparsity import TopK

TANH_FROM = 1024  # the authors' generator applies tanh only at 1,024 px


class NoiseInjection(nn.Module):
    """``x + w * n`` with ``n ~ N(0, 1)`` per pixel (shared over channels), ``w`` learned from 0.

    Active in train and eval mode when ``enabled``; an identity otherwise (the parameter stays so
    that checkpoints load either way).
    """

    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * noise

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}"


class InitLayer(nn.Module):
    """z (N, nz) -> 4x4 feature: transposed 4x4 conv, batch norm, GLU."""

    def __init__(self, nz: int, out: int, spectral: bool) -> None:
        super().__init__()
        layer = nn.ConvTranspose2d(nz, out * 2, 4, 1, 0, bias=False)
        self.main = nn.Sequential(spectral_norm(layer) if spectral else layer, nn.BatchNorm2d(out * 2), nn.GLU(dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


def up_block_comp(cin: int, cout: int, spectral: bool, noise: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv(cin, cout * 2, 3, 1, 1, bias=False, spectral=spectral),
        NoiseInjection(noise),
        nn.BatchNorm2d(cout * 2),
        nn.GLU(dim=1),
        conv(cout, cout * 2, 3, 1, 1, bias=False, spectral=spectral),
        NoiseInjection(noise),
        nn.BatchNorm2d(cout * 2),
        nn.GLU(dim=1),
    )


def sparsity_layer(sparsity: str, topk: float) -> nn.Module:
    check_choice("sparsity", sparsity, SPARSITY)
    mode = SPARSITY_MODES[sparsity]
    return nn.Identity() if mode is None else TopK(topk, mode=mode)


class Generator(nn.Module):
    """FastGAN generator. ``forward(z)`` returns ``(image, small_image)``.

    Outputs are unbounded below 1,024 px (the authors' last conv without ``tanh``); images are
    meant to lie in [-1, 1] and are clamped where they are turned into pixels.

    Args:
        im_size: output resolution, one of :data:`SUPPORTED_SIZES`.
        width: channel width (``ngf``; 64 in the authors' script).
        nz: latent size (256).
        sparsity: one of :data:`SPARSITY`, applied after the 32x32 feature map.
        topk: fraction of the 32x32 positions kept per channel.
        noise_injection: inject per-pixel noise in the comp up-blocks (weights start at 0).
        authors_init: the authors' ``weights_init`` (N(0, 0.02) convs, N(1, 0.02) BN scales).
    """

    def __init__(
        self,
        im_size: int = 256,
        width: int = 64,
        nz: int = NZ,
        sparsity: str = "none",
        topk: float = 0.05,
        noise_injection: bool = False,
        spectral: bool = True,
        authors_init: bool = True,
    ) -> None:
        super().__init__()
        self.im_size = check_im_size(im_size)
        self.small_size = small_size(self.im_size)
        self.nz = nz
        c = channels(width)
        self.init = InitLayer(nz, c[4], spectral)
        self.ups = nn.ModuleDict()
        self.sle = nn.ModuleDict()
        res = 8
        while res <= self.im_size:
            comp = int(math.log2(res)) % 2 == 1  # 8, 32, 128, 512: comp blocks with noise
            block = (
                up_block_comp(c[res // 2], c[res], spectral, noise_injection)
                if comp
                else up_block(c[res // 2], c[res], spectral)
            )
            self.ups[str(res)] = block
            if 64 <= res <= 512:
                self.sle[str(res)] = SkipLayerExcitation(c[res // 16], c[res], spectral)
            res *= 2
        self.sparsity = sparsity_layer(sparsity, topk)
        self.to_big = conv(c[self.im_size], 3, 3, 1, 1, bias=False, spectral=spectral)
        self.to_small = conv(c[self.small_size], 3, 1, 1, 0, bias=False, spectral=spectral)
        self.tanh = self.im_size >= TANH_FROM
        if authors_init:
            init_weights(self)

    def features(self, z: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every intermediate feature map by resolution (the 32x32 one after Top-K)."""
        feats = {4: self.init(z)}
        res = 8
        while res <= self.im_size:
            x = self.ups[str(res)](feats[res // 2])
            if res == TOPK_RESOLUTION:
                x = self.sparsity(x)
            if str(res) in self.sle:
                x = self.sle[str(res)](feats[res // 16], x)
            feats[res] = x
            res *= 2
        return feats

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(z)
        big, small = self.to_big(feats[self.im_size]), self.to_small(feats[self.small_size])
        if self.tanh:
            big, small = torch.tanh(big), torch.tanh(small)
        return big, small
