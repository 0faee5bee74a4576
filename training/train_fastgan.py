"""Train FastGAN with Top-K sparsity on a few-shot folder, scored by FID (Table 2).

    mlflow run . -e train_fastgan --env-manager local -P data_dir=../shared/data/few-shot/jeep \
        -P im_size=64 -P iterations=20 -P batch_size=4 -P recon_loss=l1 -P fid_every=0
    python -m training.train_fastgan --data-dir ../shared/data/few-shot/jeep --im-size 64 ...

Defaults follow the authors' run scripts (``TopKGen/scripts/<dataset>/run.sh``): 256 px, batch 8,
100,000 iterations, Top-K 5 % after the 32x32 map (15 % for ``table``), no noise, rollback after
10 evaluations without a better FID with G perturbed by 1e-4. The FID protocol defaults to
``standard`` (pytorch-fid's pipeline); ``--fid-protocol authors`` is the authors' evaluator
(:mod:`shapebias.metrics.fid_authors`). See ``docs/fastgan.md``.

The driver creates (or resumes) the MLflow run, checks the input (folder, size, weights) and
starts a one-worker Ray Train ``TorchTrainer`` (:mod:`training.fastgan_worker`) named after the
MLflow run id: starting the job again with the same run (``--run-id`` or ``MLFLOW_RUN_ID``)
continues from the last checkpoint. Rank 0 logs the losses (``loss_d_real``, ``loss_d_fake``,
``loss_recon``, ``loss_g``), the FID curve (``fid``, step = iteration), rollbacks
(``rollback_to``) and sample grids (``samples/iter_XXXXXX.png``) of the EMA generator. At the end
the driver logs the best FID again as the last point of ``fid`` (step = iterations + 1, so the
run's ``fid`` value is the best), ``fid_best_iteration``, ``fid_last``, ``steps_run``,
``rollbacks``, a final grid and the EMA generator (``model/generator_ema.pt``).

A score computed with Inception weights whose hash is not the official one, or with a feature
size other than 2048 (``--fid-dims``, for cheap checks), is logged as ``fid_unverified`` (tag
``shapebias.weights=unverified``, run name ending ``-unverified-fid``), never as ``fid``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from shapebias import protocols
from shapebias.errors import ConfigError, ShapebiasError, check_choice, check_fraction, check_limits
from shapebias.metrics.fid_spec import PROTOCOLS, get_protocol
from shapebias.models import fastgan_spec
from training.cliargs import check_numbers, parser_from_config, resolve_config, setting

TASK = "train_fastgan"
PROTOCOL_NAMES = tuple(PROTOCOLS)


@dataclasses.dataclass
class Config:
    """The whole configuration of a run (logged flat as MLflow params)."""

    protocol: str = setting(
        "", "a published experiment to repeat (`shapebias protocols` lists them): sets every setting below"
    )
    data_dir: str = setting("", "a flat folder of images (e.g. a 100-image set)")
    dataset: str = setting("", "the few-shot set's name (empty: the folder name of data_dir)")
    im_size: int = setting(256, "image size", fastgan_spec.SUPPORTED_SIZES)
    iterations: int = setting(100000, "training iterations (authors: 100000)")
    batch_size: int = setting(8, "images per step")
    sparsity: str = setting(
        "topk", "sparsity after the 32x32 feature map (topk: the authors' TopKMaskHW)", fastgan_spec.SPARSITY
    )
    topk: float = setting(0.05, "fraction kept, (0, 1]; authors: 0.05 (0.15 for table)")
    noise_injection: bool = setting(False, "the generator's noise injection")
    recon_loss: str = setting(
        "lpips",
        "reconstruction loss: lpips (authors; needs VGG-16 weights) or l1 (substitute)",
        fastgan_spec.RECON_LOSSES,
    )
    fid_every: int = setting(
        -1, "iterations between FIDs; -1 = the FID protocol's (standard 5000, authors 1000); 0 = no FID"
    )
    fid_weights: str = setting("", "pytorch-fid Inception weights file (empty: hub cache)")
    fid_protocol: str = setting("standard", "how FID is computed", tuple(PROTOCOLS))
    fid_samples: int = setting(0, "generated images per FID; 0 = the FID protocol's count")
    fid_dims: int = setting(
        2048, "pytorch-fid feature size; only 2048 is FID (others: fid_unverified)", (2048, 768, 192, 64)
    )
    seed: int = setting(0, "random seed")
    width: int = setting(64, "channel width ngf = ndf (authors: 64)")
    lr: float = setting(0.0002, "Adam learning rate")
    ema_decay: float = setting(0.999, "decay of the generator's moving average")
    rollback_patience: int = setting(
        10, "evaluations without a better FID before rolling back to the best (authors: 10); 0 = never"
    )
    perturb_g: float = setting(1e-4, "U(-eps, eps) noise on G's parameters after a rollback (authors: 1e-4)")
    perturb_d: float = setting(0.0, "the same for D (authors: 0)")
    checkpoint_every: int = setting(1000, "iterations between checkpoints")
    storage_path: str = setting("", "Ray Train checkpoints; empty: ./.ray_results")

    def set_name(self) -> str:
        """The few-shot set's name: ``dataset``, else the folder name of ``data_dir``."""
        if str(self.dataset).strip():
            return str(self.dataset).strip()
        return Path(self.data_dir.rstrip("/")).name if self.data_dir.strip() else ""

    def fid_interval(self) -> int:
        """Iterations between FID evaluations (0: none)."""
        if self.fid_every >= 0:
            return self.fid_every
        return get_protocol(self.fid_protocol).every

    def validate(self) -> Config:
        check_limits(self)  # numbers, finite, within shapebias.errors.INT_LIMITS
        check_numbers(self)
        if self.protocol:
            protocols.get(self.protocol, TASK)
        self.im_size = fastgan_spec.check_im_size(self.im_size)
        check_choice("sparsity", self.sparsity, fastgan_spec.SPARSITY)
        self.topk = check_fraction("topk", self.topk)
        check_choice("recon_loss", self.recon_loss, fastgan_spec.RECON_LOSSES)
        check_choice("fid_protocol", self.fid_protocol, tuple(PROTOCOLS))
        for name in ("iterations", "batch_size", "width", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not accepted; expected a positive integer")
        if self.fid_every < -1:
            raise ConfigError(
                f"fid_every={self.fid_every!r} is not accepted; "
                "expected -1 (the protocol's), 0 (off) or a positive integer"
            )
        for name in ("fid_samples", "rollback_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is not accepted; expected 0 (off/default) or a positive integer"
                )
        if self.perturb_g < 0 or self.perturb_d < 0:
            raise ConfigError(f"perturb_g={self.perturb_g!r} / perturb_d={self.perturb_d!r}: expected >= 0")
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
        p["dataset"] = self.set_name()
        p["nz"] = fastgan_spec.NZ
        p["augment"] = fastgan_spec.AUGMENT
        if self.fid_protocol in PROTOCOL_NAMES:  # what runs: the protocol's interval and count unless set
            p["fid_every"] = self.fid_interval()
            p["fid_samples"] = self.fid_samples or PROTOCOLS[self.fid_protocol].n_samples
        p["recon_reduction"] = "sum"
        p["fid_sampling"] = "batchnorm-train"
        return p

    def run_name(self) -> str:
        sparsity = "dense" if self.sparsity == "none" else f"{self.sparsity}{self.topk:g}"
        noise = "-noise" if self.noise_injection else ""
        return f"fastgan{self.im_size}-{self.set_name() or 'nodata'}-{sparsity}{noise}-s{self.seed}"


def parse_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={value!r} is not accepted; choose true or false")


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
    from shapebias.models import fastgan as fg

    cfg.validate()
    files = list_images(cfg.data_dir)
    tags = {
        "shapebias.data_fingerprint": tracking.fingerprint_files(files, extra=cfg.set_name()),
        "shapebias.num_images": str(len(files)),
        "shapebias.recon_loss": cfg.recon_loss,
    }
    fg.check_recon_loss(cfg.recon_loss)
    if cfg.fid_interval() > 0:
        from shapebias.metrics.fid import load_inception, resolve_weights, weights_verified

        weights = resolve_weights(cfg.fid_weights or None)
        load_inception(weights, dims=cfg.fid_dims)  # a wrong file fails here, not after hours of training
        verified = weights_verified(weights) and cfg.fid_dims == 2048
        tags["shapebias.fid_weights"] = "official" if verified else "unverified"
        tags[tracking.WEIGHTS_TAG] = "pretrained" if verified else "unverified"
    else:
        tags["shapebias.fid_weights"] = "none"
    return tags


def log_inputs(cfg: Config, fingerprint: str, claim: Any) -> None:
    """The run's description and its training images as its dataset input (one row per file)."""
    import pandas as pd

    from shapebias import tracking
    from shapebias.data.few_shot import list_images

    files = list_images(cfg.data_dir)
    sparsity = "dense (no Top-K)" if cfg.sparsity == "none" else f"{cfg.sparsity} k={cfg.topk:g} after 32x32"
    fid = f"FID ({cfg.fid_protocol} protocol) every {cfg.fid_interval()} iterations" if cfg.fid_interval() else "no FID"
    protocol = claim.describe() if claim.on_protocol else f"off-protocol: {claim.describe()}"
    tracking.describe_run(
        f"FastGAN at {cfg.im_size} px, {sparsity}, noise injection {'on' if cfg.noise_injection else 'off'}, "
        f"trained {cfg.iterations} iterations (batch {cfg.batch_size}, width {cfg.width}, seed {cfg.seed}) on the "
        f"{len(files)} images of {cfg.set_name()} ({cfg.data_dir}); {fid}. {protocol}."
    )
    frame = pd.DataFrame({"file": [f.name for f in files]})
    tracking.log_dataset(frame, name=cfg.set_name(), digest=fingerprint, context="training", source=cfg.data_dir)


def run(cfg: Config, run_id: str | None = None) -> str:
    """Run (or resume) one FastGAN job; returns the MLflow run id."""
    import mlflow
    import torch

    from shapebias import tracking
    from training import fastgan_worker
    from training.raytools import init_ray, make_trainer, storage_location

    params = cfg.params()
    try:
        params.update(get_protocol(cfg.fid_protocol).params())
    except ShapebiasError:
        pass  # reported by validate() inside the run
    new_run = run_id is None and not os.environ.get("MLFLOW_RUN_ID")
    with tracking.tracked_run(TASK, params, run_id=run_id, run_name=cfg.run_name() if new_run else None) as active:
        run_id = active.info.run_id
        claim = protocols.check(TASK, cfg.protocol, cfg.params())
        mlflow.set_tags(protocols.run_tags(claim))
        print(claim.describe(), file=sys.stderr)
        tags = check_inputs(cfg)
        fid_key = "fid" if tags.get("shapebias.fid_weights") in ("official", "none") else "fid_unverified"
        if fid_key != "fid":
            tags["mlflow.runName"] = cfg.run_name() + "-unverified-fid"
            print(
                "warning: the Inception weights are not the official file (or fid_dims != 2048); "
                "the score is logged as fid_unverified",
                file=sys.stderr,
            )
        mlflow.set_tags(tags)
        log_inputs(cfg, tags["shapebias.data_fingerprint"], claim)

        env_vars = tracking.worker_env()
        init_ray(env_vars)
        storage = storage_location(cfg.storage_path)
        trainer, device = make_trainer(
            fastgan_worker.train_loop_per_worker,
            {"cfg": dataclasses.asdict(cfg), "run_ref": tracking.current_ref(), "fid_key": fid_key},
            run_id=run_id,
            storage_path=storage,
            num_workers=1,
            env_vars=env_vars,
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
            state = torch.load(Path(d) / fastgan_worker.CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        summary = log_final(cfg, state, fid_key)
        mlflow.set_tag("shapebias.checkpoint_dir", f"{storage}/{run_id}")
    print(f"\nrun {run_id} finished ({cfg.run_name()}), {state['iteration']} iterations; {claim.describe()}")
    for key, value in summary.items():
        print(f"  {key:<20} {value:.4g}")
    print(f"  checkpoints          {storage}/{run_id}")
    print(f"  open the UI:         {tracking.ui_command()}")
    return run_id


def log_final(cfg: Config, state: dict[str, Any], fid_key: str) -> dict[str, float]:
    """Best FID (as the last point of the curve), a final grid and the EMA generator."""
    import mlflow
    import torch

    from shapebias.models import fastgan as fg
    from training.fastgan_worker import fixed_latents, grid_image

    summary: dict[str, float] = {
        "steps_run": float(state.get("steps_run", state["iteration"])),
        "rollbacks": float(state.get("rollbacks", 0)),
    }
    mlflow.log_metrics(summary, step=int(state["iteration"]))
    # Each evaluation keeps the key it was logged under: a run resumed with other FID settings
    # never promotes an unverified score to `fid`.
    for key in dict.fromkeys(k for _, _, k in state.get("fid_history") or []):
        history = [(s, v) for s, v, k in state["fid_history"] if k == key]
        best_step, best = min(history, key=lambda t: t[1])
        part = {key: best, f"{key}_best_iteration": float(best_step), f"{key}_last": history[-1][1]}
        mlflow.log_metric(key, best, step=int(state["iteration"]) + 1)
        mlflow.log_metrics({k: v for k, v in part.items() if k != key}, step=int(state["iteration"]))
        summary.update(part)
    G_ema = fg.Generator(
        cfg.im_size, cfg.width, sparsity=cfg.sparsity, topk=cfg.topk, noise_injection=cfg.noise_injection
    )
    G_ema.load_state_dict(state["G_ema"])
    G_ema.eval()
    mlflow.log_image(grid_image(G_ema, fixed_latents(cfg.seed, "cpu")), "samples/final.png")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "generator_ema.pt"
        torch.save(
            {
                "state_dict": state["G_ema"],
                "config": dataclasses.asdict(cfg),
                "iteration": state["iteration"],
                "architecture": "shapebias.models.fastgan.Generator",
                "sampling": "shapebias.models.fastgan.sample_like_authors (batch norm in training mode)",
            },
            path,
        )
        mlflow.log_artifact(str(path), "model")
    return summary


# ------------------------------------------------------------------------------------------ CLI


PROTOCOL_SET = {k for p in protocols.for_task(TASK) for k in p.settings}  # settings some protocol sets


def parser() -> argparse.ArgumentParser:
    """Flags of the Config fields; a flag not given (or given empty) takes the protocol's value, else the default."""
    p = parser_from_config(
        Config,
        "shapebias train-fastgan",
        __doc__.split("\n\n")[0],
        suppress=True,
        default_note=lambda name: ", or the protocol's" if name in PROTOCOL_SET else "",
    )
    p.add_argument("--run-id", default=None, help="resume this MLflow run (default: the active run, or a new one)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Config defaults, then the protocol's settings, then the flags given (an explicit flag wins: off-protocol).

    An unknown protocol is left for :meth:`Config.validate` to report inside the run.
    """
    values = resolve_config(Config, TASK, args)
    values["noise_injection"] = parse_bool("noise_injection", values["noise_injection"])
    return Config(**values)


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
