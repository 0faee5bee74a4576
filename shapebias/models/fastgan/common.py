"""Building blocks shared by the FastGAN generator and discriminator, and the authors' init."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from shapebias.models.fastgan_spec import NZ, SUPPORTED_SIZES, check_im_size  # noqa: F401  (also importable here)

# Generator channel multipliers per resolution (times ``ngf``), the authors' ``nfc_multi``.
G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
# The discriminator's own table (times ``ndf``): 16x wider at 8, 8x at 16, 4x at 32.
D_MULT = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}


def small_size(im_size: int) -> int:
    """Size of the generator's second output and of the decoders' reconstructions."""
    return min(128, im_size // 2)


def channels(width: int, mult: dict[int, float] = G_MULT) -> dict[int, int]:
    """``int(m * width)`` per resolution (at least 4, so that tiny test widths still work)."""
    return {r: max(4, int(m * width)) for r, m in mult.items()}


def conv(*args, spectral: bool = True, **kwargs) -> nn.Module:
    layer = nn.Conv2d(*args, **kwargs)
    return spectral_norm(layer) if spectral else layer


def up_block(cin: int, cout: int, spectral: bool) -> nn.Sequential:
    """Nearest x2 upsampling, 3x3 conv to ``2 * cout``, batch norm, GLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv(cin, cout * 2, 3, 1, 1, bias=False, spectral=spectral),
        nn.BatchNorm2d(cout * 2),
        nn.GLU(dim=1),
    )


class SkipLayerExcitation(nn.Module):
    """SLE: a low-resolution feature gates the channels of a high-resolution one.

    ``gate = sigmoid(conv1x1(swish(conv4x4(avgpool4(x_low)))))``; returns ``x_high * gate``.
    """

    def __init__(self, c_low: int, c_high: int, spectral: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            conv(c_low, c_high, 4, 1, 0, bias=False, spectral=spectral),
            nn.SiLU(),
            conv(c_high, c_high, 1, 1, 0, bias=False, spectral=spectral),
            nn.Sigmoid(),
        )

    def forward(self, x_low: torch.Tensor, x_high: torch.Tensor) -> torch.Tensor:
        return x_high * self.main(x_low)


def _weight_tensor(module: nn.Module) -> torch.Tensor:
    """The trainable weight: the spectral-norm parametrisation's original, or the plain weight."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations.weight.original
    return cast(torch.Tensor, module.weight)  # nn.Module.__getattr__ is typed Tensor | Module


@torch.no_grad()
def init_weights(model: nn.Module) -> nn.Module:
    """The authors' ``weights_init``: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02),
    batch-norm shifts 0.

    Their spectral norm (``torch.nn.utils.spectral_norm``) leaves ``module.weight`` sharing storage
    with ``weight_orig`` until the first forward pass, so their init lands in the trained tensor;
    here it is written into the parametrisation's ``original``.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            _weight_tensor(m).normal_(0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.normal_(1.0, 0.02)
            m.bias.zero_()
    return model
