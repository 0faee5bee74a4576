"""FastGAN's settings as plain data: image sizes, latent size, sparsity modes, losses.

No torch here: the FastGAN job's ``Config`` offers these as choices, and ``--help`` reads them
without loading the networks (:mod:`shapebias.models.fastgan`, which re-exports every name).
"""

from __future__ import annotations

from shapebias.errors import ConfigError

SUPPORTED_SIZES = (64, 128, 256, 512, 1024)
NZ = 256  # latent size of the authors' run scripts (``--nz`` default)

# Sparsity after the 32x32 feature map -> shapebias.sparsity mode. ``topk`` is the authors'
# ``TopKMaskHW`` (largest |x|, max(1, int(k * H * W)) positions per channel), what their run
# scripts use; ``topk_mean_raw`` is their ``TopKMaskHWMeanReplace`` (largest raw x, each kept
# position gets the mean of the kept values).
SPARSITY_MODES = {"none": None, "topk": "topk", "topk_mean_raw": "topk_mean_raw"}
SPARSITY = tuple(SPARSITY_MODES)
TOPK_RESOLUTION = 32

AUGMENT = "color,translation"  # DiffAugment's policy
RECON_LOSSES = ("lpips", "l1")


def check_im_size(im_size) -> int:
    try:
        size = int(float(im_size))
    except (TypeError, ValueError):
        size = -1
    if size not in SUPPORTED_SIZES:
        raise ConfigError(
            f"im_size={im_size!r} is not supported by the FastGAN architecture; "
            f"choose one of: {', '.join(map(str, SUPPORTED_SIZES))}"
        )
    return size
