"""ImageNet-pretrained AlexNet and VGG-16 with Top-K inserted at inference (Li et al. 2023, Fig. 1).

Where the authors put Top-K (their ``cnns-inference-top-k/network_architecture.txt``):

* VGG-16: after each of its five max-pools;
* AlexNet: after max-pool 1, max-pool 2, conv3 + ReLU, conv4 + ReLU and the last max-pool.

The architectures are torchvision's. Weights come from torchvision's files in the torch hub
cache (``torch.hub.get_dir()/checkpoints/``) or from an explicit ``.pth`` file; they are loaded
into the plain architecture first, then the Top-K modules are inserted, so the checkpoint keys
are torchvision's. ``weights="random"`` gives randomly initialised networks: for tests and for
timing the pipeline only, never for a reported number.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import cast

import torch
from torch import nn

from shapebias.errors import ConfigError, WeightsError, check_choice, check_fraction
from shapebias.models.pretrained_spec import MODELS, SPARSITY_MODES, SPECS, PretrainedSpec
from shapebias.sparsity import TopK


def spec(name: str) -> PretrainedSpec:
    if name not in SPECS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return SPECS[name]


def default_weights_path(name: str) -> Path:
    """Where torchvision keeps this model's weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / spec(name).weights_file


def resolve_weights(name: str, weights: str) -> Path | None:
    """``pretrained`` -> the hub-cache file; a path -> that file; ``random`` -> None.

    Raises WeightsError naming the missing file, the folder to put it in and its download URL.
    """
    s = spec(name)
    if weights == "random":
        return None
    if weights in ("", "pretrained"):
        path = default_weights_path(name)
        if not path.is_file():
            raise WeightsError(
                f"{name} weights not found: {path} does not exist. Download {s.url} and put it in "
                f"{path.parent}/ (torchvision's hub cache; $TORCH_HOME moves it), or pass "
                f"weights=/path/to/{s.weights_file}. No weights are downloaded automatically."
            )
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"{name} weights file {path} does not exist; pass weights=pretrained to use "
            f"{default_weights_path(name)} (download: {s.url}), or weights=random for tests"
        )
    return path


def load_state(model: nn.Module, path: Path, name: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise WeightsError(f"cannot read {name} weights from {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise WeightsError(
            f"{path} does not hold torchvision {name} weights ({spec(name).weights_file} expected): "
            f"{str(exc).splitlines()[0]}"
        ) from None


def insert_topk(model: nn.Module, name: str, k: float, mode: str = "topk") -> nn.Module:
    """Insert ``TopK(k, mode)`` into ``model.features`` at the authors' points (in place)."""
    s = spec(name)
    features = cast(nn.Module, model.features)  # nn.Module.__getattr__ is typed Tensor | Module
    layers = list(features.children())
    out: list[nn.Module] = []
    for i, layer in enumerate(layers):
        out.append(layer)
        if i in s.insert_after:
            out.append(TopK(k, mode))
    model.features = nn.Sequential(*out)
    return model


def build(
    name: str,
    *,
    sparsity: str = "topk",
    topk: float = 1.0,
    weights: str = "pretrained",
    seed: int = 0,
) -> nn.Module:
    """AlexNet or VGG-16 in eval mode, with Top-K inserted unless ``sparsity`` is ``none``.

    Args:
        name: ``alexnet`` or ``vgg16``.
        sparsity: ``none`` (dense), ``topk``, ``complement`` (keeps only what Top-K drops; the
            paper's ablation) or ``topk_mean``.
        topk: fraction of spatial positions kept per channel, in (0, 1].
        weights: ``pretrained`` (hub cache), ``random`` (seeded; tests only) or a ``.pth`` path.
    """
    s = spec(name)
    check_choice("sparsity", sparsity, SPARSITY_MODES)
    k = check_fraction("topk", topk)
    path = resolve_weights(name, weights)
    if path is None:
        torch.manual_seed(seed)
    model = s.builder()
    if path is not None:
        load_state(model, path, name)
    return with_sparsity(model, name, sparsity, k)


def is_dense(sparsity: str, topk: float) -> bool:
    """True when no Top-K module is needed (``none``, or ``topk`` keeping everything)."""
    return sparsity == "none" or (sparsity == "topk" and float(topk) >= 1.0)


def with_sparsity(dense: nn.Module, name: str, sparsity: str, topk: float) -> nn.Module:
    """A copy of a dense network with Top-K inserted (the dense network itself if none is needed).

    Lets a sweep load weights once and derive one network per sparsity level.
    """
    check_choice("sparsity", sparsity, SPARSITY_MODES)
    k = check_fraction("topk", topk)
    if is_dense(sparsity, k):
        return dense.eval()
    return insert_topk(copy.deepcopy(dense), name, k, sparsity).eval()


def topk_modules(model: nn.Module) -> list[TopK]:
    """The Top-K modules of a built network, in forward order."""
    return [m for m in model.modules() if isinstance(m, TopK)]
