"""ResNet-18 specs: output shapes, classifier widths, Top-K placement, optimizer settings."""

from __future__ import annotations

import pytest
import torch

from shapebias.errors import ConfigError
from shapebias.models.resnet import ResNet18, feature_size, resnet18, sgd
from shapebias.sparsity import TopK


@pytest.mark.parametrize(
    "spec, stride, size, in_features",
    [
        ("code", 1, 224, 25088),  # the authors' classifier: 512 x 7 x 7 (seed, section 2.1.1)
        ("code", 2, 224, 25088),  # the seed's: 14 x 14 map pooled by 2 -> 7 x 7
        ("paper", 1, 224, 512),
        ("paper", 2, 224, 512),
        ("code", 1, 32, 512),  # synthetic size: 4 x 4 map pooled by 4
        ("code", 2, 32, 512),  # 2 x 2 map: the pooling kernel shrinks to the map
        ("paper", 2, 32, 512),
    ],
)
def test_output_shapes(spec, stride, size, in_features):
    torch.manual_seed(0)
    model = resnet18(num_classes=7, spec=spec, stem_stride=stride, image_size=size, sparsity="topk")
    assert model.fc.in_features == in_features
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "spec, stride, pool, params",
    [
        ("code", 2, 2, 11_419_722),  # the seed's CS network (cnns-train-top-k/resnet_model.py) at 10 classes
        ("code", 1, 4, 11_419_722),  # the authors' (resnet_imgnette.py): same classifier, pooled by 4
        ("paper", 2, None, 11_173_962),  # global average pooling, 512-input classifier
        ("paper", 1, None, 11_173_962),
    ],
)
def test_classifier_width_and_parameter_count_at_224(spec, stride, pool, params):
    model = resnet18(num_classes=10, spec=spec, stem_stride=stride, image_size=224)
    assert sum(p.numel() for p in model.parameters()) == params
    if pool is None:
        assert isinstance(model.pool, torch.nn.AdaptiveAvgPool2d) and model.fc.in_features == 512
    else:
        assert model.pool.kernel_size == pool and model.fc.in_features == 512 * 7 * 7


def test_feature_size_matches_forward():
    model = resnet18(image_size=40, stem_stride=1)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        h = torch.relu(model.bn1(model.conv1(x)))
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(model, stage)(h)
    assert h.shape[-1] == feature_size(40, 1) == 5


def test_topk_applied_after_chosen_stages():
    model = resnet18(image_size=32, sparsity="topk_mean", topk=0.1, topk_layers="layer1,layer3")
    assert set(model.sparsity) == {"layer1", "layer3"}
    assert all(isinstance(m, TopK) and m.mode == "topk_mean" and m.k == 0.1 for m in model.sparsity.values())
    seen = {}
    for name in ("layer1", "layer2", "layer3"):
        module = model.sparsity[name] if name in model.sparsity else getattr(model, name)
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    # default stem stride 1: layer1's map is 32 x 32 = 1024 positions -> int(0.1 * 1024) = 102 kept
    out1 = seen["layer1"].flatten(2)
    assert ((out1 != 0).sum(-1) <= 102).all()
    for row in out1.reshape(-1, 1024)[:16]:  # topk_mean: one value per sample and channel
        assert row[row != 0].unique().numel() <= 1
    assert ((seen["layer2"] != 0).flatten(2).sum(-1) > 102).any()  # layer2 is not sparsified
    assert resnet18(image_size=32, sparsity="none").sparsity.keys() == set()


def test_state_dict_keys_do_not_depend_on_sparsity():
    dense = resnet18(image_size=32, sparsity="none").state_dict()
    sparse = resnet18(image_size=32, sparsity="topk").state_dict()
    assert dense.keys() == sparse.keys()


def test_gradients_flow_with_topk():
    model = resnet18(image_size=32, sparsity="topk", topk=0.05)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"spec": "resnet"}, ["model_spec", "'resnet'", "code", "paper"]),
        ({"sparsity": "l1"}, ["sparsity", "'l1'", "topk_mean"]),
        ({"topk": 0.0}, ["topk", "(0, 1]"]),
        ({"topk": 1.5}, ["topk", "(0, 1]"]),
        ({"stem_stride": 3}, ["stem_stride", "1, 2"]),
        ({"topk_layers": "layer5"}, ["topk_layers", "layer5", "layer4"]),
        ({"topk_layers": ""}, ["topk_layers", "layer1"]),
    ],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(ConfigError) as err:
        ResNet18(image_size=32, **kwargs)
    for w in words:
        assert w in str(err.value)


def test_optimizer_per_spec():
    model = resnet18(image_size=32)
    code = sgd(model, "code", 0.1).param_groups[0]
    paper = sgd(model, "paper", 0.1).param_groups[0]
    assert (code["momentum"], code["weight_decay"]) == (0.9, 5e-4)
    assert (paper["momentum"], paper["weight_decay"]) == (0.0, 0.0)
