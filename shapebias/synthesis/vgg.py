"""VGG-19 features for texture synthesis: layer names, the network with average pools, weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from shapebias.errors import ConfigError, WeightsError, check_choice
from shapebias.synthesis_spec import DEFAULT_LAYERS

VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG-19 (IMAGENET1K_V1)
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG-19 "E": channels per conv layer, one list per block; a pool closes every block.
_VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def vgg19_layer_names() -> list[str]:
    """Names of the modules of ``torchvision.models.vgg19().features``, in order."""
    names = []
    for b, block in enumerate(_VGG19_BLOCKS, start=1):
        for i in range(1, len(block) + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


def _downsampling(name: str) -> int:
    """Factor by which a layer's feature map is smaller than the input."""
    names = vgg19_layer_names()
    return 2 ** sum(1 for n in names[: names.index(name) + 1] if n.startswith("pool"))


def check_layers(layers: Sequence[str] | str) -> tuple[str, ...]:
    """Parse and validate layer names (a sequence or a comma-separated string)."""
    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    known = vgg19_layer_names()
    if not layers:
        raise ConfigError(f"layers is empty; choose some of: {', '.join(known)}")
    for name in layers:
        check_choice("layer", name, known)
    return tuple(sorted(set(layers), key=known.index))


def min_image_size(layers: Sequence[str] = DEFAULT_LAYERS) -> int:
    """Smallest image side for which every chosen layer is at least 2x2.

    Below that a layer has one position per channel: Top-K keeps it and the complement is empty.
    """
    return 2 * max(_downsampling(name) for name in check_layers(layers))


# ----------------------------------------------------------------------------------------------
# The network


class VGGFeatures(nn.Module):
    """VGG-19 convolutional part up to the deepest requested layer, average pools, no in-place ReLU.

    ``forward`` takes images in [0, 1] (N, 3, H, W), normalises them as ImageNet models expect and
    returns ``{layer name: activation}`` for the requested layers.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, layers: Sequence[str] = DEFAULT_LAYERS) -> None:
        super().__init__()
        self.layers = check_layers(layers)
        names = vgg19_layer_names()
        depth = max(names.index(n) for n in self.layers) + 1
        modules: list[nn.Module] = []
        in_ch = 3
        for name in names[:depth]:
            if name.startswith("conv"):
                b, i = (int(s) for s in name[4:].split("_"))
                out_ch = _VGG19_BLOCKS[b - 1][i - 1]
                modules.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
                in_ch = out_ch
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=False))
            else:
                modules.append(nn.AvgPool2d(kernel_size=2, stride=2))
        self.names = names[:depth]
        self.features = nn.Sequential(*modules)  # indices match torchvision's vgg19().features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.weights = "random"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        h = (x - self.mean) / self.std
        for name, module in zip(self.names, self.features, strict=True):
            h = module(h)
            if name in self.layers:
                out[name] = h
        return out


def default_weights_path() -> Path:
    """Where torchvision caches VGG-19: ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def resolve_weights(weights: str) -> Path | None:
    """``pretrained`` -> the torch hub cache file; ``random`` -> None; anything else is a path.

    Raises WeightsError, naming the file and where to put it, when the file is missing.
    """
    if weights == "random":
        return None
    path = default_weights_path() if weights == "pretrained" else Path(weights).expanduser()
    if not path.is_file():
        how = (
            f"download {VGG19_URL} on a machine with internet access and put it at {path} "
            f"(the torch hub cache, torch.hub.get_dir()/checkpoints/), or pass weights=/path/to/{VGG19_FILE}"
        )
        if weights == "pretrained":
            raise WeightsError(
                f"ImageNet VGG-19 weights {VGG19_FILE} are missing from {path.parent}: {how}; "
                "or choose weights=random for the random-filter baseline (labelled as such)"
            )
        raise WeightsError(f"weights file {path} does not exist: {how}; or choose weights=random")
    return path


def build_vgg19(weights: str = "pretrained", layers: Sequence[str] = DEFAULT_LAYERS, seed: int = 0) -> VGGFeatures:
    """VGG-19 features with average pools, frozen, in eval mode.

    Args:
        weights: ``pretrained`` (torchvision's ImageNet file from the torch hub cache), a path to
            that file (or any VGG-19 state dict with ``features.N.*`` keys), or ``random`` (the
            random-filter baseline; torchvision's initialisation, seeded by ``seed``).
    """
    path = resolve_weights(weights)
    torch.manual_seed(seed)
    model = VGGFeatures(layers)
    for m in model.modules():  # torchvision's VGG initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
            raise WeightsError(f"cannot read VGG-19 weights from {path}: {type(exc).__name__}: {exc}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        wanted = model.features.state_dict()
        picked = {k: state.get(f"features.{k}") for k in wanted}
        missing = [k for k, v in picked.items() if v is None]
        wrong = [k for k, v in picked.items() if v is not None and tuple(v.shape) != tuple(wanted[k].shape)]
        if missing or wrong:
            raise WeightsError(
                f"{path} is not a torchvision VGG-19 state dict: "
                + (f"missing features.{missing[0]}" if missing else f"features.{wrong[0]} has the wrong shape")
                + f" (expected {VGG19_FILE} from {VGG19_URL})"
            )
        model.features.load_state_dict(picked)
        model.weights = "pretrained"
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
