"""FastGAN (Liu et al., ICLR 2021) with the Top-K sparsity of Li et al. (NeurIPS 2023).

Built as the authors ran it (``Crazy-Jack/nips2023_shape_vs_texture``, ``few-shot-img-syn/TopKGen``):
their generator (29,127,846 parameters at 256 px, ngf = 64) and discriminator (11,526,160 at
256 px, ndf = 64), their weight init, outputs without ``tanh`` below 1,024 px, Top-K after the
32x32 feature map, and the seed's working noise injection (weights from 0).

* :mod:`.generator` — :class:`Generator` and the sparsity choices.
* :mod:`.discriminator` — :class:`Discriminator` with its decoders and reconstruction targets.
* :mod:`.training` — DiffAugment, hinge losses, EMA, the summed reconstruction loss, perturbation.

Supported sizes: 256, 512, 1024 as in the paper, and 64, 128 for tests and CPU runs.
"""

from __future__ import annotations

import torch

from shapebias.models.fastgan.common import (
    NZ,
    SUPPORTED_SIZES,
    channels,
    check_im_size,
    init_weights,
    small_size,
)
from shapebias.models.fastgan.discriminator import Discriminator, crop_quadrant
from shapebias.models.fastgan.generator import SPARSITY, TOPK_RESOLUTION, Generator, NoiseInjection
from shapebias.models.fastgan.training import (
    AUGMENT,
    RECON_LOSSES,
    VGG16_FILE,
    check_recon_loss,
    d_hinge_fake,
    d_hinge_real,
    diff_augment,
    ema_copy,
    ema_update,
    g_loss,
    perturb,
    random_part,
    reconstruction_loss,
)

__all__ = [
    "AUGMENT",
    "NZ",
    "RECON_LOSSES",
    "SPARSITY",
    "SUPPORTED_SIZES",
    "TOPK_RESOLUTION",
    "VGG16_FILE",
    "Discriminator",
    "Generator",
    "NoiseInjection",
    "build",
    "channels",
    "check_im_size",
    "check_recon_loss",
    "crop_quadrant",
    "d_hinge_fake",
    "d_hinge_real",
    "diff_augment",
    "ema_copy",
    "ema_update",
    "g_loss",
    "init_weights",
    "perturb",
    "random_part",
    "reconstruction_loss",
    "sample_like_authors",
    "small_size",
]


def build(im_size: int, width: int = 64, **generator_kwargs) -> tuple[Generator, Discriminator]:
    """A generator and a discriminator for ``im_size`` (ngf = ndf = ``width``, nz 256)."""
    return Generator(im_size, width, **generator_kwargs), Discriminator(im_size, width)


@torch.no_grad()
def sample_like_authors(generator: Generator, z: torch.Tensor) -> torch.Tensor:
    """``generator(z)[0]`` with batch norm in training mode, as the authors sample for FID.

    Their generator never leaves ``train()``: its batch norms normalise each sampling batch by
    its own statistics. The buffers this updates (batch-norm running statistics, spectral-norm
    vectors) are restored afterwards, and the module's mode is put back.
    """
    was_training = generator.training
    saved = [(b, b.clone()) for b in generator.buffers()]
    generator.train()
    try:
        return generator(z)[0]
    finally:
        for b, value in saved:
            b.copy_(value)
        generator.train(was_training)
