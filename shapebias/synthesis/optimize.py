"""The optimisation: from white noise to an image whose masked statistics match the target's.

L-BFGS as the authors run it (``texture-synthesis-visualization/optimize.py``): ``steps`` outer
steps, each one ``torch.optim.LBFGS.step`` of up to ``iterations_per_step`` iterations with the
strong-Wolfe line search, learning rate 1, no tolerance stops (100 x 20 by default). The
settings the optimiser was actually built with are returned with the result
(:attr:`SynthesisResult.settings`), so that a job can log what ran.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from shapebias.errors import ConfigError, DataError, check_choice, check_fraction
from shapebias.synthesis.gram import MASKS, METHODS, range_penalty, synthesis_loss, target_statistics
from shapebias.synthesis.vgg import VGGFeatures, min_image_size
from shapebias.synthesis_spec import ITERATIONS_PER_STEP, STEPS

LINE_SEARCH = "strong_wolfe"
OPTIMIZER = "lbfgs-strong-wolfe"


@dataclasses.dataclass
class SynthesisResult:
    """One synthesised (or reconstructed) image and how the optimisation went."""

    image: np.ndarray  # (H, W, 3) float in [0, 1], histogram-matched to the target
    raw: np.ndarray  # the same before histogram matching
    losses: list[float]  # loss at the start, then after every outer L-BFGS step
    mask: str
    method: str
    settings: dict = dataclasses.field(default_factory=dict)  # what the optimiser ran with


def to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> (1, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().unsqueeze(0).to(device)


def to_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) -> (H, W, 3) float in [0, 1]."""
    return x.detach().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    """The white-noise starting point (uniform in [0, 1]); the same seed gives every mask the same start."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(height, width, 3))


def match_histograms(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    from skimage.exposure import match_histograms as _match

    return np.clip(_match(image, reference, channel_axis=-1), 0.0, 1.0)


def optimizer_settings(opt: torch.optim.LBFGS) -> dict:
    """The settings an L-BFGS optimiser was built with, in the job's parameter names."""
    d = opt.defaults
    return {
        "optimizer": OPTIMIZER if d["line_search_fn"] == LINE_SEARCH else f"lbfgs-{d['line_search_fn']}",
        "iterations_per_step": d["max_iter"],
        "max_evals_per_step": d["max_eval"],
        "lr": d["lr"],
        "history_size": d["history_size"],
    }


def _check(
    model: VGGFeatures, target: np.ndarray, mask: str, method: str, k: float, steps: int, iterations_per_step: int
) -> tuple[np.ndarray, float]:
    check_choice("mask", mask, MASKS)
    check_choice("method", method, METHODS)
    k = check_fraction("topk", k)
    for name, value in (("steps", steps), ("iterations_per_step", iterations_per_step)):
        if value < 1:
            raise ConfigError(f"{name}={value} is not accepted; expected a positive number of L-BFGS iterations")
    target = np.asarray(target, dtype=np.float64)
    if target.ndim != 3 or target.shape[2] != 3:
        raise DataError(f"target image has shape {target.shape}; expected (H, W, 3)")
    need = min_image_size(model.layers)
    if min(target.shape[:2]) < need:
        raise DataError(
            f"image of {target.shape[1]}x{target.shape[0]} px is too small for layers {','.join(model.layers)}: "
            f"they need at least {need}x{need} px"
        )
    return target, k


def synthesize(
    model: VGGFeatures,
    target: np.ndarray,
    *,
    mask: str = "all",
    method: str = "texture",
    k: float = 0.05,
    steps: int = STEPS,
    iterations_per_step: int = ITERATIONS_PER_STEP,
    seed: int = 0,
    histogram_matching: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> SynthesisResult:
    """Synthesise a texture (``method="texture"``) or invert features (``"inversion"``).

    Args:
        model: from :func:`build_vgg19`.
        target: (H, W, 3) float image in [0, 1]; H and W at least :func:`min_image_size`.
        mask: ``all``, ``topk`` or ``complement`` (applied to target and synthesis alike).
        k: Top-K fraction in (0, 1].
        steps: outer L-BFGS steps (the authors: 100).
        iterations_per_step: L-BFGS iterations per step, strong-Wolfe line search (the authors: 20).
        seed: the white-noise start.
        on_step: called with ``(step, loss)`` for step 0 (the start) and after every outer step.
    """
    target, k = _check(model, target, mask, method, k, steps, iterations_per_step)
    device = next(model.parameters()).device
    targets = target_statistics(model, to_tensor(target, device), mask, k, method)
    height, width = target.shape[:2]
    x = to_tensor(noise_image(height, width, seed), device).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=iterations_per_step, line_search_fn=LINE_SEARCH, tolerance_grad=0.0, tolerance_change=0.0
    )

    def total_loss() -> torch.Tensor:
        return synthesis_loss(model, x, targets, mask, k, method) + range_penalty(x)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = total_loss()
        loss.backward()
        return loss

    def current(step: int) -> float:
        with torch.no_grad():
            value = float(total_loss())
        if not math.isfinite(value):
            raise FloatingPointError(f"{method} with mask {mask}: the loss became {value} after L-BFGS step {step}")
        if on_step:
            on_step(step, value)
        return value

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc or f"{method} {mask}", leave=False)
    losses = [current(0)]
    for step in range(1, steps + 1):
        opt.step(closure)
        losses.append(current(step))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    if bar is not None:
        bar.close()
    raw = to_image(x)
    image = match_histograms(raw, target) if histogram_matching else raw
    settings = {
        **optimizer_settings(opt),
        "steps": steps,
        "layers": ",".join(model.layers),
        "iterations_run": int(opt.state[x].get("n_iter", 0)),
    }
    return SynthesisResult(image=image, raw=raw, losses=losses, mask=mask, method=method, settings=settings)
