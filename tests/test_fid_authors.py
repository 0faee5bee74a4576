"""The authors' FID protocol end to end on small images, with random Inception weights.

The scores are not FIDs (random weights); the tests check what the protocol does: the pixel
mapping into uint8 [127, 255], the TensorFlow-1 resize, the number of generated images drawn,
and the best of 3 repeats.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shapebias.metrics import fid, fid_authors

DIMS = 64
SIZE = 32


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    return fid.write_random_inception_weights(tmp_path_factory.mktemp("w") / "random_inception.pth", seed=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return sorted(folder.iterdir())


def test_generated_pixels_follow_the_authors_chain():
    g = torch.tensor([-1.0, 0.0, 1.0, -3.0, 3.0, 0.5, -2.0, 0.0]).view(1, 1, 1, 8).expand(1, 3, 8, 8).contiguous()
    out = fid_authors.fake_pixels(g, 8)  # 8 divides 512: the two nearest resizes keep every pixel
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 8, 8)
    # x = (g + 1) / 2, then uint8(255 * (clamp(x, -1, 1) / 2 + 1 / 2)), truncated
    assert out[0, 0, 0].tolist() == [127, 191, 255, 0, 255, 223, 63, 191]
    # in-range images ([-1, 1]) land in [127, 255]
    img = fid_authors.fake_pixels(torch.rand(2, 3, 16, 16) * 2 - 1, 16)
    assert img.min() >= 127 and img.max() <= 255
    # nearest 16 -> 512 -> 16 is the identity on pixels
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(fid_authors.fake_pixels(x, 16), fid_authors.squeeze_to_uint8((x + 1) / 2))


def test_reference_pixels_are_squeezed_into_127_255(tmp_path):
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[0, 0] = 255
    arr[0, 1] = 100
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = fid_authors.real_pixels(tmp_path / "a.png", 4)
    assert out.dtype == torch.uint8 and out.shape == (3, 4, 4)
    assert out[0, 0, 0] == 255 and out[0, 0, 1] == int(255 * (100 / 255 * 0.5 + 0.5)) == 177
    assert out[0, 3, 3] == 127 and out.min() == 127


def test_tensorflow1_bilinear_resize():
    x = torch.tensor([[[[0.0, 10.0]]]])
    # TF 1.x, align_corners=False: source = destination * in / out, no half-pixel shift, edge clamped
    assert fid_authors.resize_bilinear_tf1(x, 4)[0, 0, 0].tolist() == [0.0, 5.0, 10.0, 10.0]
    y = torch.rand(1, 3, 7, 7)
    assert torch.equal(fid_authors.resize_bilinear_tf1(y, 7), y)
    assert fid_authors.inception_input(torch.full((1, 3, 5, 5), 128, dtype=torch.uint8)).abs().max() == 0
    assert fid_authors.inception_input(torch.zeros(1, 3, 5, 5, dtype=torch.uint8)).shape == (1, 3, 299, 299)


def test_authors_protocol_end_to_end_counts_samples_and_keeps_the_best_of_3(random_weights, reference):
    torch.manual_seed(0)
    calls = []
    spread = iter([0.2, 1.0, 0.5])  # one distribution per repeat: different scores

    def sample(n):
        calls.append(n)
        if len(calls) % 3 == 1:
            sample.scale = next(spread)
        return (torch.rand(n, 3, SIZE, SIZE) * 2 - 1) * sample.scale

    ev = fid.FidEvaluator(reference, SIZE, random_weights, "authors", n_samples=10, sample_batch=4, dims=DIMS)
    value = ev(sample)
    # 10 // 4 = 2 whole batches of 4 per evaluation, 3 evaluations
    assert calls == [4, 4, 4] * 2 and ev.samples_drawn == 3 * 8 and len(ev.last_scores) == 3
    assert value == min(ev.last_scores) and len(set(ev.last_scores)) == 3
    # each repeat is the FID of its own images against the reference statistics
    scorer = ev._impl
    assert scorer.reference[0].shape == (DIMS,)
    torch.manual_seed(1)
    imgs = torch.rand(8, 3, SIZE, SIZE) * 2 - 1
    pixels = fid_authors.fake_pixels(imgs, SIZE)
    again = fid.frechet_distance(scorer.stats(pixels), scorer.reference)
    batches = iter(imgs.split(4))
    assert again == pytest.approx(scorer.score(lambda n: next(batches), 8, 4))
    ev.close()


def test_standard_protocol_scores_once_per_evaluation(random_weights, reference):
    ev = fid.FidEvaluator(reference, SIZE, random_weights, "standard", n_samples=6, sample_batch=4, dims=DIMS)
    drawn = []
    value = ev(lambda n: drawn.append(n) or torch.rand(n, 3, SIZE, SIZE) * 2 - 1)
    assert drawn == [4, 2] and ev.last_scores == [value]
    ev.close()
