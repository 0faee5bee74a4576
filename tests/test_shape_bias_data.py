"""The cue-conflict loader (model-vs-human's layout) and the `shapebias data` command."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from shapebias.data import cue_conflict, fetch
from shapebias.errors import DataError
from shapebias.metrics.imagenet16 import CATEGORIES


def make_cue_conflict(root, pairs, size=224):
    """A tiny cue-conflict folder: ``pairs`` of (shape, texture), one noise PNG each."""
    rng = np.random.default_rng(0)
    for i, (shape, texture) in enumerate(pairs, start=1):
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{shape}{i}-{texture}{i % 3 + 1}.png")
    return root


def test_scan_reads_shape_from_folder_and_texture_from_name(tmp_path):
    root = make_cue_conflict(tmp_path / "cc", [("airplane", "bicycle"), ("bear", "bear"), ("cat", "dog")])
    images = cue_conflict.scan(root)
    assert [(im.shape, im.texture) for im in images] == [("airplane", "bicycle"), ("bear", "bear"), ("cat", "dog")]
    assert [im.conflict for im in images] == [True, False, True]
    assert images[0].imagename == "airplane1-bicycle2.png"
    assert len(cue_conflict.scan(root, limit=2)) == 2


def test_loader_gives_normalised_224_images(tmp_path):
    root = make_cue_conflict(tmp_path / "cc", [("dog", "cat")], size=300)  # resized + cropped
    ds = cue_conflict.CueConflictDataset(cue_conflict.scan(root))
    x, i = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 224, 224) and i == 0
    z = cue_conflict.normalize(x[None])
    assert z.dtype == torch.float32
    white = cue_conflict.normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).flatten()
    expected = [(1 - m) / s for m, s in zip(cue_conflict.IMAGENET_MEAN, cue_conflict.IMAGENET_STD, strict=True)]
    assert white.tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "no category folders"),
        (lambda root: (root / "train").mkdir(parents=True), "train.*not categories.*expected <shape>/"),
        (
            lambda root: (root / "dog").mkdir(parents=True) or (root / "dog" / "photo.jpg").write_bytes(b"x"),
            "photo.jpg is not a cue-conflict image name: expected dogN-<texture>M.png",
        ),
        (
            lambda root: (root / "dog").mkdir(parents=True) or (root / "dog" / "dog1-zebra1.png").write_bytes(b"x"),
            "dog1-zebra1.png is not a cue-conflict image name",
        ),
        (
            lambda root: (root / "dog").mkdir(parents=True) or (root / "dog" / "cat1-dog1.png").write_bytes(b"x"),
            "cat1-dog1.png is not a cue-conflict image name",
        ),
        (lambda root: (root / "dog").mkdir(parents=True), "holds no images"),
    ],
)
def test_folders_not_in_the_layout_are_refused(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        cue_conflict.scan(root)


def test_unreadable_image_is_a_data_error(tmp_path):
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "dog1-cat1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        cue_conflict.load_image(tmp_path / "dog" / "dog1-cat1.png")


def test_real_cue_conflict_set(cue_conflict_dir):
    images = cue_conflict.scan(cue_conflict_dir)
    assert len(images) == cue_conflict.EXPECTED_IMAGES == 1280
    assert sorted({im.shape for im in images}) == list(CATEGORIES)
    assert all(sum(im.shape == c for im in images) == 80 for c in CATEGORIES)
    assert sum(im.conflict for im in images) == 1200
    limited = cue_conflict.scan(cue_conflict_dir, limit=32)
    assert len({im.shape for im in limited}) == 16  # spread over the categories
    assert cue_conflict.load_image(images[0].path).shape == (3, 224, 224)


def test_setting_points_at_the_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPEBIAS_CUE_CONFLICT_DIR", str(tmp_path))
    assert cue_conflict.resolve_dir("") == tmp_path
    assert cue_conflict.resolve_dir(str(tmp_path / "x")) == tmp_path / "x"


# ---------------------------------------------------------------------------- shapebias data


def test_registry_entries_are_complete():
    for name, entry in fetch.SOURCES.items():
        assert entry["url"].startswith("https://"), name
        assert len(entry["tree_sha256"]) == 64
        assert entry["folder"] and entry["description"] and entry["citation"]


def test_local_copy_matches_the_registered_checksum(cue_conflict_dir):
    assert fetch.verify("cue-conflict", cue_conflict_dir) == cue_conflict_dir
    assert fetch.main(["verify", "cue-conflict", str(cue_conflict_dir)]) == 0


def test_fetch_downloads_checks_and_extracts(tmp_path, monkeypatch, capsys):
    src = make_cue_conflict(tmp_path / "release" / "cue-conflict", [("dog", "cat"), ("cat", "dog")], size=8)
    archive = tmp_path / "cue-conflict.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cue-conflict")
    digest, count = fetch.tree_digest(src)
    entry = {
        **fetch.SOURCES["cue-conflict"],
        "url": archive.as_uri(),
        "tree_sha256": digest,
        "files": count,
        "sha256": fetch.file_sha256(archive),
    }
    monkeypatch.setitem(fetch.SOURCES, "cue-conflict", entry)
    assert fetch.main(["fetch", "cue-conflict", "--dest", str(tmp_path / "home")]) == 0
    out = tmp_path / "home" / "cue-conflict"
    assert len(cue_conflict.scan(out)) == 2
    assert "SHAPEBIAS_CUE_CONFLICT_DIR" in capsys.readouterr().out
    # a wrong archive checksum is refused and leaves nothing half-extracted behind
    monkeypatch.setitem(fetch.SOURCES, "cue-conflict", {**entry, "sha256": "0" * 64})
    assert fetch.main(["fetch", "cue-conflict", "--dest", str(tmp_path / "other")]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "other" / "cue-conflict").exists()
    # content that differs from the registry is refused
    (out / "dog" / "dog1-cat2.png").write_bytes(b"changed")
    with pytest.raises(DataError, match="does not match"):
        fetch.verify("cue-conflict", out)


def test_data_command_errors(capsys):
    assert fetch.main(["fetch", "imagenet-21k"]) == 2
    assert "known data sets: cue-conflict" in capsys.readouterr().err
    assert fetch.main(["list"]) == 0
    assert "model-vs-human/releases" in capsys.readouterr().out
