"""Train FastGAN with Top-K sparsity on a few-shot folder, scored by FID (seed Table 2).

    mlflow run . -e train_fastgan --env-manager local -P data_dir=../shared/data/few-shot/jeep \
        -P im_size=64 -P iterations=20 -P batch_size=4 -P recon_loss=l1 -P fid_every=0
    python -m training.train_fastgan --data-dir ../shared/data/few-shot/jeep --im-size 64 ...

The driver creates (or resumes) the MLflow run, checks the input (folder, size, weights) and
starts a one-worker Ray Train ``TorchTrainer`` named after the MLflow run id: starting the job
again with the same run (``--run-id`` or ``MLFLOW_RUN_ID``) continues from the last checkpoint.
Rank 0 logs the losses (``loss_d_real``, ``loss_d_fake``, ``loss_recon``, ``loss_g``), the FID
curve (``fid``, step = iteration) and sample grids (``samples/iter_XXXXXX.png``) of the EMA
generator. At the end the driver logs the best FID again as the last point of ``fid`` (step =
iterations + 1, so the run's ``fid`` value is the best), ``fid_best_iteration``, ``fid_last``,
a final grid and the EMA generator (``model/generator_ema.pt``).

A score computed with Inception weights whose hash is not the official one, or with a feature
size other than 2048 (``--fid-dims``, for cheap checks), is logged as ``fid_unverified`` (tag
``shapebias.weights=unverified``, run name ending ``-unverified-fid``), never as ``fid``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from shapebias.errors import ConfigError, ShapebiasError, check_choice, check_fraction
from shapebias.models import fastgan as fg
from training.cliargs import number as _number, unquote as _unquote

TASK = "train_fastgan"
CHECKPOINT_FILE = "checkpoint.pt"
GRID_SAMPLES = 16
AUGMENT = "color,translation"


@dataclasses.dataclass
class Config:
    """The whole configuration of a run (logged flat as MLflow params, plus ``dataset``)."""

    data_dir: str = ""
    im_size: int = 256
    iterations: int = 50000
    batch_size: int = 8
    sparsity: str = "topk"
    topk: float = 0.05
    noise_injection: bool = False
    recon_loss: str = "lpips"
    fid_every: int = 5000
    fid_weights: str = ""
    fid_protocol: str = "standard"
    fid_samples: int = 0  # 0: the protocol's sample count
    fid_dims: int = 2048  # pytorch-fid feature size; only 2048 is FID (others: fid_unverified)
    seed: int = 0
    width: int = 64  # ngf = ndf (paper: 64)
    lr: float = 0.0002
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    storage_path: str = ""

    @property
    def dataset(self) -> str:
        return Path(self.data_dir.rstrip("/")).name if self.data_dir.strip() else ""

    def validate(self) -> Config:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{f.name}={value!r} is not a number")
        self.im_size = fg.check_im_size(self.im_size)
        check_choice("sparsity", self.sparsity, fg.SPARSITY)
        self.topk = check_fraction("topk", self.topk)
        check_choice("recon_loss", self.recon_loss, fg.RECON_LOSSES)
        from shapebias.metrics.fid import PROTOCOLS

        check_choice("fid_protocol", self.fid_protocol, tuple(PROTOCOLS))
        for name in ("iterations", "batch_size", "width", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not accepted; expected a positive integer")
        for name in ("fid_every", "fid_samples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not accepted; expected 0 (off/default) or a positive integer")
        from shapebias.metrics.fid import check_dims

        check_dims(self.fid_dims)
        if self.fid_samples == 1:
            raise ConfigError("fid_samples=1 is not accepted; FID needs at least 2 samples")
        if not self.lr > 0 or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"lr={self.lr!r} / ema_decay={self.ema_decay!r}: expected lr > 0 and 0 <= ema_decay < 1")
        return self

    def params(self) -> dict[str, Any]:
        p = dataclasses.asdict(self)
        p["noise_injection"] = "true" if self.noise_injection else "false"
        p["dataset"] = self.dataset
        p["nz"] = fg.NZ
        p["augment"] = AUGMENT
        return p

    def run_name(self) -> str:
        sparsity = "dense" if self.sparsity == "none" else f"{self.sparsity}{self.topk:g}"
        noise = "-noise" if self.noise_injection else ""
        return f"fastgan{self.im_size}-{self.dataset or 'nodata'}-{sparsity}{noise}-s{self.seed}"


def parse_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={value!r} is not accepted; choose true or false")


# ------------------------------------------------------------------------------ training step


def train_step(G, D, opt_g, opt_d, real: torch.Tensor, recon) -> dict[str, float]:
    """One FastGAN iteration: a D step (hinge + reconstruction on real, hinge on fake), a G step."""
    s = D.small_size
    z = torch.randn(real.shape[0], G.nz, device=real.device)
    fake_big, fake_small = G(z)
    real_big = fg.diff_augment(real, AUGMENT)
    real_small = F.interpolate(real_big, size=(s, s), mode="bilinear", align_corners=False)
    fake_big, fake_small = fg.diff_augment(fake_big, AUGMENT), fg.diff_augment(fake_small, AUGMENT)

    opt_d.zero_grad(set_to_none=True)
    part = fg.random_part()
    logits_real, recs = D(real_big, real_small, part=part)
    targets = D.reconstruction_targets(real_big, real_small, part)
    loss_recon = sum(recon(r, t) for r, t in zip(recs, targets))
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
    return {"loss_d_real": loss_real.item(), "loss_d_fake": loss_fake.item(), "loss_recon": float(loss_recon.detach()) if torch.is_tensor(loss_recon) else float(loss_recon), "loss_g": loss_g.item()}


def build_models(cfg: Config, device) -> tuple[fg.Generator, fg.Discriminator, fg.Generator]:
    G = fg.Generator(cfg.im_size, cfg.width, sparsity=cfg.sparsity, topk=cfg.topk, noise_injection=cfg.noise_injection).to(device)
    D = fg.Discriminator(cfg.im_size, cfg.width).to(device)
    return G, D, fg.ema_copy(G)


def grid_image(G_ema, z: torch.Tensor):
    """A uint8 HxWx3 grid of the EMA generator's images for ``z``."""
    import torchvision

    with torch.no_grad():
        imgs = G_ema(z)[0].add(1).div(2).clamp(0, 1).cpu()
    grid = torchvision.utils.make_grid(imgs, nrow=int(math.sqrt(len(imgs))) or 1, padding=2)
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def fixed_latents(cfg: Config, device) -> torch.Tensor:
    return torch.randn(GRID_SAMPLES, fg.NZ, generator=torch.Generator().manual_seed(10_000 + cfg.seed)).to(device)


# ---------------------------------------------------------------------------------- Ray worker


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Resume from the last checkpoint, train, evaluate FID, report a checkpoint every so often."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from shapebias.data.few_shot import FewShotImages
    from shapebias.tracking import MetricLogger

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
    recon = fg.reconstruction_loss(cfg.recon_loss, device)
    sampler_rng = torch.Generator().manual_seed(cfg.seed)
    state: dict[str, Any] = {"iteration": 0, "fid_history": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        sampler_rng.set_state(state["rng"]["sampler"])
        if rank == 0:
            print(f"resuming from the checkpoint of iteration {state['iteration']}", file=sys.stderr)
            if logger:
                logger.client.set_tag(logger.ref.run_id, "shapebias.resumed_from_iteration", str(state["iteration"]))
    start = int(state["iteration"])

    evaluator = None
    if cfg.fid_every > 0 and rank == 0:
        from shapebias.metrics.fid import FidEvaluator, resolve_weights

        evaluator = FidEvaluator(
            data.files, cfg.im_size, resolve_weights(cfg.fid_weights or None), cfg.fid_protocol, device=device,
            n_samples=cfg.fid_samples or None, dims=cfg.fid_dims,
        )

    def sample(n: int) -> torch.Tensor:
        with torch.no_grad():
            return G_ema(torch.randn(n, fg.NZ, device=device))[0]

    z_grid = fixed_latents(cfg, device)
    every_log = max(1, min(100, cfg.iterations // 100))
    fid_key = config.get("fid_key", "fid")

    def save_and_report(step: int, metrics: dict[str, float]) -> None:
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        state.update(
            iteration=step, G=G.state_dict(), D=D.state_dict(), G_ema=G_ema.state_dict(),
            opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), config=config["cfg"],
            rng={"torch": torch.get_rng_state(), "python": random.getstate(), "sampler": sampler_rng.get_state()},
        )
        if logger:
            logger.client.log_image(logger.ref.run_id, grid_image(G_ema, z_grid), f"samples/iter_{step:06d}.png")
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / CHECKPOINT_FILE)
            ray.train.report({"iteration": step, **metrics}, checkpoint=Checkpoint.from_directory(d))

    if start >= cfg.iterations:
        save_and_report(start, {})
        return
    G.train(), D.train()
    t0, done = time.time(), 0
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="fastgan", disable=rank != 0,
               mininterval=2.0, file=sys.stderr)
    for it in bar:
        real = data.sample(cfg.batch_size, sampler_rng).to(device)
        losses = train_step(G, D, opt_g, opt_d, real, recon)
        fg.ema_update(G_ema, G, cfg.ema_decay)
        step, done = it + 1, done + 1
        metrics: dict[str, float] = {}
        if step % every_log == 0 or step == cfg.iterations:
            metrics.update(losses, iterations_per_s=done / (time.time() - t0))
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
        if evaluator is not None and (step % cfg.fid_every == 0 or step == cfg.iterations):
            value = evaluator(sample)
            state["fid_history"].append((step, value, fid_key))
            metrics[fid_key] = value
            print(f"iteration {step}: {fid_key}={value:.3f}", file=sys.stderr)
        if logger and metrics:
            logger.log(metrics, step=step)
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations or fid_key in metrics:
            save_and_report(step, {k: v for k, v in metrics.items() if k == fid_key})
    if evaluator is not None:
        evaluator.close()


# --------------------------------------------------------------------------------------- driver


def _user_error(exc: BaseException) -> ShapebiasError | None:
    """The user-input error behind a Ray Train failure, if any (re-raised as a one-line error)."""
    from shapebias.errors import ConfigError, DataError, WeightsError

    kinds = {c.__name__: c for c in (ConfigError, DataError, WeightsError, ShapebiasError)}
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ShapebiasError):
            return e
        found = re.findall(r"(ConfigError|DataError|WeightsError|ShapebiasError): (.+)", str(e))
        if found:
            return kinds[found[-1][0]](found[-1][1].strip())
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__, getattr(e, "controller_failure", None)]
        todo += list(getattr(e, "worker_failures", {}).values())
    return None


def check_inputs(cfg: Config) -> dict[str, str]:
    """Validate everything a run needs before Ray starts; returns the tags to set."""
    from shapebias import tracking
    from shapebias.data.few_shot import list_images

    cfg.validate()
    files = list_images(cfg.data_dir)
    tags = {"shapebias.data_fingerprint": tracking.fingerprint_files(files, extra=cfg.dataset),
            "shapebias.num_images": str(len(files)), "shapebias.recon_loss": cfg.recon_loss}
    fg.check_recon_loss(cfg.recon_loss)
    if cfg.fid_every > 0:
        from shapebias.metrics.fid import load_inception, resolve_weights, weights_verified

        weights = resolve_weights(cfg.fid_weights or None)
        load_inception(weights, dims=cfg.fid_dims)  # a wrong file fails here, not after hours of training
        verified = weights_verified(weights) and cfg.fid_dims == 2048
        tags["shapebias.fid_weights"] = "official" if verified else "unverified"
        tags[tracking.WEIGHTS_TAG] = "pretrained" if verified else "unverified"
    else:
        tags["shapebias.fid_weights"] = "none"
    return tags


def run(cfg: Config, run_id: str | None = None) -> str:
    """Run (or resume) one FastGAN job; returns the MLflow run id."""
    import mlflow

    from shapebias import tracking
    from training.raytools import init_ray, make_trainer, storage_location
    from shapebias.metrics.fid import get_protocol

    params = cfg.params()
    try:
        params.update(get_protocol(cfg.fid_protocol).params())
    except ShapebiasError:
        pass  # reported by validate() inside the run
    new_run = run_id is None and not os.environ.get("MLFLOW_RUN_ID")
    with tracking.tracked_run(TASK, params, run_id=run_id, run_name=cfg.run_name() if new_run else None) as active:
        run_id = active.info.run_id
        tags = check_inputs(cfg)
        fid_key = "fid" if tags.get("shapebias.fid_weights") in ("official", "none") else "fid_unverified"
        if fid_key != "fid":
            tags["mlflow.runName"] = cfg.run_name() + "-unverified-fid"
            print("warning: the Inception weights are not the official file (or fid_dims != 2048); the score is logged as fid_unverified", file=sys.stderr)
        mlflow.set_tags(tags)

        env_vars = tracking.worker_env()
        init_ray(env_vars)
        storage = storage_location(cfg.storage_path)
        trainer, device = make_trainer(
            train_loop_per_worker,
            {"cfg": dataclasses.asdict(cfg), "run_ref": tracking.current_ref(), "fid_key": fid_key},
            run_id=run_id, storage_path=storage, num_workers=1, env_vars=env_vars,
        )
        mlflow.set_tag("shapebias.device", device)
        try:
            result = trainer.fit()
        except Exception as exc:
            user = _user_error(exc)
            if user is not None:
                raise type(user)(str(user).strip().splitlines()[-1]) from None
            raise
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train returned no checkpoint for run {run_id}")
        with result.checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        summary = log_final(cfg, state, fid_key)
        mlflow.set_tag("shapebias.checkpoint_dir", f"{storage}/{run_id}")
    print(f"\nrun {run_id} finished ({cfg.run_name()}), {state['iteration']} iterations")
    for key, value in summary.items():
        print(f"  {key:<20} {value:.4g}")
    print(f"  checkpoints          {storage}/{run_id}")
    print(f"  open the UI:         {tracking.ui_command()}")
    return run_id


def log_final(cfg: Config, state: dict[str, Any], fid_key: str) -> dict[str, float]:
    """Best FID (as the last point of the curve), a final grid and the EMA generator."""
    import mlflow

    summary: dict[str, float] = {}
    # Each evaluation keeps the key it was logged under: a run resumed with other FID settings
    # never promotes an unverified score to `fid`.
    for key in dict.fromkeys(k for _, _, k in state.get("fid_history") or []):
        history = [(s, v) for s, v, k in state["fid_history"] if k == key]
        best_step, best = min(history, key=lambda t: t[1])
        part = {key: best, f"{key}_best_iteration": float(best_step), f"{key}_last": history[-1][1]}
        mlflow.log_metric(key, best, step=int(state["iteration"]) + 1)
        mlflow.log_metrics({k: v for k, v in part.items() if k != key}, step=int(state["iteration"]))
        summary.update(part)
    G_ema = fg.Generator(cfg.im_size, cfg.width, sparsity=cfg.sparsity, topk=cfg.topk, noise_injection=cfg.noise_injection)
    G_ema.load_state_dict(state["G_ema"])
    G_ema.eval()
    mlflow.log_image(grid_image(G_ema, fixed_latents(cfg, "cpu")), "samples/final.png")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "generator_ema.pt"
        torch.save({"state_dict": state["G_ema"], "config": dataclasses.asdict(cfg), "iteration": state["iteration"],
                    "architecture": "shapebias.models.fastgan.Generator"}, path)
        mlflow.log_artifact(str(path), "model")
    return summary


# ------------------------------------------------------------------------------------------ CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_fastgan", description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--data-dir", default=d.data_dir, help="a flat folder of images (e.g. a 100-image set)")
    p.add_argument("--im-size", type=_number(int), default=d.im_size, help="64 | 128 | 256 | 512 | 1024")
    p.add_argument("--iterations", type=_number(int), default=d.iterations)
    p.add_argument("--batch-size", type=_number(int), default=d.batch_size)
    p.add_argument("--sparsity", default=d.sparsity, help="none | topk | topk_mean (after the 32x32 feature map)")
    p.add_argument("--topk", type=_number(float), default=d.topk, help="fraction kept, (0, 1]; paper: 0.05 (0.15 table)")
    p.add_argument("--noise-injection", default="false", help="true | false")
    p.add_argument("--recon-loss", default=d.recon_loss, help="lpips (paper; needs VGG-16 weights) | l1 (substitute)")
    p.add_argument("--fid-every", type=_number(int), default=d.fid_every, help="iterations between FIDs; 0 = no FID")
    p.add_argument("--fid-weights", default=d.fid_weights, help="pytorch-fid Inception weights file (default: hub cache)")
    p.add_argument("--fid-protocol", default=d.fid_protocol, help="standard | authors")
    p.add_argument("--fid-samples", type=_number(int), default=d.fid_samples, help="0 = the protocol's count")
    p.add_argument("--fid-dims", type=_number(int), default=d.fid_dims, help="2048 (FID) | 768 | 192 | 64 (checks only)")
    p.add_argument("--seed", type=_number(int), default=d.seed)
    p.add_argument("--width", type=_number(int), default=d.width, help="channel width ngf = ndf (paper: 64)")
    p.add_argument("--lr", type=_number(float), default=d.lr)
    p.add_argument("--checkpoint-every", type=_number(int), default=d.checkpoint_every)
    p.add_argument("--storage-path", default=d.storage_path, help="Ray Train checkpoints (default ./.ray_results)")
    p.add_argument("--run-id", default=None, help="resume this MLflow run (default: the active run, or a new one)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    values = {k: _unquote(v) if isinstance(v, str) else v for k, v in vars(args).items()}
    cfg = Config(**{f.name: values[f.name] for f in dataclasses.fields(Config) if f.name in values})
    cfg.noise_injection = parse_bool("noise_injection", args.noise_injection)
    return cfg


def _main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ShapebiasError:
        cfg = None
    if cfg is None:  # a bad flag still gets a FAILED run that shows what was given
        from shapebias import tracking

        with tracking.tracked_run(TASK, {k: v for k, v in vars(args).items() if k != "run_id"}):
            config_from_args(args)
        return 2
    run(cfg, run_id=args.run_id or None)
    return 0


from shapebias.tracking import cli_main  # noqa: E402

main = cli_main(_main)

if __name__ == "__main__":
    sys.exit(main())
