"""AlexNet and VGG-16 as plain data: where their weights come from and where Top-K goes.

No torch here (a builder imports torchvision when it runs): the shape-bias job's ``Config``
offers :data:`MODELS` as choices, and ``--help`` reads them without loading the networks
(:mod:`shapebias.models.pretrained`, which re-exports every name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

SPARSITY_MODES = ("none", "topk", "complement", "topk_mean")


@dataclasses.dataclass(frozen=True)
class PretrainedSpec:
    """How to build one network and where its Top-K modules go."""

    name: str
    builder: Callable[[], nn.Module]
    weights_file: str  # torchvision's checkpoint file name
    url: str  # where users download it from
    insert_after: tuple[int, ...]  # indices in ``model.features`` after which Top-K is inserted
    insert_names: tuple[str, ...]  # the paper's names for those points


def _alexnet() -> nn.Module:
    from torchvision.models import alexnet

    return alexnet(weights=None)


def _vgg16() -> nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None)


SPECS: dict[str, PretrainedSpec] = {
    "alexnet": PretrainedSpec(
        name="alexnet",
        builder=_alexnet,
        weights_file="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        # features: 0 conv1 1 relu 2 pool1 | 3 conv2 4 relu 5 pool2 | 6 conv3 7 relu | 8 conv4 9 relu
        #           | 10 conv5 11 relu 12 pool5
        insert_after=(2, 5, 7, 9, 12),
        insert_names=("maxpool1", "maxpool2", "conv3_relu", "conv4_relu", "maxpool5"),
    ),
    "vgg16": PretrainedSpec(
        name="vgg16",
        builder=_vgg16,
        weights_file="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        insert_after=(4, 9, 16, 23, 30),  # the five max-pools
        insert_names=("maxpool1", "maxpool2", "maxpool3", "maxpool4", "maxpool5"),
    ),
}
MODELS = tuple(SPECS)
