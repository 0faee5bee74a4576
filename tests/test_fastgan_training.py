"""FastGAN training pieces: augmentation, losses (LPIPS summed over the batch), one step, rollback."""

from __future__ import annotations

import types

import pytest
import torch

from shapebias.errors import ConfigError, WeightsError
from shapebias.models import fastgan as fg
from training import fastgan_worker


def test_translation_and_color_augment():
    torch.manual_seed(4)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    y = fg.training._translate(x, 0.125)
    assert y.shape == x.shape
    assert ((y == 0).float().mean() > 0) or torch.equal(x, y)  # shifted rows, or zero padding
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


def _fake_lpips(monkeypatch, tmp_path):
    """LPIPS without VGG weights: a stand-in network with LPIPS's output shape (N, 1, 1, 1)."""
    import lpips

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / fg.VGG16_FILE).write_bytes(b"")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    class PerSample(torch.nn.Module):
        def __init__(self, **_kwargs):
            super().__init__()

        def forward(self, x, y):
            return (x - y).pow(2).mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setattr(lpips, "LPIPS", PerSample)


def test_lpips_reconstruction_loss_is_summed_over_the_batch(monkeypatch, tmp_path):
    _fake_lpips(monkeypatch, tmp_path)
    loss = fg.reconstruction_loss("lpips")
    torch.manual_seed(0)
    x, y = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    one = loss(x, y)
    assert one.shape == () and one > 0
    eight = loss(x.expand(8, -1, -1, -1), y.expand(8, -1, -1, -1))
    assert torch.allclose(eight, 8 * one)  # the authors' percept(...).sum(): 8x the mean at batch 8
    xs, ys = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    assert torch.allclose(loss(xs, ys), sum(loss(xs[i : i + 1], ys[i : i + 1]) for i in range(3)))


def test_l1_substitute_is_summed_over_the_batch_too():
    loss = fg.reconstruction_loss("l1")
    x, y = torch.zeros(4, 3, 2, 2), torch.ones(4, 3, 2, 2)
    assert loss(x, y).item() == pytest.approx(4.0)


def test_lpips_without_vgg_weights_is_a_weights_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="vgg16-397923af.pth.*recon_loss=l1"):
        fg.reconstruction_loss("lpips")
    with pytest.raises(ConfigError, match="recon_loss"):
        fg.check_recon_loss("l2")
    fg.check_recon_loss("l1")


def test_one_training_step_updates_both_networks_and_ema():
    torch.manual_seed(5)
    G, D = fg.build(64, width=8, sparsity="topk", topk=0.05, noise_injection=True)
    ema = fg.ema_copy(G)
    g0 = [p.detach().clone() for p in G.parameters()]
    d0 = [p.detach().clone() for p in D.parameters()]
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = fastgan_worker.train_step(
        G, D, opt_g, opt_d, torch.rand(2, 3, 64, 64) * 2 - 1, fg.reconstruction_loss("l1")
    )
    assert set(losses) == {"loss_d_real", "loss_d_fake", "loss_recon", "loss_g"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters(), strict=True))
    e0 = [p.clone() for p in ema.parameters()]
    fg.ema_update(ema, G, 0.5)
    for a, b, g in zip(e0, ema.parameters(), G.parameters(), strict=True):
        assert torch.allclose(b, 0.5 * a + 0.5 * g.detach())


def test_perturb_adds_bounded_uniform_noise():
    m = torch.nn.Linear(50, 40)
    before = [p.detach().clone() for p in m.parameters()]
    fg.perturb(m, 1e-3)
    diffs = torch.cat([(p - b).flatten() for p, b in zip(m.parameters(), before, strict=True)])
    assert diffs.abs().max() <= 1e-3 and diffs.abs().max() > 9e-4 and abs(diffs.mean()) < 1e-4


def test_rollback_returns_to_the_best_evaluation_after_patience_and_perturbs_g():
    cfg = types.SimpleNamespace(rollback_patience=2, perturb_g=1e-3, perturb_d=0.0)
    G, D = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    nets = {"G": G, "D": D}
    state: dict = {}
    rb = fastgan_worker.Rollback(cfg, state)
    assert rb.after_evaluation(1000, 50.0, nets) is None  # first: the best
    best_g, best_d = G.weight.detach().clone(), D.weight.detach().clone()
    with torch.no_grad():
        G.weight.add_(1.0), D.weight.add_(1.0)
    assert rb.after_evaluation(2000, 40.0, nets) is None  # better: new best
    best_g, best_d = G.weight.detach().clone(), D.weight.detach().clone()
    with torch.no_grad():
        G.weight.add_(1.0), D.weight.add_(1.0)
    assert rb.after_evaluation(3000, 45.0, nets) is None  # one bad evaluation
    assert rb.after_evaluation(4000, 41.0, nets) == 2000  # second bad one: back to iteration 2000
    assert torch.equal(D.weight, best_d)  # perturb_d = 0
    assert not torch.equal(G.weight, best_g) and (G.weight - best_g).abs().max() <= 1e-3
    assert state["rollbacks"] == 1 and state["bad_evals"] == 0 and state["best"]["fid"] == 40.0
    off = fastgan_worker.Rollback(types.SimpleNamespace(rollback_patience=0, perturb_g=0, perturb_d=0), {})
    assert all(off.after_evaluation(i, 99.0, nets) is None for i in range(5))
