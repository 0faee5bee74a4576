"""FastGAN architecture: shapes, Top-K at 32x32, noise injection, losses, augmentation, one step."""

from __future__ import annotations

import pytest
import torch

from shapebias.errors import ConfigError, WeightsError
from shapebias.models import fastgan as fg
from shapebias.sparsity import kept_count


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
        assert big.abs().max() <= 1 and small.abs().max() <= 1
        logits, recs = D(big, small, part=3)
        targets = D.reconstruction_targets(big, small, 3)
    assert logits.shape == (n, 50)  # two 5x5 real/fake maps
    assert [r.shape for r in recs] == [(n, 3, s, s)] * 3 == [t.shape for t in targets]


@pytest.mark.parametrize("bad", [32, 96, 200, "big", 0])
def test_unsupported_size_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="im_size"):
        fg.Generator(bad, width=8)
    with pytest.raises(ConfigError, match="64, 128, 256, 512, 1024"):
        fg.Discriminator(bad, width=8)


@pytest.mark.parametrize("k", [0.05, 0.15, 0.5])
def test_topk_keeps_the_asked_fraction_per_channel_at_32x32(k):
    torch.manual_seed(1)
    G = fg.Generator(64, width=8, sparsity="topk", topk=k).eval()
    with torch.no_grad():
        feat = G.features(torch.randn(3, fg.NZ))[32]
    assert feat.shape[-2:] == (32, 32)
    kept = (feat != 0).sum(dim=(2, 3))
    assert (kept == kept_count(k, 32 * 32)).all(), kept.unique()
    dense = fg.Generator(64, width=8, sparsity="none").eval()
    with torch.no_grad():
        assert ((dense.features(torch.randn(3, fg.NZ))[32] != 0).sum(dim=(2, 3)) > kept_count(k, 1024)).all()


def test_topk_mean_replaces_kept_values_by_their_mean():
    torch.manual_seed(2)
    G = fg.Generator(64, width=8, sparsity="topk_mean", topk=0.05).eval()
    with torch.no_grad():
        feat = G.features(torch.randn(2, fg.NZ))[32].flatten(2)
    for row in feat.reshape(-1, feat.shape[-1]):
        kept = row[row != 0]
        assert len(kept) == kept_count(0.05, 1024)
        assert torch.allclose(kept, kept[0].expand_as(kept))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_noise_injection_flag_really_injects_noise(mode):
    # In train mode spectral norm's power iteration changes the weights at every call, so the
    # train-mode comparison uses a generator without it.
    z = torch.randn(2, fg.NZ)
    for noise, differ in ((True, True), (False, False)):
        torch.manual_seed(3)
        G = fg.Generator(64, width=8, sparsity="topk", noise_injection=noise, spectral=mode == "eval")
        G.train(mode == "train")
        with torch.no_grad():
            a, b = G(z)[0], G(z)[0]
        assert (not torch.equal(a, b)) is differ, f"noise_injection={noise}"
        n_noise = sum(isinstance(m, fg.NoiseInjection) and m.enabled for m in G.modules())
        assert n_noise == (4 if noise else 0)  # two per comp block at 8 and 32 px


def test_translation_and_color_augment():
    torch.manual_seed(4)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    y = fg._translate(x, 0.125)
    assert y.shape == x.shape
    # every output row is an input row shifted by at most 2 px, or zero padding
    assert ((y == 0).float().mean() > 0) or torch.equal(x, y)
    z = fg.diff_augment(x, "color,translation")
    assert z.shape == x.shape and not torch.equal(z, x)
    x.requires_grad_(True)
    fg.diff_augment(x).sum().backward()
    assert x.grad is not None
    with pytest.raises(ConfigError, match="cutout"):
        fg.diff_augment(x, "cutout")


def test_hinge_losses_with_random_margin():
    big = torch.full((4, 50), 5.0)
    assert fg.d_hinge_real(big) == 0 and fg.d_hinge_fake(-big) == 0
    zero = torch.zeros(4, 50)
    assert 0.8 <= fg.d_hinge_real(zero) <= 1.0 and 0.8 <= fg.d_hinge_fake(zero) <= 1.0
    assert fg.g_loss(big) == -5.0


def test_one_training_step_updates_both_networks_and_ema():
    from training.train_fastgan import train_step

    torch.manual_seed(5)
    G, D = fg.build(64, width=8, sparsity="topk", topk=0.05, noise_injection=True)
    ema = fg.ema_copy(G)
    g0 = [p.detach().clone() for p in G.parameters()]
    d0 = [p.detach().clone() for p in D.parameters()]
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = train_step(G, D, opt_g, opt_d, torch.rand(2, 3, 64, 64) * 2 - 1, fg.reconstruction_loss("l1"))
    assert set(losses) == {"loss_d_real", "loss_d_fake", "loss_recon", "loss_g"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    e0 = [p.clone() for p in ema.parameters()]
    fg.ema_update(ema, G, 0.5)
    for a, b, g in zip(e0, ema.parameters(), G.parameters()):
        assert torch.allclose(b, 0.5 * a + 0.5 * g.detach())


def test_lpips_without_vgg_weights_is_a_weights_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="vgg16-397923af.pth.*recon_loss=l1"):
        fg.reconstruction_loss("lpips")
    with pytest.raises(ConfigError, match="recon_loss"):
        fg.check_recon_loss("l2")
    fg.check_recon_loss("l1")
