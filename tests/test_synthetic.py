"""The synthetic cue-conflict benchmark: determinism, split semantics, bad sizes."""

from __future__ import annotations

import pytest
import torch

from shapebias.data.synthetic import MAX_CLASSES, SPLITS, fingerprint, make_benchmark, make_split
from shapebias.errors import ConfigError


def test_deterministic_from_seed():
    a = make_benchmark(4, 6, 3, 24, seed=1)
    b = make_benchmark(4, 6, 3, 24, seed=1)
    c = make_benchmark(4, 6, 3, 24, seed=2)
    for split in SPLITS:
        assert torch.equal(a[split].images, b[split].images)
        assert torch.equal(a[split].texture, b[split].texture)
        assert not torch.equal(a[split].images, c[split].images)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_splits_differ_from_each_other():
    a = make_benchmark(3, 5, 5, 16, seed=0)
    assert not torch.equal(a["train"].images, a["original"].images)


def test_split_semantics():
    n_cls, per = 5, 8
    data = make_benchmark(n_cls, per, per, 32, seed=0)
    for s in data.values():
        assert s.images.shape == (n_cls * per, 3, 32, 32) and s.images.dtype == torch.uint8
        assert torch.equal(s.labels, s.shape)  # the label is always the shape's class
        assert torch.bincount(s.labels, minlength=n_cls).tolist() == [per] * n_cls
        assert s.num_classes == n_cls
    assert torch.equal(data["train"].texture, data["train"].shape)
    assert torch.equal(data["original"].texture, data["original"].shape)
    assert (data["stylized"].texture == -1).all()  # textures of no class
    cc = data["cue_conflict"]
    assert (cc.texture != cc.shape).all() and cc.texture.min() >= 0 and cc.texture.max() < n_cls
    x, y = data["train"][0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and isinstance(y, int)


def test_images_show_a_shape_on_a_background():
    s = make_split("train", 4, 4, 32, seed=3)
    img = s.images.float() / 255
    grey = ((img - 0.5).abs() < 0.25).all(dim=1)  # background pixels are near mid-grey
    frac = grey.flatten(1).float().mean(1)
    assert (frac > 0.3).all() and (frac < 0.97).all()


def test_texture_and_shape_each_predict_the_class():
    """Same shape, different texture -> different pixels inside; the class shapes differ."""
    s = make_split("train", 3, 2, 32, seed=0)
    per_class = [s.images[s.labels == c].float().mean(0) for c in range(3)]
    assert not torch.allclose(per_class[0], per_class[1])


@pytest.mark.parametrize(
    "args, word",
    [
        ((1, 4, 32), "synthetic_classes"),
        ((MAX_CLASSES + 1, 4, 32), "synthetic_classes"),
        ((3, 0, 32), "per class"),
        ((3, 4, 8), "image_size"),
    ],
)
def test_bad_sizes(args, word):
    with pytest.raises(ConfigError, match=word):
        make_split("train", *args)


def test_bad_split():
    with pytest.raises(ConfigError, match="cue_conflict"):
        make_split("validation")
