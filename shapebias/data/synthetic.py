"""A generated cue-conflict benchmark: the embedded default data set (no download, seconds to render).

Every class ``c`` owns a shape (``SHAPES[c]``: disk, square, triangle, ...) and a texture
(``CLASS_TEXTURES[c]``: a pattern with its own two colours). An image is a mid-grey noisy
background with one shape, placed, scaled and slightly rotated at random, filled with a texture
drawn in image coordinates with a random phase.

Splits
------
``train``         shape and texture of the same class (either cue alone predicts the label);
``original``      the same distribution, rendered from a different random stream;
``stylized``      the class's shape filled with a texture that belongs to no class
                  (``FOREIGN_TEXTURES``, random colours), like Stylized-ImageNet;
``cue_conflict``  the shape of one class filled with the texture of another (label = shape).

Everything is deterministic from ``seed`` (numpy's PCG64 seeded with ``(seed, split)``), and
rendering is vectorised (numpy over whole batches; no per-pixel Python loops).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from shapebias.errors import ConfigError

SPLITS = ("train", "original", "stylized", "cue_conflict")
MEAN, STD = 0.5, 0.25  # images are normalised as (x - MEAN) / STD
VERSION = "1"  # bump when the rendering changes (part of the data fingerprint)

Array = np.ndarray

# --------------------------------------------------------------------------------------------
# Shapes: boolean masks of points (u, v) in the shape's own frame (unit radius, v up).


def _polygon(n: int, r: float = 1.0, phase: float = np.pi / 2) -> Callable[[Array, Array], Array]:
    normals = phase + np.pi / n + 2 * np.pi * np.arange(n) / n  # edge normals of a regular n-gon

    def mask(u: Array, v: Array) -> Array:
        d = np.max([u * np.cos(a) + v * np.sin(a) for a in normals], axis=0)
        return d <= r * np.cos(np.pi / n)

    return mask


def _star(u: Array, v: Array) -> Array:
    theta = np.arctan2(v, u) - np.pi / 2
    return np.hypot(u, v) <= 0.45 + 0.55 * np.abs(np.cos(2.5 * theta))


SHAPES: dict[str, Callable[[Array, Array], Array]] = {
    "disk": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": _polygon(3, 1.05),
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0)),
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.45),
    "star": _star,
    "crescent": lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.64),
    "letter_h": lambda u, v: (np.maximum(np.abs(u), np.abs(v)) <= 0.9) & ((np.abs(u) >= 0.5) | (np.abs(v) <= 0.22)),
    "bar": lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 0.38),
    "letter_t": lambda u, v: (
        ((v >= 0.5) & (v <= 0.95) & (np.abs(u) <= 0.95)) | ((np.abs(u) <= 0.25) & (v >= -0.95) & (v <= 0.6))
    ),
    "letter_l": lambda u, v: (
        ((np.abs(u + 0.6) <= 0.28) & (np.abs(v) <= 0.95)) | ((np.abs(v + 0.67) <= 0.28) & (u >= -0.88) & (u <= 0.8))
    ),
    "arrow": lambda u, v: (
        ((np.abs(v) <= 0.22) & (u >= -1.0) & (u <= 0.2)) | ((u >= 0.0) & (u <= 1.0) & (np.abs(v) <= 0.9 * (1.0 - u)))
    ),
}

# --------------------------------------------------------------------------------------------
# Textures: a pattern in [0, 1] over image coordinates x, y in [0, 1), phase-shifted at random,
# mixed between two colours.


@dataclass(frozen=True)
class Texture:
    kind: str  # stripes | checker | dots | rings | zigzag | grid | blobs | speckle
    freq: float  # cycles per image
    angle: float = 0.0  # degrees
    colors: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # None: random


def _rotate(x: Array, y: Array, degrees: float | Array) -> tuple[Array, Array]:
    a = np.deg2rad(degrees)
    return x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)


def _pattern(t: Texture, x: Array, y: Array, rng: np.random.Generator) -> Array:
    """Pattern values in [0, 1] for a batch of coordinate grids x, y of shape (B, H, W)."""
    b = x.shape[0]
    px, py = (rng.random((2, b, 1, 1)) * 2 * np.pi).astype(np.float32)  # random phase per image
    jitter = rng.uniform(-8, 8, size=(b, 1, 1))  # a little rotation per image
    u, v = _rotate(x, y, t.angle + jitter)
    f = 2 * np.pi * t.freq
    if t.kind == "stripes":
        return (np.sin(f * u + px) > 0).astype(np.float32)
    if t.kind == "checker":
        return ((np.sin(f * u + px) > 0) ^ (np.sin(f * v + py) > 0)).astype(np.float32)
    if t.kind == "dots":
        return ((np.cos(f * u + px) + np.cos(f * v + py)) > 1.0).astype(np.float32)
    if t.kind == "rings":
        cx, cy = rng.random((2, b, 1, 1))
        return (np.sin(f * np.hypot(x - cx, y - cy) + px) > 0).astype(np.float32)
    if t.kind == "zigzag":
        tri = np.abs(((v * t.freq * 2 + py / np.pi) % 2) - 1)  # triangle wave across stripes
        return (np.sin(f * u + 2.5 * tri + px) > 0).astype(np.float32)
    if t.kind == "grid":
        return ((np.cos(f * u + px) > 0.7) | (np.cos(f * v + py) > 0.7)).astype(np.float32)
    if t.kind in ("blobs", "speckle"):
        h, w = x.shape[1:]
        cells = max(2, int(round(t.freq)))
        coarse = torch.from_numpy(rng.random((b, 1, cells, cells)).astype(np.float32))
        mode = "bilinear" if t.kind == "blobs" else "nearest"
        fine = torch.nn.functional.interpolate(
            coarse, size=(h, w), mode=mode, **({"align_corners": False} if mode == "bilinear" else {})
        )
        return (fine[:, 0].numpy() > 0.5).astype(np.float32)
    raise ValueError(f"unknown texture kind {t.kind!r}")


def _palette(n: int) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """n well-separated colour pairs (hue around the circle; a light and a dark tone)."""
    import colorsys

    pairs = []
    for i in range(n):
        h = i / n
        light = colorsys.hsv_to_rgb(h, 0.55, 0.95)
        dark = colorsys.hsv_to_rgb((h + 0.5 / n) % 1.0, 0.9, 0.35)
        pairs.append((light, dark))
    return pairs


_CLASS_PATTERNS = [
    ("stripes", 6, 0),
    ("stripes", 6, 90),
    ("checker", 4, 0),
    ("dots", 5, 0),
    ("stripes", 5, 45),
    ("rings", 6, 0),
    ("zigzag", 4, 0),
    ("grid", 4, 0),
    ("stripes", 5, 135),
    ("blobs", 5, 0),
    ("checker", 4, 45),
    ("speckle", 12, 0),
]
CLASS_TEXTURES: list[Texture] = [
    Texture(kind, freq, angle, colors)
    for (kind, freq, angle), colors in zip(_CLASS_PATTERNS, _palette(len(_CLASS_PATTERNS)), strict=True)
]
# Textures of no class (patterns at frequencies/angles no class uses, random colours).
FOREIGN_TEXTURES: list[Texture] = [
    Texture("stripes", 3, 22.5),
    Texture("dots", 8, 30),
    Texture("rings", 3, 0),
    Texture("blobs", 9, 0),
    Texture("grid", 7, 20),
    Texture("zigzag", 7, 60),
]
MAX_CLASSES = min(len(SHAPES), len(CLASS_TEXTURES))


# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticSplit(Dataset):
    """One rendered split: uint8 images (N, 3, H, W) and, per image, label, shape and texture class.

    ``texture`` is -1 where the texture belongs to no class (``stylized``). Items are
    ``(normalised float image, label)``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    shape: torch.Tensor
    texture: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return (self.images[i].float() / 255.0 - MEAN) / STD, int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _render(
    shape_ids: Array, texture_list: list[Texture], texture_ids: Array, size: int, rng: np.random.Generator
) -> Array:
    """Render a batch: shape class, texture index per image -> uint8 (B, 3, size, size)."""
    b = len(shape_ids)
    shape_names = list(SHAPES)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(1.0 - grid, grid, indexing="ij")  # y up
    x = np.broadcast_to(x, (b, size, size))
    y = np.broadcast_to(y, (b, size, size))
    # Placement: centre, scale (radius in image units) and a small rotation.
    scale = rng.uniform(0.28, 0.4, size=(b, 1, 1)).astype(np.float32)
    cx, cy = (0.5 + rng.uniform(-1, 1, size=(2, b, 1, 1)) * (0.48 - scale)).astype(np.float32)
    rot = rng.uniform(-20, 20, size=(b, 1, 1))
    u, v = _rotate((x - cx) / scale, (y - cy) / scale, rot)
    mask = np.zeros((b, size, size), dtype=bool)
    for s in np.unique(shape_ids):
        idx = np.flatnonzero(shape_ids == s)
        mask[idx] = SHAPES[shape_names[s]](u[idx], v[idx])
    # Fill: texture pattern between two colours (class colours with a little jitter, or random).
    fill = np.zeros((b, size, size, 3), dtype=np.float32)
    for t in np.unique(texture_ids):
        idx = np.flatnonzero(texture_ids == t)
        tex = texture_list[t]
        p = _pattern(tex, x[idx], y[idx], rng)[..., None]
        if tex.colors is None:
            c0, c1 = rng.random((2, len(idx), 1, 1, 3)).astype(np.float32)
        else:
            jitter = rng.uniform(-0.06, 0.06, size=(2, len(idx), 1, 1, 3)).astype(np.float32)
            c0 = np.asarray(tex.colors[0], np.float32) + jitter[0]
            c1 = np.asarray(tex.colors[1], np.float32) + jitter[1]
        fill[idx] = c0 * p + c1 * (1 - p)
    background = 0.5 + 0.06 * rng.standard_normal((b, size, size, 1)).astype(np.float32)
    img = np.where(mask[..., None], fill, background)
    img = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return img.transpose(0, 3, 1, 2)


def check_size(num_classes: int, per_class: int, image_size: int) -> None:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"synthetic_classes={num_classes} is not accepted; choose 2..{MAX_CLASSES}")
    if per_class < 1:
        raise ConfigError(f"images per class={per_class} is not accepted; choose a positive number")
    if not 16 <= image_size <= 256:
        raise ConfigError(f"image_size={image_size} is not accepted for the synthetic benchmark; choose 16..256")


def make_split(
    split: str, num_classes: int = 10, per_class: int = 100, image_size: int = 32, seed: int = 0, chunk: int = 512
) -> SyntheticSplit:
    """Render one split (see the module docstring); deterministic in all arguments."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not accepted; choose one of: {', '.join(SPLITS)}")
    check_size(num_classes, per_class, image_size)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    n = num_classes * per_class
    shape = np.arange(n) % num_classes
    if split in ("train", "original"):
        texture, textures = shape.copy(), CLASS_TEXTURES
    elif split == "stylized":
        texture, textures = rng.integers(0, len(FOREIGN_TEXTURES), size=n), FOREIGN_TEXTURES
    else:  # cue_conflict: every other class's texture equally often
        texture = (shape + 1 + rng.integers(0, num_classes - 1, size=n)) % num_classes
        textures = CLASS_TEXTURES
    order = rng.permutation(n)
    shape, texture = shape[order], texture[order]
    images = np.concatenate(
        [_render(shape[i : i + chunk], textures, texture[i : i + chunk], image_size, rng) for i in range(0, n, chunk)]
    )
    texture_class = np.full(n, -1) if split == "stylized" else texture
    return SyntheticSplit(
        name=split,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(shape.copy()),
        shape=torch.from_numpy(shape.copy()),
        texture=torch.from_numpy(texture_class.copy()),
        class_names=list(SHAPES)[:num_classes],
    )


def make_benchmark(
    num_classes: int = 10, train_per_class: int = 100, test_per_class: int = 20, image_size: int = 32, seed: int = 0
) -> dict[str, SyntheticSplit]:
    """All four splits: ``train``, ``original``, ``stylized``, ``cue_conflict``."""
    return {
        split: make_split(split, num_classes, train_per_class if split == "train" else test_per_class, image_size, seed)
        for split in SPLITS
    }


def fingerprint(splits: dict[str, SyntheticSplit]) -> str:
    """A short content hash of the rendered images and labels."""
    h = hashlib.sha256(f"synthetic-v{VERSION}".encode())
    for name in sorted(splits):
        s = splits[name]
        for t in (s.images, s.labels, s.texture):
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]
