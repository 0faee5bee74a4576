"""Texture synthesis and feature inversion through Top-K masks (Li et al., 2023, Sec. 3.1).

Gatys et al. (2015), "Texture Synthesis Using Convolutional Neural Networks": a texture is
summarised by the Gram matrices of VGG-19 feature maps (here ``relu1_1`` and ``pool1``..``pool4``
of the network whose max-pools are replaced by average pools); a new image is made by starting
from white noise and minimising the distance between its Gram matrices and the target's with
L-BFGS; the result's colour histogram is matched to the target's at the end.

Li et al. ask which neurons carry an object's structure. A *mask* is applied to the activations
of both the target and the image being optimised, each with its own spatial Top-K mask (the
:func:`shapebias.sparsity.topk_mask` of that feature map), before the Gram matrices are taken:

``all``         every activation (plain Gatys synthesis);
``topk``        only the Top-K positions of every channel;
``complement``  only the other positions. ``topk`` and ``complement`` are disjoint and their
                sum is ``all``.

*Feature inversion* (method ``inversion``) matches the masked feature maps themselves instead of
their Gram matrices, so it keeps spatial layout: the image is reconstructed from what the masked
neurons say about the target.

How much structure a result keeps is measured against the original with SSIM and with the
correlation of Sobel edge maps (:func:`structure_metrics`), so the claim "Top-K keeps structure,
the rest keeps texture" is a number, not only a picture.

Deviations from Gatys et al., on purpose: each layer's loss is divided by the squared norm of the
target's statistic (layers weigh equally whatever the weights' scale, which also lets random
filters work); instead of a bounded L-BFGS-B, pixels outside [0, 1] pay a squared penalty and the
result is clamped at the end.

This module imports neither MLflow nor Ray.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shapebias.errors import ConfigError, DataError, WeightsError, check_choice, check_fraction
from shapebias.sparsity import topk_mask

MASKS = ("all", "topk", "complement")
METHODS = ("texture", "inversion")
DEFAULT_LAYERS = ("relu1_1", "pool1", "pool2", "pool3", "pool4")
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG-19 (IMAGENET1K_V1)
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
# scikit-image sample images that ship with the package (no download): "skimage:chelsea" is the cat.
SKIMAGE_SAMPLES = (
    "astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee",
    "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
    "logo", "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text",
)

# VGG-19 "E": channels per conv layer, one list per block; a pool closes every block.
_VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def vgg19_layer_names() -> list[str]:
    """Names of the modules of ``torchvision.models.vgg19().features``, in order."""
    names = []
    for b, block in enumerate(_VGG19_BLOCKS, start=1):
        for i in range(1, len(block) + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


def _downsampling(name: str) -> int:
    """Factor by which a layer's feature map is smaller than the input."""
    names = vgg19_layer_names()
    return 2 ** sum(1 for n in names[: names.index(name) + 1] if n.startswith("pool"))


def check_layers(layers: Sequence[str] | str) -> tuple[str, ...]:
    """Parse and validate layer names (a sequence or a comma-separated string)."""
    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    known = vgg19_layer_names()
    if not layers:
        raise ConfigError(f"layers is empty; choose some of: {', '.join(known)}")
    for name in layers:
        check_choice("layer", name, known)
    return tuple(sorted(set(layers), key=known.index))


def min_image_size(layers: Sequence[str] = DEFAULT_LAYERS) -> int:
    """Smallest image side for which every chosen layer is at least 2x2.

    Below that a layer has one position per channel: Top-K keeps it and the complement is empty.
    """
    return 2 * max(_downsampling(name) for name in check_layers(layers))


# ----------------------------------------------------------------------------------------------
# The network


class VGGFeatures(nn.Module):
    """VGG-19 convolutional part up to the deepest requested layer, average pools, no in-place ReLU.

    ``forward`` takes images in [0, 1] (N, 3, H, W), normalises them as ImageNet models expect and
    returns ``{layer name: activation}`` for the requested layers.
    """

    def __init__(self, layers: Sequence[str] = DEFAULT_LAYERS) -> None:
        super().__init__()
        self.layers = check_layers(layers)
        names = vgg19_layer_names()
        depth = max(names.index(n) for n in self.layers) + 1
        modules: list[nn.Module] = []
        in_ch = 3
        for name in names[:depth]:
            if name.startswith("conv"):
                b, i = (int(s) for s in name[4:].split("_"))
                out_ch = _VGG19_BLOCKS[b - 1][i - 1]
                modules.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
                in_ch = out_ch
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))
            else:
                modules.append(nn.AvgPool2d(kernel_size=2, stride=2))
        self.names = names[:depth]
        self.features = nn.Sequential(*modules)  # indices match torchvision's vgg19().features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.weights = "random"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        h = (x - self.mean) / self.std
        for name, module in zip(self.names, self.features):
            h = module(h)
            if name in self.layers:
                out[name] = h
        return out


def default_weights_path() -> Path:
    """Where torchvision caches VGG-19: ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def resolve_weights(weights: str) -> Path | None:
    """``pretrained`` -> the torch hub cache file; ``random`` -> None; anything else is a path.

    Raises WeightsError, naming the file and where to put it, when the file is missing.
    """
    if weights == "random":
        return None
    path = default_weights_path() if weights == "pretrained" else Path(weights).expanduser()
    if not path.is_file():
        how = (
            f"download {VGG19_URL} on a machine with internet access and put it at {path} "
            f"(the torch hub cache, torch.hub.get_dir()/checkpoints/), or pass weights=/path/to/{VGG19_FILE}"
        )
        if weights == "pretrained":
            raise WeightsError(
                f"ImageNet VGG-19 weights {VGG19_FILE} are missing from {path.parent}: {how}; "
                "or choose weights=random for the random-filter baseline (labelled as such)"
            )
        raise WeightsError(f"weights file {path} does not exist: {how}; or choose weights=random")
    return path


def build_vgg19(weights: str = "pretrained", layers: Sequence[str] = DEFAULT_LAYERS, seed: int = 0) -> VGGFeatures:
    """VGG-19 features with average pools, frozen, in eval mode.

    Args:
        weights: ``pretrained`` (torchvision's ImageNet file from the torch hub cache), a path to
            that file (or any VGG-19 state dict with ``features.N.*`` keys), or ``random`` (the
            random-filter baseline; torchvision's initialisation, seeded by ``seed``).
    """
    path = resolve_weights(weights)
    torch.manual_seed(seed)
    model = VGGFeatures(layers)
    for m in model.modules():  # torchvision's VGG initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
            raise WeightsError(f"cannot read VGG-19 weights from {path}: {type(exc).__name__}: {exc}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        wanted = model.features.state_dict()
        picked = {k: state.get(f"features.{k}") for k in wanted}
        missing = [k for k, v in picked.items() if v is None]
        wrong = [k for k, v in picked.items() if v is not None and tuple(v.shape) != tuple(wanted[k].shape)]
        if missing or wrong:
            raise WeightsError(
                f"{path} is not a torchvision VGG-19 state dict: "
                + (f"missing features.{missing[0]}" if missing else f"features.{wrong[0]} has the wrong shape")
                + f" (expected {VGG19_FILE} from {VGG19_URL})"
            )
        model.features.load_state_dict(picked)
        model.weights = "pretrained"
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------
# Masks, statistics, losses


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


# ----------------------------------------------------------------------------------------------
# Optimisation


@dataclasses.dataclass
class SynthesisResult:
    """One synthesised (or reconstructed) image and how the optimisation went."""

    image: np.ndarray  # (H, W, 3) float in [0, 1], histogram-matched to the target
    raw: np.ndarray  # the same before histogram matching
    losses: list[float]  # loss at the start, then after every L-BFGS iteration
    mask: str
    method: str


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


def synthesize(
    model: VGGFeatures,
    target: np.ndarray,
    *,
    mask: str = "all",
    method: str = "texture",
    k: float = 0.05,
    steps: int = 100,
    seed: int = 0,
    histogram_matching: bool = True,
    max_evals: int | None = None,
    line_search: str | None = None,
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
        steps: L-BFGS iterations; without a line search (the default, as in most Gatys-style
            implementations) each evaluates the loss and its gradient once. Fewer are run if the
            loss stops changing or ``max_evals`` evaluations are spent.
        line_search: None, or ``"strong_wolfe"`` (safer steps, a few evaluations per iteration;
            ``max_evals`` then defaults to ``4 * steps``).
        seed: the white-noise start.
        on_step: called with ``(step, loss)`` for step 0 (the start) and after every iteration.
    """
    check_choice("mask", mask, MASKS)
    check_choice("method", method, METHODS)
    k = check_fraction("topk", k)
    if steps < 1:
        raise ConfigError(f"steps={steps} is not accepted; expected a positive number of L-BFGS iterations")
    target = np.asarray(target, dtype=np.float64)
    if target.ndim != 3 or target.shape[2] != 3:
        raise DataError(f"target image has shape {target.shape}; expected (H, W, 3)")
    need = min_image_size(model.layers)
    if min(target.shape[:2]) < need:
        raise DataError(
            f"image of {target.shape[1]}x{target.shape[0]} px is too small for layers {','.join(model.layers)}: "
            f"they need at least {need}x{need} px"
        )
    device = next(model.parameters()).device
    t = to_tensor(target, device)
    targets = target_statistics(model, t, mask, k, method)
    h, w = target.shape[:2]
    start = noise_image(h, w, seed)
    x = to_tensor(start, device).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=steps, max_eval=max_evals or (steps + 1 if line_search is None else 4 * steps), history_size=50,
        line_search_fn=line_search, tolerance_grad=0.0, tolerance_change=1e-12,
    )
    state = opt.state[x]
    # Loss after each iteration: the lowest its line search evaluated (the point it accepts).
    by_iter: dict[int, float] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc or f"{method} {mask}", leave=False)

    def total_loss() -> torch.Tensor:
        return synthesis_loss(model, x, targets, mask, k, method) + range_penalty(x)

    def record(it: int, value: float) -> None:
        if not math.isfinite(value):
            raise FloatingPointError(f"{method} with mask {mask}: the loss became {value} in L-BFGS iteration {it}")
        while reported[0] < it - 1:  # iterations before `it` are complete
            reported[0] += 1
            _report(reported[0])
        by_iter[it] = min(value, by_iter.get(it, math.inf))

    def _report(it: int) -> None:
        if on_step:
            on_step(it, by_iter[it])
        if bar is not None and it > 0:
            bar.update(1)
            bar.set_postfix(loss=f"{by_iter[it]:.4g}")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = total_loss()
        loss.backward()
        record(int(state.get("n_iter", 0)), float(loss.detach()))
        return loss

    reported = [-1]
    opt.step(closure)
    last = int(state.get("n_iter", 0))
    if last not in by_iter:  # L-BFGS does not evaluate the point its last iteration reaches
        with torch.no_grad():
            record(last, float(total_loss()))
    while reported[0] < last:
        reported[0] += 1
        _report(reported[0])
    if bar is not None:
        bar.close()
    losses = [by_iter[i] for i in sorted(by_iter)]
    raw = to_image(x)
    image = match_histograms(raw, target) if histogram_matching else raw
    return SynthesisResult(image=image, raw=raw, losses=losses, mask=mask, method=method)


# ----------------------------------------------------------------------------------------------
# Structure metrics


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


# ----------------------------------------------------------------------------------------------
# Images


def _as_rgb(array: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64) / float(np.iinfo(a.dtype).max)
    else:
        a = a.astype(np.float64)
        if a.max(initial=0.0) > 1.0:
            a = a / a.max()
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DataError(f"image {name} has shape {a.shape}; expected a grey, RGB or RGBA picture")
    return np.clip(a[..., :3], 0.0, 1.0)


def _read_file(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return _as_rgb(np.asarray(im.convert("RGB")), str(path))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def load_images(spec: str) -> list[tuple[str, np.ndarray]]:
    """Images named by ``spec``: ``skimage:NAME`` (a scikit-image sample), a file, or a folder.

    Returns ``(name, (H, W, 3) float image in [0, 1])`` pairs; a folder gives its images in name order.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("image is empty; give a file, a folder or skimage:NAME (e.g. skimage:chelsea)")
    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        check_choice("image", f"skimage:{name}", [f"skimage:{n}" for n in SKIMAGE_SAMPLES])
        import skimage.data

        try:
            array = getattr(skimage.data, name)()
        except Exception as exc:  # noqa: BLE001 - an optional sample missing from this install
            raise DataError(f"scikit-image sample {name!r} cannot be loaded here: {exc}") from None
        return [(name, _as_rgb(array, spec))]
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [(p.stem, _read_file(p)) for p in files]
    if path.is_file():
        return [(path.stem, _read_file(path))]
    raise DataError(
        f"image {spec!r} does not exist; give an image file, a folder of images, or skimage:NAME "
        f"with NAME one of {', '.join(SKIMAGE_SAMPLES)}"
    )


def prepare_image(image: np.ndarray, size: int, layers: Sequence[str] = DEFAULT_LAYERS, name: str = "image") -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (anti-aliased).

    Raises DataError when the picture (or ``size``) is smaller than the chosen layers need.
    """
    need = min_image_size(layers)
    layer_list = ",".join(check_layers(layers))
    if size < need:
        raise ConfigError(f"image_size={size} is too small for layers {layer_list}: they need at least {need} px")
    h, w = image.shape[:2]
    if min(h, w) < need:
        raise DataError(
            f"image {name} is {w}x{h} px, too small for layers {layer_list}: they need at least {need}x{need} px"
        )
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    if side == size:
        return square.copy()
    from skimage.transform import resize

    return np.clip(resize(square, (size, size), anti_aliasing=side > size, order=1), 0.0, 1.0)


def grid(images: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Images side by side with a white gap: (H, n*W + (n-1)*pad, 3)."""
    h = images[0].shape[0]
    gap = np.ones((h, pad, 3))
    parts: list[np.ndarray] = []
    for i, im in enumerate(images):
        if i:
            parts.append(gap)
        parts.append(im)
    return np.concatenate(parts, axis=1)

