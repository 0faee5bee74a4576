"""FastGAN architecture: the authors' sizes and widths, outputs, Top-K at 32x32, noise injection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapebias.errors import ConfigError
from shapebias.models import fastgan as fg
from shapebias.sparsity import kept_count


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_widths(m: nn.Module) -> list[int]:
    return [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)]


def test_parameter_counts_at_256_equal_the_authors():
    # TopKGen/models.py with ngf = ndf = 64, nz = 256 at 256 px (counted with their code)
    assert n_params(fg.Discriminator(256, 64)) == 11_526_160
    assert n_params(fg.Generator(256, 64)) == 29_127_846


def test_discriminator_width_table_at_256():
    D = fg.Discriminator(256, 64)
    assert conv_widths(D.from_big) == [16]  # 3x3 conv at 256 px
    # residual down blocks to 128, 64, 32, 16, 8 px: (main conv, main conv, direct conv) each
    assert {r: conv_widths(b) for r, b in D.downs.items()} == {
        "128": [32] * 3,
        "64": [64] * 3,
        "32": [128] * 3,
        "16": [256] * 3,
        "8": [512] * 3,
    }
    # SLE: the 256, 128, 64 px features gate the 32, 16, 8 px ones
    assert {r: [s.main[1].in_channels, s.main[1].out_channels] for r, s in D.sle.items()} == {
        "32": [16, 128],
        "16": [32, 256],
        "8": [64, 512],
    }
    assert conv_widths(D.rf_big) == [1024, 1] and D.rf_big[0].in_channels == 512
    assert conv_widths(D.from_small) == [32, 64, 128, 256] and D.rf_small.in_channels == 256
    for dec, cin in ((D.decoder_big, 512), (D.decoder_part, 256), (D.decoder_small, 256)):
        assert dec.main[1][1].in_channels == cin
        assert conv_widths(dec) == [256, 128, 128, 64, 3]  # GLU halves: 128, 64, 64, 32 (sized from 32)


def test_generator_width_table_at_256():
    G = fg.Generator(256, 64)
    assert conv_widths(G.init) == [] and G.init.main[1].num_features == 2048  # 1024 after GLU at 4 px
    glu_out = {r: [c // 2 for c in conv_widths(b)] for r, b in G.ups.items()}
    assert glu_out == {"8": [512, 512], "16": [256], "32": [128, 128], "64": [128], "128": [64, 64], "256": [32]}


@pytest.mark.parametrize("im_size", fg.SUPPORTED_SIZES)
def test_generator_and_discriminator_shapes(im_size):
    torch.manual_seed(0)
    width, n = (8, 2) if im_size <= 256 else (4, 1)
    G, D = fg.build(im_size, width=width, sparsity="topk", topk=0.05, noise_injection=True)
    G.eval(), D.eval()
    s = fg.small_size(im_size)
    assert s == min(128, im_size // 2)
    with torch.no_grad():
        big, small = G(torch.randn(n, fg.NZ))
        assert big.shape == (n, 3, im_size, im_size) and small.shape == (n, 3, s, s)
        logits, recs = D(big, D.small_input(big), part=3)
        targets = D.reconstruction_targets(big, 3)
    assert logits.shape == (n, 50)  # two 5x5 real/fake maps
    assert [r.shape for r in recs] == [(n, 3, s, s)] * 3 == [t.shape for t in targets]


def test_outputs_are_the_last_convs_without_tanh_below_1024():
    torch.manual_seed(1)
    G = fg.Generator(256, width=8, spectral=False)  # train mode: batch statistics, features of size ~1
    with torch.no_grad():
        G.to_big.weight.fill_(1.0)
        z = torch.randn(2, fg.NZ)
        torch.manual_seed(2)
        feats = G.features(z)
        torch.manual_seed(2)
        big, small = G(z)
    assert torch.equal(big, G.to_big(feats[256])) and torch.equal(small, G.to_small(feats[128]))
    assert big.abs().max() > 1  # unbounded: nothing squashes it
    G1024 = fg.Generator(1024, width=4, spectral=False).eval()
    with torch.no_grad():
        z = torch.randn(1, fg.NZ)
        assert torch.equal(G1024(z)[0], torch.tanh(G1024.to_big(G1024.features(z)[1024])))


def test_reconstruction_targets_are_nearest_resizes_of_the_real_batch():
    D = fg.Discriminator(256, width=8)
    x = torch.randn(2, 3, 256, 256)
    whole, small, part = D.reconstruction_targets(x, 2)
    assert torch.equal(whole, x[:, :, ::2, ::2]) and torch.equal(small, whole)  # nearest 256 -> 128
    assert torch.equal(part, x[:, :, 128:, :128])  # bottom-left quadrant, already 128 px
    assert torch.equal(D.small_input(x), F.interpolate(x, size=128))


@pytest.mark.parametrize("bad", [32, 96, 200, "big", 0])
def test_unsupported_size_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="im_size"):
        fg.Generator(bad, width=8)
    with pytest.raises(ConfigError, match="64, 128, 256, 512, 1024"):
        fg.Discriminator(bad, width=8)


@pytest.mark.parametrize("k", [0.05, 0.15, 0.5])
def test_topk_keeps_the_asked_fraction_per_channel_at_32x32(k):
    torch.manual_seed(1)
    G = fg.Generator(64, width=8, sparsity="topk", topk=k)  # train mode: batch statistics keep features O(1)
    with torch.no_grad():
        feat = G.features(torch.randn(3, fg.NZ))[32]
    assert feat.shape[-2:] == (32, 32)
    kept = (feat != 0).sum(dim=(2, 3))
    assert (kept == kept_count(k, 32 * 32)).all(), kept.unique()
    assert kept_count(0.05, 1024) == 51 and kept_count(0.15, 1024) == 153  # the authors' int(k * 1024)
    dense = fg.Generator(64, width=8, sparsity="none")
    with torch.no_grad():
        assert ((dense.features(torch.randn(3, fg.NZ))[32] != 0).sum(dim=(2, 3)) > kept_count(k, 1024)).all()


def _mean_replace_reference(x: torch.Tensor, keep: int) -> torch.Tensor:
    """The authors' sparse_hw_replace_w_mean, written out per channel: the ``keep`` largest raw
    values (no absolute value), their mean written at their positions, zero elsewhere."""
    out = torch.zeros_like(x)
    n, c, h, w = x.shape
    for i in range(n):
        for j in range(c):
            row = x[i, j].flatten()
            order = sorted(range(h * w), key=lambda p: -row[p].item())[:keep]
            mean = sum(row[p] for p in order) / keep
            flat = out[i, j].view(-1)
            for p in order:
                flat[p] = mean
    return out


def test_gan_mean_replacement_is_the_authors_rule_on_signed_values():
    torch.manual_seed(6)
    G = fg.Generator(64, width=8, sparsity="topk_mean_raw", topk=0.05)
    x = torch.randn(2, 3, 8, 8) - 0.5  # mostly negative: ranking |x| would pick other positions
    keep = kept_count(0.05, 64)
    xr = x.clone().requires_grad_(True)
    xm = x.clone().requires_grad_(True)
    ref, out = _mean_replace_reference(xr, keep), G.sparsity(xm)
    assert torch.allclose(out, ref, atol=1e-6)
    assert not torch.allclose(out, _mean_replace_reference(x.abs(), keep) * x.sign(), atol=1e-3)
    w = torch.randn_like(x)
    (ref * w).sum().backward()
    (out * w).sum().backward()
    assert torch.allclose(xm.grad, xr.grad, atol=1e-6)
    with torch.no_grad():
        feat = G.features(torch.randn(2, fg.NZ))[32].flatten(2)
    for row in feat.reshape(-1, feat.shape[-1]):
        kept = row[row != 0]
        assert len(kept) == kept_count(0.05, 1024) and torch.allclose(kept, kept[0].expand_as(kept))


def test_noise_injection_weights_start_at_zero():
    G = fg.Generator(64, width=8, noise_injection=True)
    weights = [m.weight for m in G.modules() if isinstance(m, fg.NoiseInjection)]
    assert len(weights) == 4 and all(torch.equal(w, torch.zeros(1)) for w in weights)
    G.eval()
    z = torch.randn(2, fg.NZ)
    with torch.no_grad():
        assert torch.equal(G(z)[0], G(z)[0])  # weight 0: the noise changes nothing yet


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_noise_injection_flag_really_injects_noise(mode):
    # In train mode spectral norm's power iteration changes the weights at every call, so the
    # train-mode comparison uses a generator without it.
    z = torch.randn(2, fg.NZ)
    for noise, differ in ((True, True), (False, False)):
        torch.manual_seed(3)
        G = fg.Generator(64, width=8, sparsity="topk", noise_injection=noise, spectral=mode == "eval")
        with torch.no_grad():
            for m in G.modules():
                if isinstance(m, fg.NoiseInjection):
                    m.weight.fill_(0.5)  # as if learned
        G.train(mode == "train")
        with torch.no_grad():
            a, b = G(z)[0], G(z)[0]
        assert (not torch.equal(a, b)) is differ, f"noise_injection={noise}"
        n_noise = sum(isinstance(m, fg.NoiseInjection) and m.enabled for m in G.modules())
        assert n_noise == (4 if noise else 0)  # two per comp block at 8 and 32 px


def test_authors_init_draws_conv_and_batchnorm_weights():
    torch.manual_seed(4)
    G = fg.Generator(64, width=16)
    conv = G.ups["16"][1].parametrizations.weight.original
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    bn = G.ups["16"][2]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and 0.01 < bn.weight.std().item() < 0.03
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_sampling_like_the_authors_uses_batch_statistics_and_restores_buffers():
    torch.manual_seed(5)
    G = fg.Generator(64, width=8).eval()
    before = [b.clone() for b in G.buffers()]
    z = torch.randn(4, fg.NZ)
    four = fg.sample_like_authors(G, z)
    two = fg.sample_like_authors(G, z[:2])
    assert not torch.allclose(four[:2], two, atol=1e-4)  # batch norm normalises each batch by itself
    assert not G.training and all(torch.equal(a, b) for a, b in zip(before, G.buffers(), strict=True))
    with torch.no_grad():
        assert torch.allclose(G(z)[0][:2], G(z[:2])[0], atol=1e-5)  # eval mode would not
