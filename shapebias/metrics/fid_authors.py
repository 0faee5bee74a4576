"""The authors' FID evaluator (``TopKGen/utlis/eval_agent_module.py``) on pytorch-fid's network.

The authors score with torch-fidelity's ``inception-v3-compat`` extractor, whose weights are
those of pytorch-fid's FID Inception (both ports of TensorFlow's 2015-12-05 graph, file hash
``6726825d``). What their evaluator does, step by step, and what this module does likewise:

* **Generated images** (:func:`fake_pixels`): ``g = G(z)[0]``; nearest resize to 512 px;
  ``x = (g + 1) / 2``; nearest resize to the evaluation size (the generator's); then
  ``uint8(255 * (clamp(x, -1, 1) * 0.5 + 0.5))``. Images in [-1, 1] land in [127, 255].
* **Reference images** (:func:`real_pixels`): every image of the training folder, RGB, resized
  to (size, size) with PIL's bilinear filter (``transforms.Resize``), ``x = ToTensor()``, then the
  same ``uint8(255 * (clamp(x, -1, 1) * 0.5 + 0.5))``: also [127, 255].
* **Network input** (:func:`inception_input`): the uint8 images as float, resized to 299 px with
  TensorFlow 1.x's bilinear rule (torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``,
  ``align_corners=False``: source = destination x in/out, no half-pixel shift), then
  ``(x - 128) / 128``; pytorch-fid's ``InceptionV3`` is built without its own resize and rescaling.
* **Statistics**: mean and covariance of the pool3 features (float64), the Fréchet distance of
  pytorch-fid (the same formula as torch-fidelity's).

This module imports neither MLflow nor Ray.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from shapebias.metrics.fid import DIMS, draw, frechet_distance, load_inception

INCEPTION_SIZE = 299
UPSAMPLE_TO = 512  # the authors' first resize of generated images


def squeeze_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """The authors' ``(255 * (x.clamp(-1, 1) * 0.5 + 0.5)).to(torch.uint8)`` (truncation)."""
    return (255 * (x.clamp(-1, 1) * 0.5 + 0.5)).to(torch.uint8)


@torch.no_grad()
def fake_pixels(images: torch.Tensor, eval_size: int) -> torch.Tensor:
    """Generator output (N, 3, H, W) -> the uint8 images the authors score (N, 3, s, s)."""
    x = F.interpolate(images.float(), size=UPSAMPLE_TO).add(1).mul(0.5)
    x = F.interpolate(x, size=eval_size)
    return squeeze_to_uint8(x).cpu()


def real_pixels(path: str | Path, eval_size: int) -> torch.Tensor:
    """An image file -> the uint8 image the authors score (3, s, s)."""
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((eval_size, eval_size), Image.Resampling.BILINEAR)
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(eval_size, eval_size, 3)
    x = data.permute(2, 0, 1).float().div(255)  # ToTensor
    return squeeze_to_uint8(x)


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x bilinear resize (``align_corners=False``) of (N, C, H, W) float images."""

    def axis(n_in: int):
        pos = torch.arange(size, dtype=torch.float32, device=x.device) * (n_in / size)
        lo = pos.long()
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, (pos - lo.float())

    ylo, yhi, dy = axis(x.shape[2])
    xlo, xhi, dx = axis(x.shape[3])
    top = x[:, :, ylo][:, :, :, xlo] + (x[:, :, ylo][:, :, :, xhi] - x[:, :, ylo][:, :, :, xlo]) * dx
    bottom = x[:, :, yhi][:, :, :, xlo] + (x[:, :, yhi][:, :, :, xhi] - x[:, :, yhi][:, :, :, xlo]) * dx
    return top + (bottom - top) * dy.view(1, 1, size, 1)


def inception_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, s, s) -> the float input of the Inception: TF-1 resize to 299, (x - 128) / 128."""
    return (resize_bilinear_tf1(pixels.float(), INCEPTION_SIZE) - 128) / 128


class AuthorsScorer:
    """One evaluation of the authors' protocol; the reference statistics are computed once."""

    def __init__(
        self, reference_files, im_size: int, weights, device="cpu", dims: int = DIMS, batch_size: int = 50
    ) -> None:
        self.model = load_inception(weights, device, normalize_input=False, resize_input=False, dims=dims)
        self.im_size, self.device, self.batch_size = im_size, device, batch_size
        real = torch.stack([real_pixels(f, im_size) for f in reference_files])
        self.reference = self.stats(real)

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(pixels), self.batch_size):
            x = inception_input(pixels[i : i + self.batch_size].to(self.device))
            f = self.model(x)[0]
            if f.shape[2:] != (1, 1):
                f = F.adaptive_avg_pool2d(f, (1, 1))
            out.append(f.flatten(1).cpu().double())
        return torch.cat(out).numpy()

    def stats(self, pixels: torch.Tensor):
        if len(pixels) < 2:
            from shapebias.errors import ConfigError

            raise ConfigError(f"FID needs at least 2 images per set, got {len(pixels)}")
        f = self.features(pixels)
        return f.mean(axis=0), np.cov(f, rowvar=False)

    def score(self, sample, n: int, batch: int) -> float:
        """FID of ``n // batch`` whole batches of ``batch`` generated images (the authors' count)."""
        n = max(batch, n // batch * batch)
        pixels = torch.cat([fake_pixels(images, self.im_size) for images in draw(sample, n, batch)])
        return frechet_distance(self.stats(pixels), self.reference)

    def close(self) -> None:
        pass
