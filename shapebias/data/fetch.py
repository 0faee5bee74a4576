"""``shapebias data``: download the public data sets the experiments use, and check them.

Usage::

    shapebias data                              what can be fetched, where it goes, what is there
    shapebias data fetch cue-conflict [--dest DIR] [--force]
    shapebias data verify cue-conflict [PATH]   check a local copy against the registry

The registry :data:`SOURCES` is a plain dict: one entry per data set with its public URL and
checksums. ``sha256`` is the checksum of the downloaded archive (None where the project could
not record it offline: the command then prints the archive's checksum for the user to
compare); ``tree_sha256`` is the checksum of the extracted content (see :func:`tree_digest`),
which is checked after every download and by ``verify``.

Downloads go through torchvision's ``download_url`` (redirects, a tqdm progress bar); the
archive is then extracted here with tarfile's ``data`` filter, which refuses members that
would land outside the target folder (torchvision's own extraction has no such filter). Data
sets land in the user data folder (:func:`shapebias.settings.data_home`,
``~/.cache/shapebias/data``), where the jobs look for them without any setting.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from shapebias import settings
from shapebias.errors import ConfigError, DataError, ShapebiasError

SOURCES: dict[str, dict] = {
    "cue-conflict": {
        "url": "https://github.com/bethgelab/model-vs-human/releases/download/v0.1/cue-conflict.tar.gz",
        # The release archive could not be downloaded where this registry was written; the content
        # checksum below was computed from the 1,280 images of that release (shared/data/cue-conflict).
        "sha256": None,
        "tree_sha256": "2b1e91cbbb8e9329de7433090e12a93067439c10f9c97f7ccaf2cebb7a6184f4",
        "files": 1280,
        "folder": "cue-conflict",  # the folder the archive extracts to
        "setting": "SHAPEBIAS_CUE_CONFLICT_DIR",
        "description": "Geirhos et al. (ICLR 2019) cue-conflict images, model-vs-human layout (16 x 80 PNG)",
        "citation": "Geirhos et al., ICLR 2019; model-vs-human, Geirhos et al., NeurIPS 2021",
    },
}


def list_files(root: str | Path) -> list[Path]:
    """The files under ``root``, hidden files and folders skipped, sorted."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / n for n in filenames if not n.startswith(".")]
    return sorted(out)


def tree_digest(root: str | Path) -> tuple[str, int]:
    """(sha256, file count) of a folder's content: sorted ``relative/path<TAB>sha256(file)`` lines.

    Hidden files and folders are skipped, so that the digest depends only on the data set.
    """
    root = Path(root)
    lines = [f"{p.relative_to(root).as_posix()}\t{file_sha256(p)}\n" for p in list_files(root)]
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode())
    return h.hexdigest(), len(lines)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def source(name: str) -> dict:
    if name not in SOURCES:
        raise ConfigError(f"unknown data set {name!r}; known data sets: {', '.join(SOURCES)}")
    return SOURCES[name]


def verify(name: str, path: str | Path) -> Path:
    """Check a local copy against the registry's content checksum; DataError on a mismatch."""
    entry = source(name)
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; expected the extracted {name} data set")
    count = len(list_files(path))
    if entry.get("files") and count != entry["files"]:
        raise DataError(f"{path} holds {count} files; the {name} data set has {entry['files']}")
    digest, count = tree_digest(path)
    expected = entry.get("tree_sha256")
    if expected and digest != expected:
        raise DataError(
            f"{path} does not match the registered {name} content: {count} files with checksum "
            f"{digest}, expected {entry.get('files', '?')} files with checksum {expected}"
        )
    return path


def download(url: str, dest: Path) -> None:
    """Download ``url`` to the file ``dest`` with a progress bar; a ``file:`` URL (a local mirror)
    is copied. DataError if it fails."""
    try:
        if url.startswith("file:"):
            shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), dest)
            return
        from torchvision.datasets.utils import download_url  # imports torch: only when downloading

        download_url(url, str(dest.parent), dest.name)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise DataError(f"could not download {url}: {exc}") from None


def _extract(archive: Path, into: Path) -> None:
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")  # refuses absolute paths and links out of `into`
        except tarfile.TarError as exc:
            raise DataError(f"cannot extract {archive.name}: {exc}") from None
    elif archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (into / member).resolve().is_relative_to(into.resolve()):
                    raise DataError(f"{archive} holds a path outside the target folder: {member}")
            zf.extractall(into)
    else:
        raise DataError(f"do not know how to extract {archive.name}")


def fetch(name: str, dest: str | Path | None = None, *, force: bool = False) -> Path:
    """Download and extract a data set, check its checksums, return the extracted folder."""
    entry = source(name)
    dest = Path(dest) if dest else settings.data_home()
    target = dest / entry["folder"]
    if target.is_dir() and not force:
        return verify(name, target)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{name}-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / entry["url"].rsplit("/", 1)[-1]
        download(entry["url"], archive)
        digest = file_sha256(archive)
        if entry.get("sha256") and digest != entry["sha256"]:
            raise DataError(f"checksum mismatch for {entry['url']}: got {digest}, expected {entry['sha256']}")
        if not entry.get("sha256"):
            print(f"archive sha256 {digest} (no archive checksum registered; checking the content instead)")
        extracted = tmp / "extracted"
        extracted.mkdir()
        _extract(archive, extracted)
        folder = extracted / entry["folder"]
        if not folder.is_dir():
            raise DataError(f"{archive.name} did not contain the folder {entry['folder']}/")
        verify(name, folder)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(folder), target)
    return target


def local_copy(name: str) -> Path:
    """Where the jobs look for a data set (its setting, the user data folder, shared/)."""
    if name == "cue-conflict":
        found = settings.cue_conflict_dir()
        if found is not None:
            return found
    return settings.data_home() / source(name)["folder"]


def describe() -> str:
    """Every data set that can be fetched: what it is, where from, where it goes, and whether it is there."""
    lines = ["data sets that `shapebias data fetch NAME` downloads:"]
    for name, entry in SOURCES.items():
        here = local_copy(name)
        target = settings.data_home() / entry["folder"]
        state = f"present at {here}" if here.is_dir() else f"not downloaded (goes to {target})"
        lines += [
            f"  {name}: {entry['description']}",
            f"    from {entry['url']}",
            f"    {state}",
            f"    cite: {entry['citation']}",
        ]
    lines += [
        "",
        "The few-shot sets of Table 2 have no public archive: build them from an ImageNet training folder",
        "with `python -m shapebias.data.few_shot prepare NAME --imagenet-train DIR`.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shapebias data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", help="what to do (default: list)")
    sub.add_parser("list", help="list the data sets that can be fetched (the default)")
    p_fetch = sub.add_parser("fetch", help="download, check and extract a data set")
    p_fetch.add_argument("name", help=f"one of: {', '.join(SOURCES)}")
    p_fetch.add_argument(
        "--dest",
        default="",
        help="parent folder (default: the user data folder, "
        f"{settings.data_home()}; jobs find data sets there without settings)",
    )
    p_fetch.add_argument("--force", action="store_true", help="download again even if present")
    p_verify = sub.add_parser("verify", help="check a local copy against the registered checksum")
    p_verify.add_argument("name", help=f"one of: {', '.join(SOURCES)}")
    p_verify.add_argument("path", nargs="?", default="", help="default: the copy the jobs use")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.action in (None, "list"):
            print(describe())
            return 0
        if args.action == "fetch":
            path = fetch(args.name, args.dest or None, force=args.force)
            print(f"{args.name}: {path}")
            setting = source(args.name).get("setting")
            if setting and local_copy(args.name) != path:
                print(f"the jobs do not look in {path.parent}; use this copy with: export {setting}={path}")
            return 0
        path = Path(args.path) if args.path else local_copy(args.name)
        verify(args.name, path)
        print(f"{args.name}: {path} matches the registered checksum")
        return 0
    except ShapebiasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
