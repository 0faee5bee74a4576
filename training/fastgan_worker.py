"""The Ray Train worker of ``train_fastgan``: the training step, FID evaluations, rollback.

As the authors' ``TopKGen/train.py``:

* one iteration = a D step (hinge + LPIPS reconstruction summed over the batch on real images,
  hinge on fakes), then a G step, then the EMA update (decay 0.999);
* the small real image fed to D and the reconstruction targets are nearest resizes of the
  augmented real batch (their ``F.interpolate`` default);
* FID of the EMA generator every ``fid_every`` iterations, sampled with batch norm in training
  mode (:func:`shapebias.models.fastgan.sample_like_authors`);
* **rollback**: after ``rollback_patience`` evaluations in a row without a new best FID, G, D,
  the EMA and both optimizers return to the best evaluation's state, the iteration counter returns
  to that evaluation's iteration, and G and D get U(-eps, eps) noise (``perturb_g``,
  ``perturb_d``). The run ends when the counter reaches ``iterations``; ``steps_run`` counts the
  iterations actually trained.
"""

from __future__ import annotations

import copy
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from shapebias.models import fastgan as fg

CHECKPOINT_FILE = "checkpoint.pt"
NETS = ("G", "D", "G_ema", "opt_g", "opt_d")


def train_step(G, D, opt_g, opt_d, real: torch.Tensor, recon) -> dict[str, float]:
    """One FastGAN iteration: a D step (hinge + reconstruction on real, hinge on fake), a G step."""
    z = torch.randn(real.shape[0], G.nz, device=real.device)
    fake_big, fake_small = G(z)
    real_big = fg.diff_augment(real)
    real_small = D.small_input(real_big)
    fake_big, fake_small = fg.diff_augment(fake_big), fg.diff_augment(fake_small)

    opt_d.zero_grad(set_to_none=True)
    part = fg.random_part()
    logits_real, recs = D(real_big, real_small, part=part)
    loss_recon = sum(recon(r, t) for r, t in zip(recs, D.reconstruction_targets(real_big, part), strict=True))
    loss_real = fg.d_hinge_real(logits_real)
    (loss_real + loss_recon).backward()
    loss_fake = fg.d_hinge_fake(D(fake_big.detach(), fake_small.detach()))
    loss_fake.backward()
    opt_d.step()

    opt_g.zero_grad(set_to_none=True)
    for p in D.parameters():
        p.requires_grad_(False)
    loss_g = fg.g_loss(D(fake_big, fake_small))
    loss_g.backward()
    for p in D.parameters():
        p.requires_grad_(True)
    opt_g.step()
    return {
        "loss_d_real": loss_real.item(),
        "loss_d_fake": loss_fake.item(),
        "loss_recon": float(loss_recon),
        "loss_g": loss_g.item(),
    }


def build_models(cfg, device) -> tuple[fg.Generator, fg.Discriminator, fg.Generator]:
    G = fg.Generator(
        cfg.im_size, cfg.width, sparsity=cfg.sparsity, topk=cfg.topk, noise_injection=cfg.noise_injection
    ).to(device)
    D = fg.Discriminator(cfg.im_size, cfg.width).to(device)
    return G, D, fg.ema_copy(G)


def grid_image(G_ema, z: torch.Tensor):
    """A uint8 HxWx3 grid of the EMA generator's images for ``z`` (sampled as for FID)."""
    import math

    import torchvision

    imgs = fg.sample_like_authors(G_ema, z).add(1).div(2).clamp(0, 1).cpu()
    grid = torchvision.utils.make_grid(imgs, nrow=int(math.sqrt(len(imgs))) or 1, padding=2)
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def fixed_latents(seed: int, device, n: int = 16) -> torch.Tensor:
    return torch.randn(n, fg.NZ, generator=torch.Generator().manual_seed(10_000 + seed)).to(device)


class Rollback:
    """The authors' backup scheduler: remember the best evaluation, return to it after
    ``patience`` evaluations without improvement, then perturb G and D."""

    def __init__(self, cfg, state: dict[str, Any]) -> None:
        self.patience, self.eps_g, self.eps_d = cfg.rollback_patience, cfg.perturb_g, cfg.perturb_d
        self.state = state
        state.setdefault("bad_evals", 0)
        state.setdefault("rollbacks", 0)

    def after_evaluation(self, step: int, value: float, nets: dict[str, Any]) -> int | None:
        """Record an evaluation; returns the iteration rolled back to, or None."""
        if self.patience <= 0:
            return None
        best = self.state.get("best")
        if best is None or value < best["fid"]:
            self.state["best"] = {
                "fid": value,
                "iteration": step,
                **{k: copy.deepcopy(v.state_dict()) for k, v in nets.items()},
            }
            self.state["bad_evals"] = 0
            return None
        self.state["bad_evals"] += 1
        if self.state["bad_evals"] < self.patience:
            return None
        for k, v in nets.items():
            v.load_state_dict(best[k])
        if self.eps_d > 0:
            fg.perturb(nets["D"], self.eps_d)
        if self.eps_g > 0:
            fg.perturb(nets["G"], self.eps_g)
        self.state["bad_evals"] = 0
        self.state["rollbacks"] += 1
        return int(best["iteration"])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Resume from the last checkpoint, train, evaluate FID, report a checkpoint every so often."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from shapebias.data.few_shot import FewShotImages
    from shapebias.tracking import MetricLogger
    from training.train_fastgan import Config

    cfg = Config(**config["cfg"])
    rank = ray.train.get_context().get_world_rank()
    logger = MetricLogger(config["run_ref"]) if rank == 0 and config.get("run_ref") else None
    torch.set_num_threads(int(config.get("threads", 1)))
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    data = FewShotImages(cfg.data_dir, cfg.im_size)
    G, D, G_ema = build_models(cfg, device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    nets = {"G": G, "D": D, "G_ema": G_ema, "opt_g": opt_g, "opt_d": opt_d}
    recon = fg.reconstruction_loss(cfg.recon_loss, device)
    sampler_rng = torch.Generator().manual_seed(cfg.seed)
    state: dict[str, Any] = {"iteration": 0, "steps_run": 0, "fid_history": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        for k, v in nets.items():
            v.load_state_dict(state[k])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        sampler_rng.set_state(state["rng"]["sampler"])
        if rank == 0:
            print(f"resuming from the checkpoint of iteration {state['iteration']}", file=sys.stderr)
            if logger:
                logger.client.set_tag(logger.ref.run_id, "shapebias.resumed_from_iteration", str(state["iteration"]))
    rollback = Rollback(cfg, state)

    evaluator = None
    if cfg.fid_interval() > 0 and rank == 0:
        from shapebias.metrics.fid import FidEvaluator, resolve_weights

        evaluator = FidEvaluator(
            data.files,
            cfg.im_size,
            resolve_weights(cfg.fid_weights or None),
            cfg.fid_protocol,
            device=device,
            n_samples=cfg.fid_samples or None,
            sample_batch=cfg.batch_size,
            dims=cfg.fid_dims,
        )

    def sample(n: int) -> torch.Tensor:
        return fg.sample_like_authors(G_ema, torch.randn(n, fg.NZ, device=device))

    z_grid = fixed_latents(cfg.seed, device)
    every_log = max(1, min(100, cfg.iterations // 100))
    fid_key = config.get("fid_key", "fid")

    def save_and_report(step: int, metrics: dict[str, float]) -> None:
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        state.update(
            iteration=step,
            config=config["cfg"],
            **{k: v.state_dict() for k, v in nets.items()},
            rng={"torch": torch.get_rng_state(), "python": random.getstate(), "sampler": sampler_rng.get_state()},
        )
        if logger:
            logger.client.log_image(logger.ref.run_id, grid_image(G_ema, z_grid), f"samples/iter_{step:06d}.png")
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / CHECKPOINT_FILE)
            ray.train.report({"iteration": step, **metrics}, checkpoint=Checkpoint.from_directory(d))

    step = int(state["iteration"])
    if step >= cfg.iterations:
        save_and_report(step, {})
        return
    G.train(), D.train()
    t0, done = time.time(), 0
    bar = tqdm(total=cfg.iterations, initial=step, desc="fastgan", disable=rank != 0, mininterval=2.0, file=sys.stderr)
    while step < cfg.iterations:
        real = data.sample(cfg.batch_size, sampler_rng).to(device)
        losses = train_step(G, D, opt_g, opt_d, real, recon)
        fg.ema_update(G_ema, G, cfg.ema_decay)
        step, done = step + 1, done + 1
        state["steps_run"] = int(state.get("steps_run", 0)) + 1
        bar.update(1)
        metrics: dict[str, float] = {}
        if step % every_log == 0 or step == cfg.iterations:
            metrics.update(losses, iterations_per_s=done / (time.time() - t0))
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
        if evaluator is not None and (step % cfg.fid_interval() == 0 or step == cfg.iterations):
            value = evaluator(sample)
            state["fid_history"].append((step, value, fid_key))
            metrics[fid_key] = value
            print(f"iteration {step}: {fid_key}={value:.3f} (of {evaluator.last_scores})", file=sys.stderr)
            back_to = rollback.after_evaluation(step, value, nets)
            if back_to is not None:
                metrics["rollback_to"] = float(back_to)
                print(
                    f"iteration {step}: no better FID in {cfg.rollback_patience} evaluations; "
                    f"rolled back to iteration {back_to}",
                    file=sys.stderr,
                )
        if logger and metrics:
            logger.log(metrics, step=step)
        if "rollback_to" in metrics:
            step = int(metrics["rollback_to"])
            bar.n = step
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations or fid_key in metrics:
            save_and_report(step, {k: v for k, v in metrics.items() if k == fid_key})
    bar.close()
    if evaluator is not None:
        evaluator.close()
