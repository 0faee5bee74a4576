"""AlexNet / VGG-16 with Top-K at the authors' insertion points; weights from files only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shapebias.errors import ConfigError, WeightsError
from shapebias.models import pretrained
from shapebias.sparsity import TopK, kept_count

torch.set_num_threads(1)

# Number of conv layers before each Top-K module, and the layer right before it (the paper's points).
EXPECTED = {
    "alexnet": ([1, 2, 3, 4, 5], [nn.MaxPool2d, nn.MaxPool2d, nn.ReLU, nn.ReLU, nn.MaxPool2d]),
    "vgg16": ([2, 4, 7, 10, 13], [nn.MaxPool2d] * 5),
}
INPUT = {"alexnet": 96, "vgg16": 64}  # small inputs that still give every layer a spatial map


@pytest.fixture(scope="module", params=["alexnet", "vgg16"])
def dense(request):
    return request.param, pretrained.build(request.param, sparsity="none", weights="random")


def test_dense_network_has_no_topk(dense):
    name, model = dense
    assert pretrained.topk_modules(model) == []
    assert not any(isinstance(m, TopK) for m in model.features)


def test_topk_is_inserted_where_the_authors_put_it(dense):
    name, model = dense
    net = pretrained.with_sparsity(model, name, "topk", 0.2)
    layers = list(net.features)
    convs, before = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, TopK):
            convs.append(sum(isinstance(x, nn.Conv2d) for x in layers[:i]))
            before.append(type(layers[i - 1]))
    want_convs, want_before = EXPECTED[name]
    assert convs == want_convs
    assert before == want_before
    assert len(pretrained.topk_modules(net)) == 5
    assert pretrained.topk_modules(model) == []  # the dense network is left untouched


@pytest.mark.parametrize("k", [0.05, 0.2, 0.5])
def test_activations_after_each_insertion_are_as_sparse_as_asked(dense, k):
    name, model = dense
    net = pretrained.with_sparsity(model, name, "topk", k)
    seen = []

    def hook(module, inputs, output):
        x = inputs[0]
        n, c, h, w = output.shape
        keep = kept_count(k, h * w)
        nonzero_out = (output != 0).reshape(n, c, -1).sum(-1)
        nonzero_in = (x != 0).reshape(n, c, -1).sum(-1)
        assert (nonzero_out <= keep).all()
        # channels with at least `keep` non-zero inputs keep exactly `keep` positions
        assert (nonzero_out[nonzero_in >= keep] == keep).all()
        # kept values are the inputs' values, unchanged
        assert torch.equal(output[output != 0], x[output != 0])
        seen.append((h * w, keep))

    handles = [m.register_forward_hook(hook) for m in pretrained.topk_modules(net)]
    torch.manual_seed(0)
    with torch.inference_mode():
        logits = net(torch.randn(2, 3, INPUT[name], INPUT[name]))
    for h in handles:
        h.remove()
    assert logits.shape == (2, 1000)
    assert len(seen) == 5


def test_complement_keeps_only_what_topk_drops(dense):
    name, model = dense
    net = pretrained.with_sparsity(model, name, "complement", 0.2)
    first = pretrained.topk_modules(net)[0]
    assert first.mode == "complement"
    x = torch.rand(1, 4, 10, 10) + 0.1
    out = first(x)
    assert ((out != 0).reshape(4, -1).sum(-1) == 100 - kept_count(0.2, 100)).all()


def test_topk_one_is_the_dense_network(dense):
    name, model = dense
    assert pretrained.with_sparsity(model, name, "topk", 1.0) is model
    assert pretrained.is_dense("none", 0.3) and not pretrained.is_dense("complement", 1.0)


def test_bad_names_and_fractions():
    with pytest.raises(ConfigError, match="known models: alexnet, vgg16"):
        pretrained.build("resnet50", weights="random")
    for bad in (0, 1.5, -0.1, "x"):
        with pytest.raises(ConfigError, match="topk"):
            pretrained.build("alexnet", topk=bad, weights="random")
    with pytest.raises(ConfigError, match="sparsity"):
        pretrained.build("alexnet", sparsity="dropout", weights="random")


def test_missing_weights_name_the_file_folder_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name, file in (("alexnet", "alexnet-owt-7be5be79.pth"), ("vgg16", "vgg16-397923af.pth")):
        with pytest.raises(WeightsError) as err:
            pretrained.build(name)
        msg = str(err.value)
        assert file in msg
        assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg
        assert f"https://download.pytorch.org/models/{file}" in msg
    with pytest.raises(WeightsError, match="does not exist"):
        pretrained.build("alexnet", weights=str(tmp_path / "nowhere.pth"))


def test_weights_load_from_hub_cache_and_explicit_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = pretrained.build("alexnet", sparsity="none", weights="random", seed=3)
    path = pretrained.default_weights_path("alexnet")
    path.parent.mkdir(parents=True)
    # saved from a DataParallel wrapper, as the authors' checkpoints are ("module." prefix)
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    loaded = pretrained.build("alexnet", sparsity="topk", topk=0.1)  # weights=pretrained: hub cache
    assert len(pretrained.topk_modules(loaded)) == 5
    assert torch.equal(loaded.classifier[-1].weight, source.classifier[-1].weight)
    again = pretrained.build("alexnet", sparsity="none", weights=str(path))  # an explicit file
    assert torch.equal(again.features[0].weight, source.features[0].weight)


def test_wrong_weights_file_is_a_weights_error(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        pretrained.build("alexnet", weights=str(junk))
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth expected"):
        pretrained.build("alexnet", weights=str(other))
