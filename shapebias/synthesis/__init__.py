"""Texture synthesis and feature inversion through Top-K masks (Li et al., 2023, Sec. 3.1).

Gatys et al. (2015), "Texture Synthesis Using Convolutional Neural Networks": a texture is
summarised by the Gram matrices of VGG-19 feature maps (here ``relu1_1`` and ``pool1``..``pool4``
of the network whose max-pools are replaced by average pools); a new image is made by starting
from white noise and minimising the distance between its Gram matrices and the target's with
L-BFGS (strong-Wolfe line search, 100 steps x 20 iterations as the authors); the result's colour
histogram is matched to the target's at the end.

Li et al. ask which neurons carry an object's structure. A *mask* is applied to the activations
of both the target and the image being optimised, each with its own spatial Top-K mask (the
:func:`shapebias.sparsity.topk_mask` of that feature map), before the Gram matrices are taken:

``all``         every activation (plain Gatys synthesis);
``topk``        only the Top-K positions of every channel;
``complement``  only the other positions. ``topk`` and ``complement`` are disjoint and their
                sum is ``all``.

*Feature inversion* (method ``inversion``) matches the masked feature maps themselves instead of
their Gram matrices, so it keeps spatial layout.

How much structure a result keeps is measured against the original with SSIM and with the
correlation of Sobel edge maps (:func:`structure_metrics`).

Deviations from the authors' ``texture-synthesis-visualization`` (listed in
``docs/texture-synthesis.md``): torchvision's ImageNet VGG-19 with ImageNet normalisation instead
of their Gatys-normalised Caffe VGG-19 (BGR, mean-subtracted); each layer's loss divided by the
squared norm of the target's statistic instead of their fixed weight 1e9 / 4 on Gram matrices
normalised by the feature count; pixels kept in range by a squared penalty and a final clamp
instead of their sigmoid reparametrisation; a uniform-noise start instead of clamped Gaussian.

Modules: :mod:`.vgg` (network, weights), :mod:`.gram` (masks, statistics, loss), :mod:`.optimize`
(L-BFGS), :mod:`.structure` (metrics), :mod:`.images` (inputs, grids). None imports MLflow or Ray.
"""

from __future__ import annotations

from shapebias.synthesis.gram import (
    MASKS,
    METHODS,
    apply_mask,
    gram_matrix,
    range_penalty,
    synthesis_loss,
    target_statistics,
)
from shapebias.synthesis.images import IMAGE_SUFFIXES, SKIMAGE_SAMPLES, grid, load_images, prepare_image
from shapebias.synthesis.optimize import (
    ITERATIONS_PER_STEP,
    LINE_SEARCH,
    OPTIMIZER,
    STEPS,
    SynthesisResult,
    match_histograms,
    noise_image,
    optimizer_settings,
    synthesize,
    to_image,
    to_tensor,
)
from shapebias.synthesis.structure import edge_correlation, ssim, structure_metrics
from shapebias.synthesis.vgg import (
    DEFAULT_LAYERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG19_FILE,
    VGG19_URL,
    VGGFeatures,
    build_vgg19,
    check_layers,
    default_weights_path,
    min_image_size,
    resolve_weights,
    vgg19_layer_names,
)

__all__ = [
    "DEFAULT_LAYERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "ITERATIONS_PER_STEP",
    "LINE_SEARCH",
    "MASKS",
    "METHODS",
    "OPTIMIZER",
    "SKIMAGE_SAMPLES",
    "STEPS",
    "SynthesisResult",
    "VGG19_FILE",
    "VGG19_URL",
    "VGGFeatures",
    "apply_mask",
    "build_vgg19",
    "check_layers",
    "default_weights_path",
    "edge_correlation",
    "grid",
    "gram_matrix",
    "load_images",
    "match_histograms",
    "min_image_size",
    "noise_image",
    "optimizer_settings",
    "prepare_image",
    "range_penalty",
    "resolve_weights",
    "ssim",
    "structure_metrics",
    "synthesis_loss",
    "synthesize",
    "target_statistics",
    "to_image",
    "to_tensor",
    "vgg19_layer_names",
]
