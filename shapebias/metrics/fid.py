"""Fréchet Inception Distance on pytorch-fid's Inception network, in two protocols.

Weights: pytorch-fid's port of the TensorFlow FID Inception, ``pt_inception-2015-12-05-6726825d.pth``
(the same weights as torch-fidelity's ``inception-v3-compat``), from the torch hub cache
(``$TORCH_HOME/hub/checkpoints/``) or an explicit file. Nothing is downloaded: a missing file
raises :class:`WeightsError` naming the file and the folder. A file whose SHA-256 does not start
with ``6726825d`` (the hash in the official file name) still works but is reported as
*unverified* (:func:`weights_verified`), and the training job then logs the score as
``fid_unverified``, never as ``fid``.

Protocols (:data:`PROTOCOLS`, defined in :mod:`shapebias.metrics.fid_spec`; the differences are
listed in ``docs/fastgan.md``):

``standard``  pytorch-fid's own pipeline: generated images and the reference set (the training
              folder resized bicubically to the generator's size) are written as PNG files and
              read back by ``calculate_activation_statistics`` (pixels in [0, 1], bilinear resize
              to 299 px inside pytorch-fid, then [-1, 1]); 5,000 generated images, one score per
              evaluation, every 5,000 iterations.
``authors``   the authors' evaluator (``TopKGen/utlis/eval_agent_module.py``, torch-fidelity),
              rebuilt on pytorch-fid's network in :mod:`shapebias.metrics.fid_authors`: 3,000
              generated images (whole sampling batches), both image sets squeezed into uint8
              [127, 255], TensorFlow-1 bilinear resize to 299 px, ``(x - 128) / 128``; each
              evaluation repeated 3 times keeping the best; every 1,000 iterations.

Both report the best evaluation of a run as its ``fid`` (the last is kept too).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from shapebias.errors import ConfigError, WeightsError, check_choice
from shapebias.metrics.fid_spec import PROTOCOLS, FidProtocol, get_protocol  # noqa: F401  (also importable here)

if TYPE_CHECKING:
    from shapebias.metrics import fid_authors

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE
DIMS = 2048


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights file: ``path`` if given, else the torch hub cache; WeightsError if absent."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsError(
                f"FID Inception weights file {p} (fid_weights) does not exist; pass the path of "
                f"{INCEPTION_FILE} (from {INCEPTION_URL})"
            )
        return p
    p = hub_checkpoints_dir() / INCEPTION_FILE
    if not p.is_file():
        raise WeightsError(
            f"FID needs pytorch-fid's Inception weights {INCEPTION_FILE}, which are not in {p.parent}; "
            f"download {INCEPTION_URL} on a machine with internet and put it in that folder, or pass "
            f"fid_weights=/path/to/{INCEPTION_FILE} (or set fid_every=0 to train without FID)"
        )
    return p


def weights_verified(path: str | os.PathLike) -> bool:
    """True if the file's SHA-256 starts with the hash in the official file name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest().startswith(INCEPTION_SHA256_PREFIX)


@contextlib.contextmanager
def _inception_state_from(load: Callable[..., dict]) -> Iterator[None]:
    """pytorch-fid fetches its weights with ``load_state_dict_from_url``; point it at a file."""
    import pytorch_fid.inception as inception_mod

    original = inception_mod.load_state_dict_from_url
    inception_mod.load_state_dict_from_url = load
    try:
        yield
    finally:
        inception_mod.load_state_dict_from_url = original


def check_dims(dims) -> int:
    from pytorch_fid.inception import InceptionV3

    check_choice("fid_dims", dims, tuple(InceptionV3.BLOCK_INDEX_BY_DIM))
    return int(dims)


def load_inception(
    weights: str | os.PathLike,
    device: str | torch.device = "cpu",
    normalize_input: bool = True,
    dims: int = DIMS,
    resize_input: bool = True,
):
    """pytorch-fid's ``InceptionV3`` with the weights in ``weights``.

    ``dims`` picks pytorch-fid's feature block: 2048 (pool3, the FID) or 64/192/768 (earlier
    blocks; cheap, for tests and pipeline checks only).
    """
    from pytorch_fid.inception import InceptionV3

    dims = check_dims(dims)

    def load(url, **_kwargs):
        try:
            return torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise WeightsError(f"cannot read FID Inception weights {weights}: {type(exc).__name__}: {exc}") from None

    with _inception_state_from(load):
        try:
            model = InceptionV3(
                [InceptionV3.BLOCK_INDEX_BY_DIM[dims]], resize_input=resize_input, normalize_input=normalize_input
            )
        except RuntimeError as exc:  # state dict does not fit the architecture
            raise WeightsError(f"{weights} is not a pytorch-fid Inception state dict: {str(exc)[:300]}") from None
    model.fid_dims = dims
    return model.eval().to(device)


def write_random_inception_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """For tests only: pytorch-fid's Inception architecture with random weights, saved as a file.

    Scores computed with such a file are not FIDs and are never logged as ``fid``.
    """
    import pytorch_fid.inception as inception_mod

    built: list[torch.nn.Module] = []
    make = inception_mod._inception_v3

    def capture(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    torch.manual_seed(seed)
    inception_mod._inception_v3 = capture
    try:
        with _inception_state_from(lambda url, **kw: built[-1].state_dict()):
            inception_mod.fid_inception_v3()
    finally:
        inception_mod._inception_v3 = make
    # PyTorch's default conv init shrinks activations layer after layer (with batch norm in eval
    # mode there is nothing to renormalise them) until features are ~1e-7 and every FID ~0; He
    # initialisation keeps their scale, so that different images give different features.
    for module in built[-1].modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(built[-1].state_dict(), path)
    return Path(path)


# ------------------------------------------------------------------------------ image files


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    x = images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_images(images: torch.Tensor, folder: str | Path, start: int = 0) -> list[Path]:
    """Write a batch of images in [-1, 1] as PNG files ``000000.png``..."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(_to_uint8(images)):
        p = folder / f"{start + i:06d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def write_reference(files: Iterable[Path], size: int, folder: str | Path, protocol: FidProtocol) -> list[Path]:
    """The reference set: the training images resized to (size, size) as PNG files."""
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[protocol.resize_filter]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        with Image.open(f) as img:
            p = folder / f"{i:06d}.png"
            img.convert("RGB").resize((size, size), resample).save(p)
            out.append(p)
    return out


# ----------------------------------------------------------------------------- statistics


def statistics(files: list[Path], model, batch_size: int = 50, device="cpu"):
    """Mean and covariance of the model's activations on image files (pytorch-fid's code)."""
    from pytorch_fid.fid_score import calculate_activation_statistics

    dims = getattr(model, "fid_dims", DIMS)
    if len(files) < 2:
        raise ConfigError(f"FID needs at least 2 images per set, got {len(files)}")
    return calculate_activation_statistics(
        [str(f) for f in files], model, min(batch_size, len(files)), dims, device, num_workers=0
    )


def frechet_distance(stats_a, stats_b) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))


def fid_of_folders(folder_a, folder_b, weights, device="cpu", dims: int = DIMS) -> float:
    """FID between two folders of same-size PNG/JPEG images, by pytorch-fid's pipeline."""
    model = load_inception(weights, device, dims=dims)
    ext = (".png", ".jpg", ".jpeg")
    files = [sorted(p for p in Path(f).iterdir() if p.suffix.lower() in ext) for f in (folder_a, folder_b)]
    return frechet_distance(statistics(files[0], model, device=device), statistics(files[1], model, device=device))


def draw(sample: Callable[[int], torch.Tensor], n: int, batch: int) -> Iterator[torch.Tensor]:
    """Batches of ``batch`` images from ``sample`` until ``n`` are drawn (the last may be smaller)."""
    done = 0
    while done < n:
        images = sample(min(batch, n - done))
        done += len(images)
        yield images


class FidEvaluator:
    """Scores a generator against a reference set; the reference statistics are computed once.

    ``sample(n) -> (n, 3, H, W)`` (images meant to lie in [-1, 1]) provides generated images,
    ``sample_batch`` at a time. A call runs the protocol's ``repeats`` evaluations and returns the
    best; :attr:`last_scores` keeps them all and :attr:`samples_drawn` counts the images drawn.
    """

    def __init__(
        self,
        reference_files: list[Path],
        im_size: int,
        weights,
        protocol: str | FidProtocol,
        device="cpu",
        n_samples: int | None = None,
        sample_batch: int = 8,
        dims: int = DIMS,
        batch_size: int = 50,
    ) -> None:
        self.protocol = protocol if isinstance(protocol, FidProtocol) else get_protocol(protocol)
        self.sample_batch = int(sample_batch)
        self.n_samples = int(n_samples or self.protocol.n_samples)
        self.device = device
        self.batch_size = batch_size
        self.last_scores: list[float] = []
        self.samples_drawn = 0
        self._impl: fid_authors.AuthorsScorer | _StandardScorer
        if self.protocol.name == "authors":
            from shapebias.metrics import fid_authors

            self._impl = fid_authors.AuthorsScorer(reference_files, im_size, weights, device, dims, batch_size)
        else:
            self._impl = _StandardScorer(reference_files, im_size, weights, self.protocol, device, dims, batch_size)

    def __call__(self, sample: Callable[[int], torch.Tensor]) -> float:
        def counted(n: int) -> torch.Tensor:
            images = sample(n)
            self.samples_drawn += len(images)
            return images

        self.last_scores = [
            self._impl.score(counted, self.n_samples, self.sample_batch) for _ in range(self.protocol.repeats)
        ]
        return min(self.last_scores)

    def close(self) -> None:
        self._impl.close()


class _StandardScorer:
    """pytorch-fid's pipeline: PNG files in, ``calculate_activation_statistics``."""

    def __init__(self, reference_files, im_size, weights, protocol: FidProtocol, device, dims, batch_size) -> None:
        self.model = load_inception(weights, device, dims=dims)
        self.device, self.batch_size = device, batch_size
        self._tmp = tempfile.TemporaryDirectory(prefix="shapebias-fid-")
        ref = write_reference(reference_files, im_size, Path(self._tmp.name) / "reference", protocol)
        self.reference = statistics(ref, self.model, batch_size, device)

    def score(self, sample, n: int, batch: int) -> float:
        folder = Path(self._tmp.name) / "generated"
        if folder.exists():
            for p in folder.iterdir():
                p.unlink()
        files: list[Path] = []
        for images in draw(sample, n, batch):
            files += save_images(images, folder, start=len(files))
        return frechet_distance(statistics(files, self.model, self.batch_size, self.device), self.reference)

    def close(self) -> None:
        self._tmp.cleanup()
