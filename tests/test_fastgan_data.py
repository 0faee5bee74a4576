"""Few-shot folders: what is accepted, and the errors for what is not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shapebias.data import few_shot
from shapebias.errors import ConfigError, DataError


def _images(folder, n, fmt="PNG", size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for i in range(n):
        Image.fromarray(np.full((size[1], size[0], 3), i * 20, np.uint8)).save(folder / f"img{i}.{ext}", fmt)
    return folder


def test_a_flat_folder_of_images(tmp_path):
    folder = _images(tmp_path / "set", 4)
    (folder / "README.txt").write_text("ignored")
    (folder / ".hidden.png").write_bytes(b"ignored")
    files = few_shot.list_images(folder)
    assert [f.name for f in files] == [f"img{i}.png" for i in range(4)]
    data = few_shot.FewShotImages(folder, 64)
    assert data.images.shape == (4, 3, 64, 64)
    assert data.images.min() >= -1 and data.images.max() <= 1
    batch = data.sample(6)
    assert batch.shape == (6, 3, 64, 64)


def test_missing_empty_and_nested_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        few_shot.list_images(tmp_path / "nope")
    with pytest.raises(DataError, match="data_dir is empty"):
        few_shot.list_images("")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        few_shot.list_images(tmp_path / "empty")
    _images(tmp_path / "outer" / "jeep", 2)
    with pytest.raises(DataError, match="sub-folders"):
        few_shot.list_images(tmp_path / "outer")


def test_unreadable_image_is_named(tmp_path):
    folder = _images(tmp_path / "set", 2)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        few_shot.list_images(folder)


def test_mixed_formats_are_refused(tmp_path):
    folder = _images(tmp_path / "set", 2, "PNG")
    _images(folder, 1, "JPEG")
    with pytest.raises(DataError, match="mixes image formats.*JPEG.*PNG"):
        few_shot.list_images(folder)


def test_shared_few_shot_sets(few_shot_dir):
    for name in ("jeep", "fish"):
        files = few_shot.list_images(few_shot_dir(name))
        assert len(files) == 100
        assert files[0].name.startswith(few_shot.FEW_SHOT_SOURCES[name].wnid)


def test_prepare_from_imagenet(tmp_path):
    root = tmp_path / "train"
    _images(root / "n03594945", 5, "JPEG")
    out = few_shot.prepare_from_imagenet("jeep", root, tmp_path / "out", count=3, seed=1)
    assert len(few_shot.list_images(out)) == 3
    listed = few_shot.prepare_from_imagenet("jeep", root, tmp_path / "out2", files=["img0.jpg", "img4.jpg"])
    assert sorted(p.name for p in listed.iterdir()) == ["img0.jpg", "img4.jpg"]
    with pytest.raises(ConfigError, match="WNID"):
        few_shot.prepare_from_imagenet("table", root, tmp_path / "out3")
    with pytest.raises(DataError, match="fewer than"):
        few_shot.prepare_from_imagenet("jeep", root, tmp_path / "out4", count=100)


def test_verify_shared_sets_against_registered_checksums(few_shot_dir, tmp_path):
    assert few_shot.verify("jeep", few_shot_dir("jeep"))
    with pytest.raises(DataError, match="not the registered fish set"):
        few_shot.verify("fish", few_shot_dir("jeep"))
    assert few_shot.main(["list"]) == 0
    assert few_shot.main(["verify", "table", str(few_shot_dir("jeep"))]) == 2
