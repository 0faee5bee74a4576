"""shapebias.synthesis: masks, Gram matrices, the VGG-19 features, weights loading, optimisation, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shapebias import synthesis as S
from shapebias.errors import ConfigError, DataError, WeightsError
from shapebias.sparsity import kept_count

SMALL = ("relu1_1", "pool1", "pool2")  # needs 8 px: keeps the tests fast


@pytest.fixture(scope="module")
def small_model() -> S.VGGFeatures:
    return S.build_vgg19("random", SMALL, seed=0)


@pytest.fixture(scope="module")
def target() -> np.ndarray:
    return S.prepare_image(S.load_images("skimage:chelsea")[0][1], 16, SMALL)


# ---------------------------------------------------------------------------------------------- masks


def test_topk_and_complement_are_disjoint_and_sum_to_all():
    torch.manual_seed(0)
    f = torch.randn(2, 5, 6, 7)  # no zeros, so "non-zero" means "kept"
    k = 0.2
    everything, top, rest = (S.apply_mask(f, m, k) for m in ("all", "topk", "complement"))
    assert torch.equal(everything, f)
    assert not ((top != 0) & (rest != 0)).any()
    assert torch.equal(top + rest, f)
    per_channel = (top != 0).sum(dim=(2, 3))
    assert (per_channel == kept_count(k, 6 * 7)).all()
    # Top-K keeps the largest |f| of each channel: every kept value beats every dropped one.
    for n in range(2):
        for c in range(5):
            kept, dropped = top[n, c][top[n, c] != 0].abs(), rest[n, c][rest[n, c] != 0].abs()
            assert kept.min() >= dropped.max()


def test_masked_gradient_flows_only_through_selected_positions():
    torch.manual_seed(1)
    f = torch.randn(1, 3, 4, 4, requires_grad=True)
    S.apply_mask(f, "topk", 0.25).sum().backward()
    kept = S.apply_mask(f.detach(), "topk", 0.25) != 0
    assert torch.equal(f.grad != 0, kept)


def test_unknown_mask_is_rejected():
    with pytest.raises(ConfigError, match="mask='nope'.*all, topk, complement"):
        S.apply_mask(torch.ones(1, 1, 2, 2), "nope", 0.5)


# ---------------------------------------------------------------------------------------------- Gram


def test_gram_matrix_of_a_known_tensor():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # 2 channels, 2 positions
    expected = torch.tensor([[1 * 1 + 2 * 2, 1 * 3 + 2 * 4], [3 * 1 + 4 * 2, 3 * 3 + 4 * 4]]) / 2.0
    assert torch.allclose(S.gram_matrix(f)[0], expected)


def test_gram_matrix_matches_einsum_and_is_symmetric():
    torch.manual_seed(2)
    f = torch.randn(3, 4, 5, 6)
    g = S.gram_matrix(f)
    assert g.shape == (3, 4, 4)
    assert torch.allclose(g, torch.einsum("nchw,ndhw->ncd", f, f) / 30, atol=1e-5)
    assert torch.allclose(g, g.transpose(1, 2))


# ---------------------------------------------------------------------------------------------- network


def test_layer_names_follow_torchvision_vgg19():
    from torchvision.models import vgg

    kinds = [k for v in vgg.cfgs["E"] for k in (("pool",) if v == "M" else ("conv", "relu"))]
    names = S.vgg19_layer_names()
    assert len(names) == len(kinds) == 37
    assert kinds == [n[:4] for n in names]
    assert names[1] == "relu1_1" and names[4] == "pool1" and names[27] == "pool4"


def test_features_equal_torchvision_vgg19_with_average_pools(tmp_path):
    """Loading a torchvision state dict gives torchvision's activations (max-pools -> avg-pools)."""
    from torchvision.models import vgg

    torch.manual_seed(3)
    ref = vgg.make_layers(vgg.cfgs["E"][:6])  # torchvision's VGG-19 features up to pool2
    assert len(ref) == 10
    for i, m in enumerate(ref):
        if isinstance(m, nn.MaxPool2d):
            ref[i] = nn.AvgPool2d(2, 2)
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in ref.state_dict().items()}, path)
    model = S.build_vgg19(str(path), SMALL)
    assert model.weights == "pretrained"
    x = torch.rand(1, 3, 16, 16)
    feats = model(x)
    h = (x - torch.tensor(S.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(S.IMAGENET_STD).view(1, 3, 1, 1)
    outs = {}
    for i, m in enumerate(ref):
        h = m(h)
        outs[i] = h
    assert torch.allclose(feats["relu1_1"], outs[1], atol=1e-5)
    assert torch.allclose(feats["pool1"], outs[4], atol=1e-5)
    assert torch.allclose(feats["pool2"], outs[9], atol=1e-5)
    assert feats["pool2"].shape == (1, 128, 4, 4)


def test_missing_pretrained_weights_name_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        S.build_vgg19("pretrained", SMALL)
    msg = str(err.value)
    assert S.VGG19_FILE in msg and str(tmp_path / "hub" / "checkpoints") in msg and "weights=random" in msg
    with pytest.raises(WeightsError, match="does not exist"):
        S.build_vgg19(str(tmp_path / "nowhere.pth"), SMALL)


def test_pretrained_weights_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    source = S.build_vgg19("random", ("relu1_1",), seed=5)
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        {f"features.{k}": v for k, v in source.features.state_dict().items()}, tmp_path / "checkpoints" / S.VGG19_FILE
    )
    model = S.build_vgg19("pretrained", ("relu1_1",), seed=6)
    assert model.weights == "pretrained"
    assert torch.equal(model.features[0].weight, source.features[0].weight)


def test_unusable_weight_files_are_weights_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        S.build_vgg19(str(garbage), SMALL)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, wrong)
    with pytest.raises(WeightsError, match="not a torchvision VGG-19"):
        S.build_vgg19(str(wrong), ("relu1_1",))


def test_random_weights_are_seeded_and_frozen():
    a, b = S.build_vgg19("random", ("relu1_1",), seed=7), S.build_vgg19("random", ("relu1_1",), seed=7)
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert a.weights == "random" and not any(p.requires_grad for p in a.parameters())


def test_minimum_image_size_follows_the_deepest_layer():
    assert S.min_image_size(S.DEFAULT_LAYERS) == 32
    assert S.min_image_size(SMALL) == 8
    assert S.min_image_size(("relu1_1",)) == 2
    with pytest.raises(ConfigError, match="layer='pool9'"):
        S.check_layers("relu1_1,pool9")


# ---------------------------------------------------------------------------------------------- optimisation


@pytest.mark.parametrize("method", S.METHODS)
@pytest.mark.parametrize("mask", S.MASKS)
def test_loss_falls_over_lbfgs_steps(small_model, target, method, mask):
    seen = []
    res = S.synthesize(
        small_model,
        target,
        mask=mask,
        method=method,
        k=0.2,
        steps=3,
        iterations_per_step=3,
        seed=0,
        on_step=lambda step, loss: seen.append((step, loss)),
    )
    assert [s for s, _ in seen] == list(range(len(res.losses)))
    assert len(res.losses) == 4  # the start and three outer steps
    assert [loss for _, loss in seen] == res.losses
    assert np.isfinite(res.losses).all()
    assert res.losses[-1] < 0.5 * res.losses[0], res.losses
    assert res.image.shape == target.shape and 0 <= res.image.min() and res.image.max() <= 1


def test_inversion_with_all_activations_recovers_the_image(small_model, target):
    res = S.synthesize(small_model, target, mask="all", method="inversion", steps=5, iterations_per_step=5, seed=0)
    assert res.losses[-1] < 0.02 * res.losses[0]
    assert S.structure_metrics(target, res.image)["edge_corr"] > 0.5


def test_lbfgs_runs_with_the_strong_wolfe_line_search_and_the_asked_budget(small_model, target, monkeypatch):
    built, steps = [], []
    original = torch.optim.LBFGS

    class Spy(original):
        def __init__(self, params, **kwargs):
            built.append(kwargs)
            super().__init__(params, **kwargs)

        def step(self, closure):
            steps.append(1)
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "LBFGS", Spy)
    res = S.synthesize(small_model, target, steps=2, iterations_per_step=4, seed=0)
    assert len(built) == 1 and built[0]["line_search_fn"] == "strong_wolfe" and built[0]["max_iter"] == 4
    assert len(steps) == 2
    assert res.settings["optimizer"] == "lbfgs-strong-wolfe" and res.settings["steps"] == 2
    assert res.settings["iterations_per_step"] == 4 and 2 < res.settings["iterations_run"] <= 8
    assert S.synthesize.__kwdefaults__["steps"] == 100 and S.synthesize.__kwdefaults__["iterations_per_step"] == 20


def test_synthesis_rejects_images_too_small_for_the_layers(small_model):
    with pytest.raises(DataError, match="too small.*at least 8x8"):
        S.synthesize(small_model, np.zeros((6, 6, 3)), steps=1)


def test_histogram_matching_copies_the_target_histogram(target):
    out = S.match_histograms(S.noise_image(16, 16, 0), target)
    assert np.allclose(np.sort(out[..., 0].ravel()), np.sort(target[..., 0].ravel()), atol=1e-6)


# ---------------------------------------------------------------------------------------------- metrics


def test_structure_metrics_identity_and_unrelated_images(target):
    same = S.structure_metrics(target, target)
    assert same["ssim"] == pytest.approx(1.0) and same["edge_corr"] == pytest.approx(1.0)
    flat = S.structure_metrics(target, np.full_like(target, 0.5))
    assert flat["edge_corr"] == 0.0 and flat["ssim"] < 0.5
    noise = S.structure_metrics(target, S.noise_image(16, 16, 1))
    assert abs(noise["edge_corr"]) < 0.5 and noise["ssim"] < 0.5


def test_edge_correlation_sees_a_shifted_edge_less():
    img = np.zeros((32, 32, 3))
    img[:, 16:] = 1.0
    shifted = np.zeros((32, 32, 3))
    shifted[:, 24:] = 1.0
    assert S.edge_correlation(img, img) == pytest.approx(1.0)
    assert S.edge_correlation(img, shifted) < 0.2


# ---------------------------------------------------------------------------------------------- images


def test_skimage_samples_load_as_rgb():
    ((name, cat),) = S.load_images("skimage:chelsea")
    assert name == "chelsea" and cat.shape == (300, 451, 3) and cat.dtype == np.float64
    assert 0 <= cat.min() and cat.max() <= 1
    ((_, camera),) = S.load_images("skimage:camera")  # grey -> three equal channels
    assert camera.shape[2] == 3 and np.array_equal(camera[..., 0], camera[..., 2])
    with pytest.raises(ConfigError, match="image='skimage:dog'.*skimage:chelsea"):
        S.load_images("skimage:dog")


def test_files_and_folders(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(["b.png", "a.jpg"]):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    assert [n for n, _ in S.load_images(str(folder))] == ["a", "b"]
    ((name, image),) = S.load_images(str(folder / "b.png"))
    assert name == "b" and image.shape == (20, 24, 3)
    with pytest.raises(DataError, match="does not exist"):
        S.load_images(str(tmp_path / "missing.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        S.load_images(str(empty))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read"):
        S.load_images(str(tmp_path / "broken.png"))


def test_prepare_image_crops_resizes_and_checks_size():
    image = np.random.default_rng(0).uniform(size=(40, 60, 3))
    out = S.prepare_image(image, 32, S.DEFAULT_LAYERS)
    assert out.shape == (32, 32, 3)
    assert np.array_equal(S.prepare_image(image, 40, S.DEFAULT_LAYERS), image[:, 10:50])
    with pytest.raises(ConfigError, match="image_size=16 is too small.*pool4.*32"):
        S.prepare_image(image, 16, S.DEFAULT_LAYERS)
    with pytest.raises(DataError, match="20x20 px, too small.*32x32"):
        S.prepare_image(np.zeros((20, 20, 3)), 64, S.DEFAULT_LAYERS, name="tiny")


def test_grid_places_images_side_by_side():
    a, b = np.zeros((4, 5, 3)), np.ones((4, 5, 3))
    g = S.grid([a, b, a], pad=2)
    assert g.shape == (4, 19, 3)
    assert np.array_equal(g[:, 7:12], b)
