"""Few-shot image sets for FastGAN: a flat folder of images (100 per set in the paper).

A valid folder holds image files of one format (all JPEG, or all PNG, ...), at any sizes, at
its top level; files that do not look like images (by extension) and hidden files are ignored.
Sub-folders are not searched. The errors name the folder or file that is wrong.

Li et al. (2023) used four 100-image sets taken from ImageNet classes: jeep and fish (tench)
(``shared/data/few-shot/`` holds these two here), and train and table. ImageNet cannot be
downloaded without an account, so :func:`prepare_from_imagenet` builds a set from a user's
ImageNet training folder (``<root>/<wnid>/*.JPEG``): the files named in a list when there is one
(``--files``), else 100 files chosen with a fixed seed. :data:`FEW_SHOT_SOURCES` records what is
known about each set, with the content checksums of jeep and fish (computed from shared/) so
that a rebuilt copy can be checked (:func:`verify`). No public archive of these sets is known to
the project, so they are not in ``shapebias.data.fetch.SOURCES``.

    python -m shapebias.data.few_shot list
    python -m shapebias.data.few_shot prepare jeep --imagenet-train /data/imagenet/train [--files list.txt]
    python -m shapebias.data.few_shot verify jeep PATH
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from shapebias.data.images import open_image
from shapebias.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class FewShotSource:
    name: str
    wnid: str | None  # ImageNet class (None: not stated by the authors; pass it explicitly)
    description: str
    count: int = 100
    tree_sha256: str | None = None  # content checksum (shapebias.data.fetch.tree_digest) of the set


# The four sets of Li et al. (2023), Table 2 of the seed report. The jeep and fish classes are
# read from the file names of the sets in shared/ (n03594945 "jeep, landrover"; n01440764
# "tench"); the paper does not name the ImageNet classes of "train" and "table".
FEW_SHOT_SOURCES: dict[str, FewShotSource] = {
    "jeep": FewShotSource(
        "jeep",
        "n03594945",
        "ImageNet 'jeep, landrover', 100 training images",
        tree_sha256="7a53689881c647476ffe7699b15050349aba95c9a90ed23cd2814c3ec7a97d79",
    ),
    "fish": FewShotSource(
        "fish",
        "n01440764",
        "ImageNet 'tench', 100 training images",
        tree_sha256="50baaf43770806dffc60972ce45eb84699451471fd852c7b92548c378f9d98cf",
    ),
    "train": FewShotSource("train", None, "ImageNet train class (class not named by the authors)"),
    "table": FewShotSource("table", None, "ImageNet table class (class not named by the authors)"),
}


def list_images(folder: str | Path) -> list[Path]:
    """The image files of a flat few-shot folder, sorted; DataError if unusable.

    Checks that the folder exists, holds at least one image, that every image opens, and that
    all images share one format.
    """
    if not str(folder).strip():
        raise DataError("data_dir is empty; pass a folder of images, e.g. data_dir=../shared/data/few-shot/jeep")
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data_dir {root} is not a folder; pass a flat folder of images")
    files = sorted(
        p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        subdirs = [p.name for p in root.iterdir() if p.is_dir()]
        hint = f" (it has sub-folders {subdirs[:3]}: point data_dir at one of them)" if subdirs else ""
        raise DataError(f"data folder {root} holds no images with extensions {', '.join(IMAGE_EXTENSIONS)}{hint}")
    formats: dict[str, list[str]] = {}
    for path in files:
        try:
            with open_image(path) as img:
                img.verify()
                fmt = img.format or "unknown"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"image {path} cannot be read ({type(exc).__name__}: {exc})") from None
        formats.setdefault(fmt, []).append(path.name)
    if len(formats) > 1:
        summary = "; ".join(f"{fmt}: {len(names)} (e.g. {names[0]})" for fmt, names in sorted(formats.items()))
        raise DataError(f"data folder {root} mixes image formats ({summary}); convert them to one format")
    return files


def load_image(path: Path, size: int) -> torch.Tensor:
    """An RGB image resized to (size, size) with PIL's bilinear filter (the authors' ``transforms.Resize``),
    as a float tensor in [-1, 1] (3, size, size)."""
    try:
        with open_image(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image {path} cannot be read ({exc})") from None
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return data.permute(2, 0, 1).float().div(127.5).sub(1.0)


class FewShotImages:
    """All images of a folder in memory at ``im_size``; :meth:`sample` draws a batch with
    random horizontal flips (the paper's only data augmentation besides DiffAugment)."""

    def __init__(self, folder: str | Path, im_size: int) -> None:
        self.files = list_images(folder)
        self.im_size = im_size
        self.images = torch.stack([load_image(p, im_size) for p in self.files])

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randint(len(self.files), (batch_size,), generator=generator)
        batch = self.images[idx].clone()
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
        return batch


def prepare_from_imagenet(
    name: str,
    imagenet_train: str | Path,
    dest: str | Path,
    wnid: str | None = None,
    files: list[str] | None = None,
    count: int = 100,
    seed: int = 0,
) -> Path:
    """Copy a few-shot set out of an ImageNet training folder into ``dest/<name>``.

    ``files`` (names inside the class folder) reproduces a known set exactly; without it,
    ``count`` files are chosen from the sorted class folder with ``random.Random(seed)``.
    """
    source = FEW_SHOT_SOURCES.get(name)
    wnid = wnid or (source.wnid if source else None)
    if wnid is None:
        raise ConfigError(f"the ImageNet class of few-shot set {name!r} is not known; pass its WNID (e.g. n04310018)")
    class_dir = Path(imagenet_train) / wnid
    if not class_dir.is_dir():
        raise DataError(f"ImageNet class folder {class_dir} does not exist (expected <train root>/<wnid>/*.JPEG)")
    available = sorted(p.name for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if files:
        missing = sorted(set(files) - set(available))
        if missing:
            raise DataError(f"{len(missing)} listed files are not in {class_dir}, e.g. {missing[0]}")
        chosen = list(files)
    else:
        if len(available) < count:
            raise DataError(f"{class_dir} holds {len(available)} images, fewer than the {count} asked for")
        chosen = sorted(random.Random(seed).sample(available, count))
    out = Path(dest) / name
    out.mkdir(parents=True, exist_ok=True)
    for fname in chosen:
        shutil.copy2(class_dir / fname, out / fname)
    return out


def verify(name: str, path: str | Path) -> Path:
    """Check a copy of a set against its registered content checksum (DataError on mismatch)."""
    from shapebias.data.fetch import tree_digest

    source = FEW_SHOT_SOURCES.get(name)
    if source is None:
        raise ConfigError(f"unknown few-shot set {name!r}; known: {', '.join(FEW_SHOT_SOURCES)}")
    list_images(path)
    if source.tree_sha256 is None:
        raise DataError(f"no checksum is registered for few-shot set {name!r}; nothing to verify against")
    digest, count = tree_digest(path)
    if digest != source.tree_sha256:
        raise DataError(
            f"{path} ({count} files, checksum {digest}) is not the registered {name} set ({source.tree_sha256})"
        )
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from shapebias.settings import data_home

    parser = argparse.ArgumentParser(
        prog="python -m shapebias.data.few_shot", description="the few-shot sets of Li et al. (2023)"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list")
    p = sub.add_parser("prepare", help="build a set from an ImageNet training folder")
    p.add_argument("name")
    p.add_argument("--imagenet-train", required=True, help="ImageNet train root (<root>/<wnid>/*.JPEG)")
    p.add_argument("--dest", default="", help="parent folder (default $SHAPEBIAS_DATA_HOME/few-shot)")
    p.add_argument("--wnid", default=None)
    p.add_argument("--files", default="", help="a text file listing the file names to take")
    p.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("verify")
    v.add_argument("name")
    v.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            for s in FEW_SHOT_SOURCES.values():
                print(f"{s.name}: {s.description}; wnid {s.wnid or '(pass --wnid)'}; checksum {s.tree_sha256 or '-'}")
        elif args.action == "prepare":
            files = Path(args.files).read_text().split() if args.files else None
            out = prepare_from_imagenet(
                args.name, args.imagenet_train, args.dest or data_home() / "few-shot", args.wnid, files, seed=args.seed
            )
            print(f"{args.name}: {out}\ntrain with: mlflow run . -e train_fastgan -P data_dir={out}")
        else:
            verify(args.name, args.path)
            print(f"{args.name}: {args.path} matches the registered checksum")
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
