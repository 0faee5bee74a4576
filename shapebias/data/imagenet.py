"""The seed's 10-class ImageNet subsets, read from a user's ImageNet folder.

Layout (ImageFolder style, restricted to the subset's WNIDs)::

    DATA_DIR/train/<wnid>/*.JPEG     training images
    DATA_DIR/val/<wnid>/*.JPEG       test images ("original")
    STYLIZED_DIR/<wnid>/*.png        stylized test images of the same classes (optional)

``IN-S1`` is Imagenette's ten WNIDs (:data:`SUBSETS`); any other subset (``IN-S2``, ``IN-S3``,
...) comes from a class-list file with one WNID per line (``#`` starts a comment). Transforms
are the authors': RandomResizedCrop(224) and a horizontal flip for training; resize 256 and a
centre crop of 224 for testing; ImageNet mean/std normalisation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms

from shapebias.data.images import open_image
from shapebias.errors import ConfigError, DataError

# Imagenette (fast.ai): tench, English springer, cassette player, chain saw, church, French horn,
# garbage truck, gas pump, golf ball, parachute.
SUBSETS: dict[str, tuple[str, ...]] = {
    "IN-S1": (
        "n01440764",
        "n02102040",
        "n02979186",
        "n03000684",
        "n03028079",
        "n03394916",
        "n03417042",
        "n03425413",
        "n03445777",
        "n03888605",
    ),
}
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_WNID = re.compile(r"^n\d{8}$")


def is_subset_name(name: str) -> bool:
    return re.fullmatch(r"IN-S\d+", name) is not None


def read_class_list(path: str | Path) -> tuple[str, ...]:
    """WNIDs from a class-list file (one per line, ``#`` comments, blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"class list {str(p)!r} does not exist; expected a text file with one WNID per line")
    wnids = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        word = line.split("#", 1)[0].strip()
        if not word:
            continue
        if not _WNID.match(word):
            raise DataError(f"{p}:{n}: {word!r} is not a WNID; expected names like n01440764")
        wnids.append(word)
    if len(wnids) < 2:
        raise DataError(f"class list {str(p)!r} names {len(wnids)} WNIDs; a subset needs at least 2")
    return tuple(dict.fromkeys(wnids))


def subset_wnids(name: str, class_list: str | Path | None = None) -> tuple[str, ...]:
    """The WNIDs of a subset: built in (``IN-S1``) or from ``class_list``."""
    if class_list:
        return read_class_list(class_list)
    if name in SUBSETS:
        return SUBSETS[name]
    if is_subset_name(name):
        raise ConfigError(
            f"dataset={name!r} needs a class list (--class-list FILE, one WNID per line); "
            f"built in: {', '.join(SUBSETS)}"
        )
    raise ConfigError(
        f"dataset={name!r} is not accepted; choose synthetic, {', '.join(SUBSETS)} or IN-S<n> with a class list"
    )


def train_transform(size: int = 224) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def test_transform(size: int = 224) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(round(size * 256 / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageSubset(Dataset):
    """Images of the given WNIDs under ``root/<wnid>/``; label = position of the WNID in ``wnids``.

    A missing or empty class folder is a :class:`DataError` at construction; an unreadable image
    is a :class:`DataError` naming the file when it is loaded.
    """

    def __init__(self, root: str | Path, wnids: Sequence[str], transform=None, what: str = "data folder") -> None:
        self.root = Path(root)
        self.wnids = tuple(wnids)
        self.transform = transform
        if not self.root.is_dir():
            raise DataError(f"{what} {str(self.root)!r} does not exist; expected a folder with one sub-folder per WNID")
        self.samples: list[tuple[Path, int]] = []
        for label, wnid in enumerate(self.wnids):
            folder = self.root / wnid
            if not folder.is_dir():
                raise DataError(
                    f"{what} {str(self.root)!r} has no class folder {wnid}/; "
                    "expected one sub-folder per WNID of the subset"
                )
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
            if not files:
                raise DataError(f"class folder {str(folder)!r} is empty; expected images ({', '.join(EXTENSIONS)})")
            self.samples += [(f, label) for f in files]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> Image.Image:
        path = self.samples[i][0]
        try:
            with open_image(path) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(
                f"unreadable image {str(path)!r} ({type(exc).__name__}); replace or remove the file"
            ) from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor | Image.Image, int]:  # a PIL image without a transform
        img = self.load(i)
        return (self.transform(img) if self.transform else img), self.samples[i][1]

    def check_headers(self) -> None:
        """Open every file's header (cheap: no decoding); DataError naming the first unreadable one."""
        for path, _ in self.samples:
            try:
                with open_image(path) as im:
                    im.size  # noqa: B018
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise DataError(
                    f"unreadable image {str(path)!r} ({type(exc).__name__}); replace or remove the file"
                ) from None

    @property
    def files(self) -> list[Path]:
        return [p for p, _ in self.samples]

    @property
    def num_classes(self) -> int:
        return len(self.wnids)


def imagenet_subset(
    data_dir: str | Path,
    name: str = "IN-S1",
    class_list: str | Path | None = None,
    stylized_dir: str | Path | None = None,
    size: int = 224,
) -> dict[str, ImageSubset]:
    """``train``, ``original`` (val/) and, with ``stylized_dir``, ``stylized`` splits of a subset."""
    if not data_dir:
        raise DataError(
            f"dataset={name!r} needs --data-dir: an ImageNet folder with train/ and val/ (ImageFolder layout)"
        )
    wnids = subset_wnids(name, class_list)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data_dir {str(root)!r} does not exist; expected an ImageNet folder with train/ and val/")
    splits = {
        "train": ImageSubset(root / "train", wnids, train_transform(size), what="training folder"),
        "original": ImageSubset(root / "val", wnids, test_transform(size), what="validation folder"),
    }
    if stylized_dir:
        splits["stylized"] = ImageSubset(stylized_dir, wnids, test_transform(size), what="stylized folder")
    return splits
