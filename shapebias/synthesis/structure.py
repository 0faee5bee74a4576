"""How much of an image's structure a result keeps: SSIM and Sobel edge correlation."""

from __future__ import annotations

import math

import numpy as np


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    return image


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al., 2004) of the grey-level images, data range [0, 1]."""
    from skimage.metrics import structural_similarity

    ga, gb = _gray(a), _gray(b)
    win = min(7, min(ga.shape) // 2 * 2 - 1)
    return float(structural_similarity(ga, gb, data_range=1.0, win_size=max(win, 3)))


def edge_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the Sobel edge magnitudes of the grey-level images (0 if one is flat)."""
    from skimage.filters import sobel

    ea, eb = sobel(_gray(a)).ravel(), sobel(_gray(b)).ravel()
    ea, eb = ea - ea.mean(), eb - eb.mean()
    denom = math.sqrt(float(ea @ ea) * float(eb @ eb))
    return float(ea @ eb / denom) if denom > 0 else 0.0


def structure_metrics(original: np.ndarray, result: np.ndarray) -> dict[str, float]:
    """``{"ssim": ..., "edge_corr": ...}`` of a result against the original."""
    return {"ssim": ssim(original, result), "edge_corr": edge_correlation(original, result)}
