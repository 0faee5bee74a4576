"""Input images: scikit-image samples, files and folders; square crops; side-by-side grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shapebias.errors import ConfigError, DataError, check_choice
from shapebias.synthesis.vgg import DEFAULT_LAYERS, check_layers, min_image_size

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
# scikit-image sample images that ship with the package (no download): "skimage:chelsea" is the cat.
SKIMAGE_SAMPLES = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "cell",
    "checkerboard",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "shepp_logan_phantom",
    "text",
)


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
    from PIL import UnidentifiedImageError

    from shapebias.data.images import open_image

    try:
        with open_image(path) as im:
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


def prepare_image(
    image: np.ndarray, size: int, layers: Sequence[str] = DEFAULT_LAYERS, name: str = "image"
) -> np.ndarray:
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
