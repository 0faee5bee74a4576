"""The cue-conflict images of Geirhos et al. (ICLR 2019), in model-vs-human's layout.

Layout: one folder per shape category, each image named ``<shape>N-<texture>M.png``::

    cue-conflict/airplane/airplane1-bicycle2.png     shape airplane, texture bicycle
    ...                                              16 folders, 1,280 images

Where it comes from: model-vs-human's release (``shapebias data fetch cue-conflict``, see
:mod:`shapebias.data.fetch`); where it is found: ``--data-dir``, else the setting
``SHAPEBIAS_CUE_CONFLICT_DIR``, the fetched copy, or ``shared/data/cue-conflict``
(:func:`shapebias.settings.cue_conflict_dir`).

Images are 224 x 224 and are fed as model-vs-human feeds them to PyTorch models: ``ToTensor``
and ImageNet normalisation, with ``Resize(256)`` + ``CenterCrop(224)`` only for images of
another size.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from shapebias import settings
from shapebias.errors import DataError
from shapebias.metrics.imagenet16 import CATEGORIES

EXPECTED_IMAGES = 1280
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = "<shape>/<shape>N-<texture>M.png, one folder per category (airplane, bear, ..., truck)"
_NAME = re.compile(r"^(?P<shape>[a-z]+)\d+-(?P<texture>[a-z]+)\d+\.png$")


@dataclasses.dataclass(frozen=True)
class CueConflictImage:
    """One image: its path, shape class (the folder) and texture class (from the name)."""

    path: Path
    shape: str
    texture: str

    @property
    def imagename(self) -> str:
        return self.path.name

    @property
    def conflict(self) -> bool:
        return self.shape != self.texture


def resolve_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir`` if given, else the configured local copy; DataError if neither exists."""
    if data_dir:
        return Path(data_dir).expanduser()
    found = settings.cue_conflict_dir()
    if found is None:
        raise DataError(
            "no cue-conflict folder given and none configured: pass --data-dir, set "
            "SHAPEBIAS_CUE_CONFLICT_DIR, or download it with `shapebias data fetch cue-conflict` "
            "(the jobs then find it in the user data folder)"
        )
    return found


def scan(root: str | Path, *, limit: int = 0) -> list[CueConflictImage]:
    """List the images under ``root``, checking model-vs-human's layout on the way.

    Raises DataError (saying what was expected) when ``root`` is missing, has no category
    folders, has a folder that is not one of the 16 categories, or an image whose name is not
    ``<shape>N-<texture>M.png`` with the folder's shape and a known texture. ``limit`` > 0 keeps
    that many images, spread over the categories (every k-th image in sorted order).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"cue-conflict folder {root} does not exist or is not a folder; expected {LAYOUT}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no category folders; expected {LAYOUT}")
    unknown = [p.name for p in folders if p.name not in CATEGORIES]
    if unknown:
        raise DataError(
            f"{root} is not in the cue-conflict layout: folder(s) {', '.join(unknown[:5])} are not "
            f"categories; expected {LAYOUT}"
        )
    images = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            m = _NAME.match(path.name)
            if m is None or m["shape"] != folder.name or m["texture"] not in CATEGORIES:
                raise DataError(
                    f"{path} is not a cue-conflict image name: expected {folder.name}N-<texture>M.png "
                    f"with <texture> one of the 16 categories (layout {LAYOUT})"
                )
            images.append(CueConflictImage(path, m["shape"], m["texture"]))
    if not images:
        raise DataError(f"{root} holds no images; expected {LAYOUT}")
    if limit and limit < len(images):
        step = len(images) / limit
        images = [images[int(i * step)] for i in range(limit)]
    return images


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) or float in [0, 1] -> ImageNet-normalised float32."""
    x = batch.float()
    if batch.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def load_image(path: str | Path) -> torch.Tensor:
    """One image as a uint8 (3, 224, 224) tensor (resized and centre-cropped if not 224)."""
    import numpy as np

    from shapebias.data.images import open_image

    try:
        with open_image(path) as im:
            im = im.convert("RGB")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                from torchvision.transforms import functional as F

                im = F.center_crop(F.resize(im, 256), IMAGE_SIZE)
            arr = np.asarray(im, dtype=np.uint8).copy()
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class CueConflictDataset(torch.utils.data.Dataset):
    """(uint8 image, index) pairs; normalise batches with :func:`normalize`."""

    def __init__(self, images: list[CueConflictImage]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return load_image(self.images[i].path), i


def fingerprint(images: list[CueConflictImage]) -> str:
    """A cheap fingerprint of the image list (names and sizes), for the run's provenance tag."""
    import hashlib
    import os

    h = hashlib.sha256()
    for im in images:
        h.update(f"{im.shape}/{im.imagename}:{os.path.getsize(im.path)}\n".encode())
    return h.hexdigest()[:16]
