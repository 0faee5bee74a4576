"""ResNet-18 with spatial Top-K sparsity, in the two specifications of the seed report.

``code`` (the authors' code, as the seed's section 2.1.1 found it): a 3x3 stem without max-pool,
average pooling after ``layer4`` down to a 7x7 map at 224 px and a classifier on the flattened
map (25,088 inputs). The pooling kernel follows the stem: 4 at stem stride 1 (the authors'
``cnns-train-top-k/models/resnet_imgnette.py``: ``F.avg_pool2d(out, 4)`` on a 28x28 map), 2 at
stem stride 2 (the seed's ``cnns-train-top-k/resnet_model.py``: ``F.avg_pool2d(output, 2)`` on a
14x14 map). SGD with momentum 0.9 and weight decay 5e-4.

``paper`` (what the paper states): global average pooling and a 512-input classifier; plain SGD.

Both specs share the 3x3 stem; ``stem_stride`` is 1 (the authors) or 2 (the seed's reproduction).
Top-K (:class:`shapebias.sparsity.TopK`) is applied to the output of the stages named in
``topk_layers`` (default ``layer2`` with k = 0.2, as in the authors' scripts).

Names of the parts follow torchvision's ``resnet.py`` (``conv1``, ``bn1``, ``layer1``..``layer4``,
``fc``); the code is written for this project.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from shapebias.errors import ConfigError, check_choice, check_fraction
from shapebias.models.resnet_spec import SPARSITY, SPECS, STAGES, Spec, parse_layers  # noqa: F401  (also importable here)
from shapebias.sparsity import TopK


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al., 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


def _conv_out(size: int, stride: int) -> int:
    """Output size of a 3x3 convolution with padding 1."""
    return (size - 1) // stride + 1


def feature_size(image_size: int, stem_stride: int) -> int:
    """Spatial size of ``layer4``'s output for a square input."""
    size = _conv_out(image_size, stem_stride)
    for _ in range(3):  # layer2..layer4 halve the map
        size = _conv_out(size, 2)
    return size


def flatten_pool(stem_stride: int) -> int:
    """The ``code`` spec's pooling kernel after ``layer4``: 4 at stem stride 1, 2 at stride 2 (7x7 at 224 px)."""
    return 4 // stem_stride


class ResNet18(nn.Module):
    """ResNet-18 for ``image_size`` x ``image_size`` inputs with Top-K after chosen stages.

    Args:
        num_classes: classifier outputs.
        spec: ``code`` or ``paper`` (see the module docstring).
        stem_stride: stride of the 3x3 stem, 1 or 2.
        image_size: input size; fixes the classifier's input width in the ``code`` spec.
        sparsity: ``none``, ``topk`` or ``topk_mean``.
        topk: fraction of spatial positions kept per sample and channel, in (0, 1].
        topk_layers: stages whose output goes through Top-K.
    """

    def __init__(
        self,
        num_classes: int = 10,
        spec: str = "code",
        stem_stride: int = 1,
        image_size: int = 224,
        sparsity: str = "none",
        topk: float = 0.2,
        topk_layers: str | Sequence[str] = ("layer2",),
    ) -> None:
        super().__init__()
        check_choice("model_spec", spec, tuple(SPECS))
        check_choice("sparsity", sparsity, SPARSITY)
        check_choice("stem_stride", stem_stride, (1, 2))
        topk = check_fraction("topk", topk)
        layers = parse_layers(topk_layers)
        if image_size < 8:
            raise ConfigError(f"image_size={image_size} is too small; ResNet-18 needs at least 8 px")
        self.spec = spec
        self.conv1 = conv3x3(3, 64, stem_stride)
        self.bn1 = nn.BatchNorm2d(64)
        planes, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        in_planes = 64
        for name, p, s in zip(STAGES, planes, strides, strict=True):
            setattr(self, name, nn.Sequential(BasicBlock(in_planes, p, s), BasicBlock(p, p, 1)))
            in_planes = p
        # Top-K after the chosen stages (TopK has no parameters: state_dict keys do not depend on it).
        mode = {"topk": "topk", "topk_mean": "topk_mean"}.get(sparsity)
        self.sparsity = nn.ModuleDict({name: TopK(topk, mode) for name in layers} if mode else {})
        final = feature_size(image_size, stem_stride)
        if SPECS[spec].pool == "flatten":
            kernel = min(flatten_pool(stem_stride), final)  # on maps smaller than that, the kernel is the map
            self.pool: nn.Module = nn.AvgPool2d(kernel)
            pooled = final // kernel
            in_features = 512 * pooled * pooled
        else:
            self.pool = nn.AdaptiveAvgPool2d(1)
            in_features = 512
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for name in STAGES:
            x = getattr(self, name)(x)
            if name in self.sparsity:
                x = self.sparsity[name](x)
        x = self.pool(x)
        return self.fc(torch.flatten(x, 1))


def resnet18(**kwargs) -> ResNet18:
    """ResNet-18 (see :class:`ResNet18` for the arguments)."""
    return ResNet18(**kwargs)


def sgd(model: nn.Module, spec: str, lr: float) -> torch.optim.SGD:
    """The optimizer of a spec: SGD, with momentum 0.9 and weight decay 5e-4 in the ``code`` spec."""
    check_choice("model_spec", spec, tuple(SPECS))
    s = SPECS[spec]
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=s.momentum, weight_decay=s.weight_decay)
