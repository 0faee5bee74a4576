"""FID through pytorch-fid, with an Inception weights file that the test makes (random init).

Values computed here are not FIDs of anything meaningful; they check the plumbing: a folder
against itself scores ~0, against a changed folder > 0. They use pytorch-fid's 64-dimensional
feature block: the matrix square root of 2048x2048 covariances takes minutes on a busy CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shapebias.errors import ConfigError, WeightsError
from shapebias.metrics import fid

N = 5
DIMS = 64


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    return fid.write_random_inception_weights(tmp_path_factory.mktemp("w") / "random_inception.pth", seed=0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    rng = np.random.default_rng(0)
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    for i in range(N):
        yy, xx = np.mgrid[:64, :64]
        img = np.stack([(xx * (i + 1) * 4) % 256, (yy * 3 + i * 40) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
        Image.fromarray(img).save(a / f"{i}.png")
        noisy = np.clip(img.astype(int) + rng.integers(-60, 60, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(255 - noisy).save(b / f"{i}.png")  # changed: inverted and noisy
    return a, b


def test_fid_of_a_folder_against_itself_is_zero_and_against_a_changed_one_positive(random_weights, folders):
    a, b = folders
    model = fid.load_inception(random_weights, dims=DIMS)
    files_a, files_b = sorted(a.iterdir()), sorted(b.iterdir())
    stats_a = fid.statistics(files_a, model)
    stats_b = fid.statistics(files_b, model)
    assert stats_a[0].shape == (DIMS,) and stats_a[1].shape == (DIMS, DIMS)
    same = fid.frechet_distance(stats_a, stats_a)
    changed = fid.frechet_distance(stats_a, stats_b)
    assert changed > 0
    assert abs(same) < 1e-3 * changed + 1e-6, (same, changed)


def test_fid_of_folders_end_to_end(random_weights, folders):
    a, b = folders
    assert fid.fid_of_folders(a, b, random_weights, dims=DIMS) > 0
    with pytest.raises(ConfigError, match="fid_dims"):
        fid.fid_of_folders(a, b, random_weights, dims=100)


def test_random_weights_are_not_verified_as_the_official_file(random_weights):
    assert not fid.weights_verified(random_weights)


def test_missing_weights_name_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        fid.resolve_weights(None)
    assert fid.INCEPTION_FILE in str(err.value) and str(tmp_path / "hub" / "checkpoints") in str(err.value)
    with pytest.raises(WeightsError, match="does not exist"):
        fid.resolve_weights(tmp_path / "nope.pth")


def test_unreadable_weights_file_is_a_weights_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(WeightsError, match="bad.pth"):
        fid.load_inception(bad)


def test_protocols():
    # eval_agent_module.py: n_sample = 3000, test_times = 3 (best kept); train.py: every 1,000 iterations
    authors = fid.get_protocol("authors")
    assert (authors.n_samples, authors.repeats, authors.every, authors.pixels) == (3000, 3, 1000, "uint8[127,255]")
    standard = fid.get_protocol("standard")
    assert (standard.n_samples, standard.repeats, standard.every) == (5000, 1, 5000)
    assert "fid_protocol.n_samples" in fid.get_protocol("authors").params()
    with pytest.raises(ConfigError, match="standard, authors"):
        fid.get_protocol("best")


def test_generated_images_are_written_as_png(tmp_path):
    x = torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8).repeat(2, 1, 1, 1)
    paths = fid.save_images(x, tmp_path)
    arr = np.asarray(Image.open(paths[0]))
    assert arr.shape == (8, 8, 3) and arr.min() == 0 and arr.max() == 255
