"""The FastGAN discriminator with the authors' width table (``TopKGen/models.py``).

Widths are ``ndf`` times :data:`D_MULT` of the feature's "1,024-scale" name, as in the authors'
code: at 256 px input the big path runs 16 (256 px), 32, 64, 128, 256, 512 (8 px) channels and
its real/fake head widens to 1,024 before the 4x4 logit conv; the small path (128 px input)
runs 32, 64, 128, 256 channels down to 8 px; the three self-supervised decoders are sized from
``ndf / 2`` (the authors hard-code 32). At ndf = 64 and 256 px this is 11,526,160 parameters.

* Big path: a 3x3 conv (<= 256 px input) or strided 4x4 convs (512, 1024 px; batch norm after all
  but the first) to 256 px, then residual "comp" down blocks to 8x8; SLE gates the 32, 16 and 8 px
  features with the 256, 128 and 64 px ones.
* Small path: a strided conv and plain down blocks to 8x8.
* Logits: the 5x5 maps of both paths. Decoders reconstruct the image from the 8 px big feature,
  the small image from the small feature, and a random quadrant from the 16 px feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shapebias.models.fastgan.common import (
    D_MULT,
    SkipLayerExcitation,
    channels,
    check_im_size,
    conv,
    init_weights,
    small_size,
    up_block,
)


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def down_block(cin: int, cout: int, spectral: bool) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, 4, 2, 1, bias=False, spectral=spectral), nn.BatchNorm2d(cout), _lrelu())


class DownBlockComp(nn.Module):
    """Residual down block: (4x4 stride-2 conv, BN, lrelu, 3x3 conv, BN, lrelu) averaged with
    (2x2 average pool, 1x1 conv, BN, lrelu)."""

    def __init__(self, cin: int, cout: int, spectral: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv(cin, cout, 4, 2, 1, bias=False, spectral=spectral),
            nn.BatchNorm2d(cout),
            _lrelu(),
            conv(cout, cout, 3, 1, 1, bias=False, spectral=spectral),
            nn.BatchNorm2d(cout),
            _lrelu(),
        )
        self.direct = nn.Sequential(
            nn.AvgPool2d(2), conv(cin, cout, 1, 1, 0, bias=False, spectral=spectral), nn.BatchNorm2d(cout), _lrelu()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class SimpleDecoder(nn.Module):
    """Feature -> 8x8 (adaptive average pool) -> up-blocks to ``out_size`` -> 3x3 conv, tanh.

    Widths: ``base`` times the generator's table (16 px: 4x, 32: 2x, 64: 2x, 128: 1x).
    """

    def __init__(self, cin: int, out_size: int, base: int, spectral: bool) -> None:
        super().__init__()
        c = channels(base)
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(8)]
        res, prev = 16, cin
        while res <= out_size:
            layers.append(up_block(prev, c[res], spectral))
            prev, res = c[res], res * 2
        layers += [conv(prev, 3, 3, 1, 1, bias=False, spectral=spectral), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def crop_quadrant(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quadrant ``part`` of (N, C, H, W): 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    h, w = x.shape[2] // 2, x.shape[3] // 2
    top, left = (part // 2) * h, (part % 2) * w
    return x[:, :, top : top + h, left : left + w]


def _from_big(im_size: int, nfc: dict[int, int], spectral: bool) -> nn.Sequential:
    """Input image -> the 256 px (or ``im_size`` if smaller) feature."""
    if im_size <= 256:
        return nn.Sequential(conv(3, nfc[2 * im_size], 3, 1, 1, bias=False, spectral=spectral), _lrelu())
    layers: list[nn.Module] = []
    res, prev = im_size, 3
    while res > 256:
        layers.append(conv(prev, nfc[res], 4, 2, 1, bias=False, spectral=spectral))
        if prev != 3:
            layers.append(nn.BatchNorm2d(nfc[res]))
        layers.append(_lrelu())
        prev, res = nfc[res], res // 2
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """FastGAN discriminator.

    ``forward(big, small)`` returns logits (N, 50): the 5x5 real/fake maps of the big and small
    paths. ``forward(big, small, part=q)`` also returns the three reconstructions
    ``(rec_big, rec_small, rec_part)``, each of size ``small_size(im_size)``; targets come from
    :meth:`reconstruction_targets`.
    """

    def __init__(self, im_size: int = 256, width: int = 64, spectral: bool = True, authors_init: bool = True) -> None:
        super().__init__()
        self.im_size = check_im_size(im_size)
        self.small_size = s = small_size(self.im_size)
        nfc = channels(width, D_MULT)
        r0 = min(self.im_size, 256)
        big = {r: nfc[2 * r] for r in (4, 8, 16, 32, 64, 128, 256) if r <= r0}  # big path, by feature size
        small = {r: nfc[4 * r] for r in (8, 16, 32, 64) if r < s}  # small path, by feature size
        self.from_big = _from_big(self.im_size, nfc, spectral)
        self.downs = nn.ModuleDict()
        self.sle = nn.ModuleDict()
        res = r0 // 2
        while res >= 8:
            self.downs[str(res)] = DownBlockComp(big[res * 2], big[res], spectral)
            if res * 8 <= r0:
                self.sle[str(res)] = SkipLayerExcitation(big[res * 8], big[res], spectral)
            res //= 2
        self.rf_big = nn.Sequential(
            conv(big[8], big[4], 1, 1, 0, bias=False, spectral=spectral),
            nn.BatchNorm2d(big[4]),
            _lrelu(),
            conv(big[4], 1, 4, 1, 0, bias=False, spectral=spectral),
        )
        layers: list[nn.Module] = [conv(3, small[s // 2], 4, 2, 1, bias=False, spectral=spectral), _lrelu()]
        res = s // 4
        while res >= 8:
            layers.append(down_block(small[res * 2], small[res], spectral))
            res //= 2
        self.from_small = nn.Sequential(*layers)
        self.rf_small = conv(small[8], 1, 4, 1, 0, bias=False, spectral=spectral)
        base = max(2, width // 2)
        self.decoder_big = SimpleDecoder(big[8], s, base, spectral)
        self.decoder_part = SimpleDecoder(big[16], s, base, spectral)
        self.decoder_small = SimpleDecoder(small[8], s, base, spectral)
        if authors_init:
            init_weights(self)

    def forward(self, big: torch.Tensor, small: torch.Tensor, part: int | None = None):
        if big.shape[-1] != self.im_size or small.shape[-1] != self.small_size:
            raise ValueError(
                f"expected images of {self.im_size} and {self.small_size} px, "
                f"got {tuple(big.shape)} and {tuple(small.shape)}"
            )
        r0 = min(self.im_size, 256)
        feats = {r0: self.from_big(big)}
        res = r0 // 2
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

    def reconstruction_targets(self, big: torch.Tensor, part: int):
        """The authors' targets: the (augmented) real image, the same image, and its quadrant
        ``part``, each resized to the decoders' size with ``F.interpolate``'s default (nearest)."""
        s = self.small_size
        resize = lambda x: F.interpolate(x, size=(s, s), mode="nearest")  # noqa: E731
        return resize(big), resize(big), resize(crop_quadrant(big, part))

    def small_input(self, big: torch.Tensor) -> torch.Tensor:
        """The small-path input for a real batch: the authors' ``F.interpolate(imgs, size=128)`` (nearest)."""
        return F.interpolate(big, size=(self.small_size, self.small_size), mode="nearest")
