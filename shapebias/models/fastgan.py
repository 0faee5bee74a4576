"""FastGAN (Liu et al., ICLR 2021), with the Top-K sparsity of Li et al. (NeurIPS 2023).

Written from the paper "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot
Image Synthesis" (Liu, Zhu, Song, Elgammal, ICLR 2021):

* **Generator**: a 4x4 init layer (transposed conv + GLU), then up-blocks (nearest upsampling,
  3x3 conv, batch norm, GLU) that double the resolution up to ``im_size``. Every other block is
  the heavier "comp" block with two convolutions and **noise injection** (8, 32, 128, 512 px).
  **Skip-layer excitation** (SLE) gates the channels of the 64/128/256/512 px features with the
  4/8/16/32 px features. Two outputs: the image at ``im_size`` and a small one (128 px at 256+).
* **Discriminator**: a big-image path down to 8x8 (residual "comp" down blocks, SLE from a
  feature 8x larger) and a small-image path, each ending in a real/fake head of 5x5 logits;
  three **self-supervised decoders** reconstruct the whole image, the small image and a random
  quadrant (from the 16x16 feature) so that D learns features that describe real images.
* **DiffAugment** (Zhao et al., 2020) "color,translation" on real and fake images before D.
* **Hinge loss with random margins** (margin drawn in [0.8, 1.0] per logit) for D, ``-D(G(z))``
  for G, and an **EMA** copy of G for sampling.

Li et al. (2023) put Top-K right after the generator's 32x32 feature map (k = 5 % for jeep,
fish and train, 15 % for table); ``sparsity='topk_mean'`` replaces kept values with their mean.
Noise injection is a flag that really injects noise (the seed report found the authors' flag
was dead code). Noise strengths start at ``noise_init`` (0.1, not 0 as in StyleGAN) so that the
flag changes the generator's output from the first step.

Supported sizes: 256, 512, 1024 as in the paper, and 64, 128 for tests and CPU runs. Spectral
normalisation is applied to every convolution. Channel widths follow the paper's table scaled
by ``width`` (64 in the paper); tests use small widths.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from shapebias.errors import ConfigError, WeightsError, check_choice
from shapebias.sparsity import TopK

SUPPORTED_SIZES = (64, 128, 256, 512, 1024)
SPARSITY = ("none", "topk", "topk_mean")
TOPK_RESOLUTION = 32
NZ = 256  # latent size in the paper
# Channel multipliers per resolution (times `width`), from the paper's architecture figure.
_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}


def check_im_size(im_size) -> int:
    try:
        size = int(float(im_size))
    except (TypeError, ValueError):
        size = -1
    if size not in SUPPORTED_SIZES:
        raise ConfigError(
            f"im_size={im_size!r} is not supported by the FastGAN architecture; "
            f"choose one of: {', '.join(map(str, SUPPORTED_SIZES))}"
        )
    return size


def small_size(im_size: int) -> int:
    """Size of the generator's second output and of the decoders' reconstructions."""
    return min(128, im_size // 2)


def channels(width: int) -> dict[int, int]:
    return {r: max(4, int(m * width)) for r, m in _MULT.items()}


def _conv(*args, spectral: bool = True, **kwargs) -> nn.Module:
    conv = nn.Conv2d(*args, **kwargs)
    return spectral_norm(conv) if spectral else conv


# --------------------------------------------------------------------------------- generator


class NoiseInjection(nn.Module):
    """``x + w * n`` with ``n ~ N(0, 1)`` per pixel (shared over channels), ``w`` learned.

    Active in train and eval mode when ``enabled``; an identity otherwise (the parameter stays so
    that checkpoints load either way).
    """

    def __init__(self, enabled: bool, init: float = 0.1) -> None:
        super().__init__()
        self.enabled = enabled
        self.weight = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * noise

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}"


class InitLayer(nn.Module):
    """z (N, nz) -> 4x4 feature: transposed 4x4 conv, batch norm, GLU."""

    def __init__(self, nz: int, out: int, spectral: bool) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d(nz, out * 2, 4, 1, 0, bias=False)
        self.main = nn.Sequential(spectral_norm(conv) if spectral else conv, nn.BatchNorm2d(out * 2), nn.GLU(dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


def up_block(cin: int, cout: int, spectral: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        _conv(cin, cout * 2, 3, 1, 1, bias=False, spectral=spectral),
        nn.BatchNorm2d(cout * 2),
        nn.GLU(dim=1),
    )


def up_block_comp(cin: int, cout: int, spectral: bool, noise: bool, noise_init: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        _conv(cin, cout * 2, 3, 1, 1, bias=False, spectral=spectral),
        NoiseInjection(noise, noise_init),
        nn.BatchNorm2d(cout * 2),
        nn.GLU(dim=1),
        _conv(cout, cout * 2, 3, 1, 1, bias=False, spectral=spectral),
        NoiseInjection(noise, noise_init),
        nn.BatchNorm2d(cout * 2),
        nn.GLU(dim=1),
    )


class SkipLayerExcitation(nn.Module):
    """SLE: a low-resolution feature gates the channels of a high-resolution one.

    ``gate = sigmoid(conv1x1(swish(conv4x4(avgpool4(x_low)))))``; returns ``x_high * gate``.
    """

    def __init__(self, c_low: int, c_high: int, spectral: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            _conv(c_low, c_high, 4, 1, 0, bias=False, spectral=spectral),
            nn.SiLU(),
            _conv(c_high, c_high, 1, 1, 0, bias=False, spectral=spectral),
            nn.Sigmoid(),
        )

    def forward(self, x_low: torch.Tensor, x_high: torch.Tensor) -> torch.Tensor:
        return x_high * self.main(x_low)


def _sparsity_layer(sparsity: str, topk: float) -> nn.Module:
    check_choice("sparsity", sparsity, SPARSITY)
    if sparsity == "none":
        return nn.Identity()
    return TopK(topk, mode=sparsity)


class Generator(nn.Module):
    """FastGAN generator. ``forward(z)`` returns ``(image, small_image)`` in [-1, 1].

    Args:
        im_size: output resolution, one of :data:`SUPPORTED_SIZES`.
        width: channel width (``ngf``; 64 in the paper).
        nz: latent size (256 in the paper).
        sparsity: ``none``, ``topk`` or ``topk_mean`` after the 32x32 feature map.
        topk: fraction of the 32x32 positions kept per channel.
        noise_injection: inject per-pixel noise in the comp up-blocks.
    """

    def __init__(
        self,
        im_size: int = 256,
        width: int = 64,
        nz: int = NZ,
        sparsity: str = "none",
        topk: float = 0.05,
        noise_injection: bool = False,
        noise_init: float = 0.1,
        spectral: bool = True,
    ) -> None:
        super().__init__()
        self.im_size = check_im_size(im_size)
        self.small_size = small_size(self.im_size)
        self.nz = nz
        c = channels(width)
        self.init = InitLayer(nz, c[4], spectral)
        self.ups = nn.ModuleDict()
        self.sle = nn.ModuleDict()
        res = 8
        while res <= self.im_size:
            comp = int(math.log2(res)) % 2 == 1  # 8, 32, 128, 512: comp blocks with noise
            block = (
                up_block_comp(c[res // 2], c[res], spectral, noise_injection, noise_init)
                if comp
                else up_block(c[res // 2], c[res], spectral)
            )
            self.ups[str(res)] = block
            if 64 <= res <= 512:
                self.sle[str(res)] = SkipLayerExcitation(c[res // 16], c[res], spectral)
            res *= 2
        self.sparsity = _sparsity_layer(sparsity, topk)
        self.to_big = _conv(c[self.im_size], 3, 3, 1, 1, bias=False, spectral=spectral)
        self.to_small = _conv(c[self.small_size], 3, 1, 1, 0, bias=False, spectral=spectral)

    def features(self, z: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every intermediate feature map by resolution (the 32x32 one after Top-K)."""
        feats = {4: self.init(z)}
        res = 8
        while res <= self.im_size:
            x = self.ups[str(res)](feats[res // 2])
            if res == TOPK_RESOLUTION:
                x = self.sparsity(x)
            if str(res) in self.sle:
                x = self.sle[str(res)](feats[res // 16], x)
            feats[res] = x
            res *= 2
        return feats

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(z)
        big = torch.tanh(self.to_big(feats[self.im_size]))
        small = torch.tanh(self.to_small(feats[self.small_size]))
        return big, small


# ----------------------------------------------------------------------------- discriminator


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=False)


def down_block(cin: int, cout: int, spectral: bool) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, 4, 2, 1, bias=False, spectral=spectral), nn.BatchNorm2d(cout), _lrelu())


class DownBlockComp(nn.Module):
    """Residual down block: (4x4 stride-2 conv, BN, lrelu, 3x3 conv, BN, lrelu) averaged with
    (2x2 average pool, 1x1 conv, BN, lrelu)."""

    def __init__(self, cin: int, cout: int, spectral: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            _conv(cin, cout, 4, 2, 1, bias=False, spectral=spectral), nn.BatchNorm2d(cout), _lrelu(),
            _conv(cout, cout, 3, 1, 1, bias=False, spectral=spectral), nn.BatchNorm2d(cout), _lrelu(),
        )
        self.direct = nn.Sequential(
            nn.AvgPool2d(2), _conv(cin, cout, 1, 1, 0, bias=False, spectral=spectral), nn.BatchNorm2d(cout), _lrelu()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class SimpleDecoder(nn.Module):
    """8x8 feature -> image of ``out_size`` (up-blocks with GLU, then a 3x3 conv and tanh)."""

    def __init__(self, cin: int, out_size: int, width: int, spectral: bool) -> None:
        super().__init__()
        c = channels(width)
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(8)]
        res, prev = 16, cin
        while res <= out_size:
            layers.append(up_block(prev, c[res], spectral))
            prev, res = c[res], res * 2
        layers.append(_conv(prev, 3, 3, 1, 1, bias=False, spectral=spectral))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.main(x))


def crop_quadrant(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quadrant ``part`` of (N, C, H, W): 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    h, w = x.shape[2] // 2, x.shape[3] // 2
    top, left = (part // 2) * h, (part % 2) * w
    return x[:, :, top:top + h, left:left + w]


class Discriminator(nn.Module):
    """FastGAN discriminator.

    ``forward(big, small)`` returns logits (N, 50): the 5x5 real/fake maps of the big and small
    paths. ``forward(big, small, part=q)`` also returns the three reconstructions
    ``(rec_big, rec_small, rec_part)``, each of size ``small_size(im_size)``; targets come from
    :meth:`reconstruction_targets`.
    """

    def __init__(self, im_size: int = 256, width: int = 64, spectral: bool = True) -> None:
        super().__init__()
        self.im_size = check_im_size(im_size)
        self.small_size = small_size(self.im_size)
        c = channels(width)
        dc = {r: c[min(2 * r, 1024)] for r in c}  # D's channels at feature resolution r
        # Big path: strided convs down to 256 px (512/1024 inputs), or a 3x3 conv (<= 256 px).
        r0 = min(self.im_size, 256)
        if self.im_size > 256:
            layers: list[nn.Module] = []
            res, prev = self.im_size, 3
            while res > 256:
                layers += [_conv(prev, dc[res // 2], 4, 2, 1, bias=False, spectral=spectral), _lrelu()]
                prev, res = dc[res // 2], res // 2
            self.from_big = nn.Sequential(*layers)
        else:
            self.from_big = nn.Sequential(_conv(3, dc[r0], 3, 1, 1, bias=False, spectral=spectral), _lrelu())
        self.downs = nn.ModuleDict()
        self.sle = nn.ModuleDict()
        res = r0 // 2
        while res >= 8:
            self.downs[str(res)] = DownBlockComp(dc[res * 2], dc[res], spectral)
            if res * 8 <= r0:
                self.sle[str(res)] = SkipLayerExcitation(dc[res * 8], dc[res], spectral)
            res //= 2
        self.rf_big = nn.Sequential(
            _conv(dc[8], dc[4], 1, 1, 0, bias=False, spectral=spectral), nn.BatchNorm2d(dc[4]), _lrelu(),
            _conv(dc[4], 1, 4, 1, 0, bias=False, spectral=spectral),
        )
        # Small path.
        s = self.small_size
        layers = [_conv(3, dc[s // 2], 4, 2, 1, bias=False, spectral=spectral), _lrelu()]
        res = s // 4
        while res >= 8:
            layers.append(down_block(dc[res * 2], dc[res], spectral))
            res //= 2
        self.from_small = nn.Sequential(*layers)
        self.rf_small = _conv(dc[8], 1, 4, 1, 0, bias=False, spectral=spectral)
        # Self-supervised decoders.
        self.decoder_big = SimpleDecoder(dc[8], s, width, spectral)
        self.decoder_part = SimpleDecoder(dc[16], s, width, spectral)
        self.decoder_small = SimpleDecoder(dc[8], s, width, spectral)

    def forward(self, big: torch.Tensor, small: torch.Tensor, part: int | None = None):
        if big.shape[-1] != self.im_size or small.shape[-1] != self.small_size:
            raise ValueError(
                f"expected images of {self.im_size} and {self.small_size} px, got {tuple(big.shape)} and {tuple(small.shape)}"
            )
        feats = {min(self.im_size, 256): self.from_big(big)}
        res = min(self.im_size, 256) // 2
        while res >= 8:
            x = self.downs[str(res)](feats[res * 2])
            if str(res) in self.sle:
                x = self.sle[str(res)](feats[res * 8], x)
            feats[res] = x
            res //= 2
        feat_small = self.from_small(small)
        logits = torch.cat([self.rf_big(feats[8]).flatten(1), self.rf_small(feat_small).flatten(1)], dim=1)
        if part is None:
            return logits
        rec_big = self.decoder_big(feats[8])
        rec_small = self.decoder_small(feat_small)
        rec_part = self.decoder_part(crop_quadrant(feats[16], part))
        return logits, (rec_big, rec_small, rec_part)

    def reconstruction_targets(self, big: torch.Tensor, small: torch.Tensor, part: int):
        s = self.small_size
        resize = lambda x: F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)  # noqa: E731
        return resize(big), small if small.shape[-1] == s else resize(small), resize(crop_quadrant(big, part))


# ----------------------------------------------------------------------------- augmentation


def diff_augment(x: torch.Tensor, policy: str = "color,translation") -> torch.Tensor:
    """DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentations, per sample.

    ``color``: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the channel mean),
    contrast (x U(0.5, 1.5) around the image mean). ``translation``: shift by up to 1/8 of the
    size with zero padding.
    """
    for name in filter(None, policy.split(",")):
        if name == "color":
            n = x.shape[0]
            x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean
        elif name == "translation":
            x = _translate(x, 0.125)
        else:
            raise ConfigError(f"DiffAugment policy {name!r} is not supported; choose from: color, translation")
    return x


def _translate(x: torch.Tensor, ratio: float) -> torch.Tensor:
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - ty  # output (y, x) reads input (y - ty, x - tx)
    xs = torch.arange(w, device=x.device).view(1, 1, w) - tx
    valid = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return out * valid.to(x.dtype)


# ------------------------------------------------------------------------------------- losses


def d_hinge_real(logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss on real logits with a random margin in [0.8, 1.0] per logit."""
    return F.relu(torch.rand_like(logits) * 0.2 + 0.8 - logits).mean()


def d_hinge_fake(logits: torch.Tensor) -> torch.Tensor:
    return F.relu(torch.rand_like(logits) * 0.2 + 0.8 + logits).mean()


def g_loss(logits: torch.Tensor) -> torch.Tensor:
    return -logits.mean()


def random_part() -> int:
    return random.randint(0, 3)


# ---------------------------------------------------------------------------------------- EMA


def ema_copy(generator: Generator) -> Generator:
    ema = copy.deepcopy(generator).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float = 0.999) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def build(im_size: int, width: int = 64, **generator_kwargs) -> tuple[Generator, Discriminator]:
    """A generator and a discriminator for ``im_size`` (paper defaults: width 64, nz 256)."""
    return Generator(im_size, width, **generator_kwargs), Discriminator(im_size, width)


# --------------------------------------------------------------------------- reconstruction

RECON_LOSSES = ("lpips", "l1")
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG-16, which LPIPS builds on


def check_recon_loss(name: str) -> None:
    """ConfigError for an unknown loss; WeightsError if LPIPS's VGG-16 weights are absent."""
    check_choice("recon_loss", name, RECON_LOSSES)
    if name == "lpips":
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        if not (hub / VGG16_FILE).is_file():
            raise WeightsError(
                f"recon_loss=lpips needs torchvision's ImageNet VGG-16 weights {VGG16_FILE}, which are not in {hub}; "
                f"put the file there (https://download.pytorch.org/models/{VGG16_FILE}), or choose the named "
                f"substitute recon_loss=l1 (logged with the run)"
            )


def reconstruction_loss(name: str, device: torch.device | str = "cpu"):
    """``loss(x, y) -> scalar`` for images in [-1, 1]: LPIPS (VGG) as in the paper, or L1."""
    check_recon_loss(name)
    if name == "l1":
        return lambda x, y: F.l1_loss(x, y)
    import lpips

    net = lpips.LPIPS(net="vgg", verbose=False).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return lambda x, y: net(x, y).mean()
