"""Train ResNet-18 with Top-K sparsity as a Ray Train job tracked in MLflow.

    mlflow run . -e train_resnet -P sparsity=topk --experiment-name shapebias-train_resnet [--env-manager local]
    python -m training.train_resnet --sparsity topk --epochs 4
    python -m training.train_resnet --protocol table1.code.topk.IN-S1 --data-dir /data/imagenet --seed 0

``--protocol NAME`` sets every setting of a published experiment (``shapebias protocols``); a
flag that changes one makes the run off-protocol. The run is tagged with its claim, the
fingerprint of its effective settings and whether it is on the protocol (docs/protocols.md).

The driver creates (or resumes) the MLflow run, checks the input, and starts a Ray Train
``TorchTrainer`` named after the MLflow run id, so that starting the job again with the same run
(``--run-id``) continues from the last per-epoch checkpoint. Rank 0 logs per-epoch
``train_loss``, ``train_acc``, ``test_acc``, ``stylized_acc`` and (where the data set has a
cue-conflict split) ``shape_bias``, one point per epoch; the final values are the last points.
The driver logs the final model and the best epoch's accuracies (``best_test_acc``,
``best_stylized_acc`` and their 1-based epochs).

Reusable pieces: :class:`Config`, :func:`build_model`, :func:`build_data`, :func:`train_epoch`,
:func:`evaluate`, :func:`train_loop_per_worker`, :func:`run`.

Environment variables read by the driver (not logged as params):
``SHAPEBIAS_EPOCH_SLEEP`` seconds to sleep after each epoch (fault-injection tests),
``SHAPEBIAS_MAX_FAILURES`` worker failures Ray Train recovers from within one job (default
``raytools.DEFAULT_MAX_FAILURES``, 1).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shapebias import protocols
from shapebias.errors import (
    ConfigError,
    DataError,
    ShapebiasError,
    WeightsError,
    check_choice,
    check_fraction,
    check_limits,
)
from shapebias.metrics.shape_bias import shape_bias_score
from shapebias.models.resnet_spec import SPARSITY, SPECS, parse_layers
from training.cliargs import check_numbers, parser_from_config, resolve_config, setting
from training.raytools import progress as _progress
from training.timeline import mark

if TYPE_CHECKING:  # torch is imported where it is used: --help answers without it
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

TASK = "train_resnet"
CHECKPOINT_FILE = "checkpoint.pt"
# checkpoint_every=0: a checkpoint after the first and the last epoch, and after any epoch that ends
# at least this many times the last checkpoint's cost (in seconds) after it: checkpoints then take
# at most about 1 % of the training time, and a job started again repeats at most that much training.
AUTO_CHECKPOINT_RATIO = 100


# ---------------------------------------------------------------------------------- configuration


@dataclasses.dataclass
class Config:
    """The whole configuration of a run, as plain data (logged flat as MLflow params)."""

    protocol: str = setting(
        "", "a published experiment to repeat (`shapebias protocols` lists them): sets every setting below"
    )
    sparsity: str = setting("topk", "activation sparsity after the chosen stages", SPARSITY)
    topk: float = setting(0.2, "fraction of positions kept, (0, 1]")
    topk_layers: str = setting("layer2", "comma-separated stages: layer1..layer4")
    model_spec: str = setting("code", "ResNet-18 variant: the authors' code or the paper's text", tuple(SPECS))
    stem_stride: int = setting(2, "stride of the stem convolution: 1 (authors) or 2 (prior reproduction)", (1, 2))
    dataset: str = setting("synthetic", "synthetic | IN-S1 | IN-S<n> (with --class-list)")
    data_dir: str = setting("", "ImageNet root with train/ and val/")
    stylized_dir: str = setting("", "stylized test folder (one sub-folder per WNID)")
    class_list: str = setting("", "WNID list file for IN-S2, IN-S3, ...")
    epochs: int = setting(6, "training epochs")
    batch_size: int = setting(32, "samples per step of each Ray worker")
    lr: float = setting(0.05, "base learning rate (cosine schedule over the epochs)")
    seed: int = setting(0, "random seed")
    num_workers: int = setting(1, "Ray Train workers")
    synthetic_classes: int = setting(10, "classes of the synthetic data set")
    synthetic_train_per_class: int = setting(60, "synthetic training images per class")
    synthetic_test_per_class: int = setting(20, "synthetic test images per class")
    image_size: int = setting(32, "synthetic images' size")
    storage_path: str = setting("", "Ray Train checkpoints; empty: ./.ray_results")
    checkpoint_every: int = setting(
        0,
        "epochs between checkpoints, the last epoch always has one; 0: the first and the last epoch and "
        f"whenever the epochs since the last checkpoint took {AUTO_CHECKPOINT_RATIO} times as long as saving it",
    )

    def validate(self) -> Config:
        """Raise ConfigError naming the first bad value and what is accepted."""
        check_limits(self)  # numbers, finite, within shapebias.errors.INT_LIMITS
        check_numbers(self)
        if self.protocol:
            protocols.get(self.protocol, TASK)
        check_choice("sparsity", self.sparsity, SPARSITY)
        check_choice("model_spec", self.model_spec, tuple(SPECS))
        check_choice("stem_stride", self.stem_stride, (1, 2))
        self.topk = check_fraction("topk", self.topk)
        parse_layers(self.topk_layers)
        if not (self.dataset == "synthetic" or re.fullmatch(r"IN-S\d+", self.dataset)):
            raise ConfigError(
                f"dataset={self.dataset!r} is not accepted; "
                "choose one of: synthetic, IN-S1, IN-S2, ... (IN-S2+ with --class-list)"
            )
        for name in ("epochs", "batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not accepted; expected a positive integer")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} is not accepted; expected a positive learning rate")
        if self.dataset == "synthetic":
            from shapebias.data.synthetic import check_size

            check_size(self.synthetic_classes, self.synthetic_train_per_class, self.image_size)
            check_size(self.synthetic_classes, self.synthetic_test_per_class, self.image_size)
        return self

    @property
    def input_size(self) -> int:
        return self.image_size if self.dataset == "synthetic" else 224

    def run_name(self) -> str:
        sparsity = "dense" if self.sparsity == "none" else f"{self.sparsity}{self.topk:g}"
        return f"resnet18-{self.model_spec}-{sparsity}-{self.dataset}-e{self.epochs}-s{self.seed}"


# ------------------------------------------------------------------------------------ model, data


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    from shapebias.models.resnet import resnet18

    return resnet18(
        num_classes=num_classes,
        spec=cfg.model_spec,
        stem_stride=cfg.stem_stride,
        image_size=cfg.input_size,
        sparsity=cfg.sparsity,
        topk=cfg.topk,
        topk_layers=cfg.topk_layers,
    )


def build_data(cfg: Config) -> dict[str, Dataset]:
    """``train``, ``original`` (clean test), ``stylized`` and, for synthetic data, ``cue_conflict``.

    Every split has ``num_classes``; the cue-conflict split also has ``shape`` and ``texture``.
    """
    if cfg.dataset == "synthetic":
        from shapebias.data.synthetic import make_benchmark

        return make_benchmark(
            cfg.synthetic_classes, cfg.synthetic_train_per_class, cfg.synthetic_test_per_class, cfg.image_size, cfg.seed
        )
    from shapebias.data.imagenet import imagenet_subset

    return imagenet_subset(cfg.data_dir, cfg.dataset, cfg.class_list or None, cfg.stylized_dir or None)


def data_fingerprint(cfg: Config, data: dict[str, Dataset]) -> str:
    from shapebias.tracking import fingerprint_files

    if cfg.dataset == "synthetic":
        from shapebias.data.synthetic import fingerprint

        return fingerprint(data)
    files = [f for split in data.values() for f in split.files]
    return fingerprint_files(files, extra=cfg.dataset)


def _loader_workers(cfg: Config) -> int:
    return 0 if cfg.dataset == "synthetic" else min(8, max(1, (os.cpu_count() or 2) // cfg.num_workers - 1))


# --------------------------------------------------------------------------------- train, evaluate


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The learning rate of an epoch: cosine from ``base`` towards 0 over ``epochs``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: bool = True,
    desc: str = "train",
) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) over the samples seen here."""
    from torch import nn

    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in _progress(loader, desc=desc, enabled=progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def predict(
    model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 256, workers: int = 0
) -> torch.Tensor:
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    with torch.no_grad():
        return torch.cat([model(x.to(device)).argmax(1).cpu() for x, _ in loader])


def evaluate(model: nn.Module, data: dict[str, Dataset], device: torch.device, workers: int = 0) -> dict[str, float]:
    """``test_acc`` on ``original``, ``stylized_acc`` and ``shape_bias`` where those splits exist."""
    import torch

    out = {}
    for split, key in (("original", "test_acc"), ("stylized", "stylized_acc")):
        if split in data:
            pred = predict(model, data[split], device, workers=workers)
            labels = (
                torch.as_tensor([y for _, y in data[split].samples])
                if hasattr(data[split], "samples")
                else data[split].labels
            )
            out[key] = (pred == labels).float().mean().item()
    if "cue_conflict" in data:
        cc = data["cue_conflict"]
        pred = predict(model, cc, device, workers=workers)
        out["shape_bias"] = shape_bias_score(pred.tolist(), cc.shape.tolist(), cc.texture.tolist())
        out["cue_conflict_shape_acc"] = (pred == cc.shape).float().mean().item()
        out["cue_conflict_texture_acc"] = (pred == cc.texture).float().mean().item()
    return out


# ------------------------------------------------------------------------------------ Ray worker


@dataclasses.dataclass
class CheckpointSchedule:
    """Which epochs end with a checkpoint (see ``Config.checkpoint_every``).

    ``every`` > 0: every ``every``-th epoch (counted from the start of the run, so a resumed run keeps
    the schedule) and the last. ``every`` = 0: the first epoch this process trains, the last, and any
    epoch that ends :data:`AUTO_CHECKPOINT_RATIO` times the cost of the previous checkpoint after it.
    """

    every: int
    epochs: int
    since_s: float = 0.0  # training time since the last checkpoint
    cost_s: float | None = None  # seconds the last checkpoint kept the loop waiting

    def due(self, epoch_done: int, epoch_s: float) -> bool:
        """Whether the epoch that just ended (1-based ``epoch_done``, ``epoch_s`` long) ends with one."""
        self.since_s += epoch_s
        if epoch_done >= self.epochs:
            return True
        if self.every:
            return epoch_done % self.every == 0
        return self.cost_s is None or self.since_s >= AUTO_CHECKPOINT_RATIO * self.cost_s

    def saved(self, cost_s: float) -> None:
        self.since_s, self.cost_s = 0.0, cost_s


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop: resume from the last checkpoint, one report per epoch, a checkpoint with
    the reports of :class:`CheckpointSchedule`. Rank 0 logs the metrics in the background; what is
    queued is logged before each checkpoint, so that a resumed run finds every epoch it skips logged."""
    import ray.train
    import ray.train.torch
    import torch
    from ray.train import Checkpoint
    from torch.utils.data import DataLoader

    from shapebias.models.resnet import sgd
    from shapebias.tracking import MetricLogger

    cfg = Config(**config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if rank == 0:
        mark("worker: started")
    logger = MetricLogger(config["run_ref"], background=True) if rank == 0 and config.get("run_ref") else None
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(int(config.get("threads", 1)))
    device = ray.train.torch.get_device()

    data = build_data(cfg)
    num_classes = data["train"].num_classes
    model = build_model(cfg, num_classes)
    optimizer = sgd(model, cfg.model_spec, cfg.lr)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
        if rank == 0:
            print(f"resuming from the checkpoint of epoch {start}", file=sys.stderr)
            if logger:
                logger.client.set_tag(logger.ref.run_id, "shapebias.resumed_from_epoch", str(start))
    model = ray.train.torch.prepare_model(model)  # to the device; DDP when world > 1
    if rank == 0:
        mark("worker: data and model ready")
    for group in optimizer.state.values():  # optimizer state follows the parameters' device
        for k, v in group.items():
            if torch.is_tensor(v):
                group[k] = v.to(device)

    workers = _loader_workers(cfg)
    sampler = (
        torch.utils.data.DistributedSampler(data["train"], world, rank, shuffle=True, seed=cfg.seed)
        if world > 1
        else None
    )

    schedule = CheckpointSchedule(cfg.checkpoint_every, cfg.epochs)

    def save_and_report(metrics: dict[str, float], epoch_done: int) -> None:
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        if logger:
            logger.flush()  # the epochs this checkpoint covers are logged before it exists
        with tempfile.TemporaryDirectory() as d:
            torch.save(
                {
                    "model": _unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch_done,
                    "config": config["cfg"],
                    "num_classes": num_classes,
                },
                Path(d) / CHECKPOINT_FILE,
            )
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))

    if start >= cfg.epochs:  # nothing left to train: hand the last state back as the result
        save_and_report({"epoch": start}, start)
        if logger:
            logger.close()
        return
    for epoch in range(start, cfg.epochs):
        for g in optimizer.param_groups:
            g["lr"] = cosine_lr(cfg.lr, epoch, cfg.epochs)
        if sampler is not None:
            sampler.set_epoch(epoch)
            loader = DataLoader(
                data["train"], batch_size=cfg.batch_size, sampler=sampler, num_workers=workers, drop_last=False
            )
        else:
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            loader = DataLoader(
                data["train"], batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=workers
            )
        t0 = time.time()
        t_epoch = time.perf_counter()
        loss, acc = train_epoch(
            model, loader, optimizer, device, progress=rank == 0, desc=f"epoch {epoch + 1}/{cfg.epochs}"
        )
        if world > 1:
            stats = torch.tensor([loss, acc], device=device)
            torch.distributed.all_reduce(stats)
            loss, acc = (stats / world).tolist()
        if rank == 0:
            mark(f"worker: epoch {epoch + 1} trained")
        metrics = {
            "train_loss": loss,
            "train_acc": acc,
            "lr": cosine_lr(cfg.lr, epoch, cfg.epochs),
            "epoch_time_s": time.time() - t0,
        }
        if rank == 0:
            metrics.update(evaluate(_unwrap(model), {k: v for k, v in data.items() if k != "train"}, device, workers))
            print(
                f"epoch {epoch + 1}/{cfg.epochs}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
                file=sys.stderr,
            )
            mark(f"worker: epoch {epoch + 1} evaluated")
            if logger:
                logger.log(metrics, step=epoch)
                mark(f"worker: epoch {epoch + 1} logged")
        epoch_s = time.perf_counter() - t_epoch
        if config.get("epoch_sleep"):
            time.sleep(float(config["epoch_sleep"]))
        if schedule.due(epoch + 1, epoch_s):
            t_save = time.perf_counter()
            save_and_report(metrics, epoch + 1)
            schedule.saved(time.perf_counter() - t_save)
        else:
            ray.train.report(metrics, checkpoint=None)
        if rank == 0:
            mark(f"worker: epoch {epoch + 1} reported")
    if logger:
        logger.close()


# ---------------------------------------------------------------------------------------- driver


def _user_error(exc: BaseException) -> ShapebiasError | None:
    """The user-input error behind a Ray Train failure, if there is one (as a one-line error)."""
    seen, todo = set(), [exc]
    kinds = {cls.__name__: cls for cls in (ConfigError, DataError, WeightsError, ShapebiasError)}
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ShapebiasError):
            lines = str(e).strip().splitlines()
            return type(e)(lines[-1] if len(lines) > 1 else str(e))
        text = str(e)
        m = re.findall(r"(?:shapebias\.errors\.)?(ConfigError|DataError|WeightsError|ShapebiasError): (.+)", text)
        if m:
            name, msg = m[-1]
            return kinds[name](msg.strip())
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        todo += list(getattr(e, "worker_failures", {}).values())
        if getattr(e, "controller_failure", None) is not None:
            todo.append(e.controller_failure)
    return None


def best_epoch_metrics(client, run_id: str) -> dict[str, float]:
    """``best_<metric>`` and ``best_<metric>_epoch`` (1-based) of the clean and stylized accuracies.

    The headline ``test_acc`` / ``stylized_acc`` are the final epoch's (as the seed reported); the
    authors kept the best clean and the best stylized accuracy, each at its own epoch.
    """
    out: dict[str, float] = {}
    for key in ("test_acc", "stylized_acc"):
        history = client.get_metric_history(run_id, key)
        if history:
            best = max(history, key=lambda m: (m.value, -m.step))
            out[f"best_{key}"] = best.value
            out[f"best_{key}_epoch"] = float(best.step + 1)
    return out


def run(cfg: Config, run_id: str | None = None, epoch_sleep: float | None = None, experiment: str | None = None) -> str:
    """Run (or resume) one training job; returns the MLflow run id.

    A new run goes to ``experiment``, else the environment's (``MLFLOW_EXPERIMENT_NAME``/``_ID``),
    else ``shapebias-train_resnet``; under ``mlflow run`` to the one ``--experiment-name`` chose.
    """
    import mlflow
    import torch

    from shapebias import tracking
    from training import resnet_record
    from training.raytools import (
        check_local_workers,
        init_ray,
        make_trainer,
        quiet_logger,
        stopping_local_ray,
        storage_location,
    )

    params = dataclasses.asdict(cfg)
    new_run = run_id is None and not os.environ.get("MLFLOW_RUN_ID")
    with tracking.tracked_run(
        TASK, params, run_id=run_id, run_name=cfg.run_name() if new_run else None, experiment=experiment
    ) as active:
        if run_id is None:  # also name the run that `mlflow run` created (a resumed run keeps its name)
            mlflow.set_tag("mlflow.runName", cfg.run_name())
        run_id = active.info.run_id
        mark("driver: run created")
        claim = protocols.check(TASK, cfg.protocol, params)
        mlflow.set_tags(protocols.run_tags(claim))
        print(claim.describe(), file=sys.stderr)
        cfg.validate()
        check_local_workers(cfg.num_workers)
        data = build_data(cfg)  # the driver checks the data before any worker starts
        for split in data.values():
            if hasattr(split, "check_headers"):
                split.check_headers()
        fingerprint = data_fingerprint(cfg, data)
        mlflow.set_tag("shapebias.data_fingerprint", fingerprint)
        tracking.describe_run(resnet_record.description(cfg, claim, data["train"].num_classes))
        resnet_record.log_datasets(cfg, data, fingerprint)
        mark("driver: data checked and logged")

        env_vars = tracking.worker_env()
        init_ray(env_vars)
        mark("driver: ray started")
        storage = storage_location(cfg.storage_path)
        sleep = epoch_sleep if epoch_sleep is not None else float(os.environ.get("SHAPEBIAS_EPOCH_SLEEP", "0") or 0)
        trainer, device = make_trainer(
            train_loop_per_worker,
            {"cfg": dataclasses.asdict(cfg), "run_ref": tracking.current_ref(), "epoch_sleep": sleep},
            run_id=run_id,
            storage_path=storage,
            num_workers=cfg.num_workers,
            env_vars=env_vars,
        )
        mlflow.set_tag("shapebias.device", device)
        mark("driver: trainer built")
        try:
            result = trainer.fit()
        except Exception as exc:
            user = _user_error(exc)
            if user is not None:
                raise user from None
            raise
        mark("driver: fit returned")
        with stopping_local_ray():  # a Ray instance this job started is not needed any more: stop it meanwhile
            if result.checkpoint is None:
                raise RuntimeError(f"Ray Train returned no checkpoint for run {run_id}")
            with result.checkpoint.as_directory() as d:
                state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
            model = build_model(cfg, state["num_classes"])
            model.load_state_dict(state["model"])
            model.eval()
            with quiet_logger("mlflow.pytorch"):  # its warning that pickle is not the safe format: chosen here
                resnet_record.log_model(model, data["original"][0][0].unsqueeze(0))
            mlflow.log_metrics(best_epoch_metrics(mlflow.MlflowClient(), run_id))
        mark("driver: model logged")  # and Ray stopped (before the data loader's worker processes start)
        test_predictions = predict(model, data["original"], torch.device("cpu"), workers=_loader_workers(cfg)).numpy()
        resnet_record.log_figures(model, data, cfg.run_name(), test_predictions, run_id)
        mark("driver: figures logged")
        metrics = mlflow.get_run(run_id).data.metrics
    mark("driver: run ended")
    print(f"\nrun {run_id} finished ({cfg.run_name()}); {claim.describe()}")
    for key in ("test_acc", "stylized_acc", "best_test_acc", "best_stylized_acc", "shape_bias", "train_acc"):
        if key in metrics:
            print(f"  {key:<13} {metrics[key]:.4f}")
    print(f"  checkpoints   {storage}/{run_id}")
    print(f"  open the UI:  {tracking.ui_command()}")
    return run_id


# ------------------------------------------------------------------------------------------- CLI


PROTOCOL_SET = {k for p in protocols.for_task(TASK) for k in p.settings}  # settings some protocol sets


def parser() -> argparse.ArgumentParser:
    """Flags of the Config fields; a flag not given (or given empty) takes the protocol's value, else the default."""
    p = parser_from_config(
        Config,
        "shapebias train-resnet",
        __doc__.split("\n\n")[0],
        suppress=True,
        default_note=lambda name: ", or the protocol's" if name in PROTOCOL_SET else "",
    )
    p.add_argument("--run-id", default=None, help="resume this MLflow run (default: the active run, or a new one)")
    p.add_argument(
        "--experiment",
        default=None,
        help="MLflow experiment of a new run (default: $MLFLOW_EXPERIMENT_NAME, else shapebias-train_resnet)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Config defaults, then the protocol's settings, then the flags given (an explicit flag wins: off-protocol).

    An unknown protocol is left for :meth:`Config.validate` to report inside the run.
    """
    values = resolve_config(Config, TASK, args)
    return Config(**values)


def _main(argv: list[str] | None = None) -> int:
    mark("driver: imported")
    atexit.register(mark, "driver: at exit")  # runs after Ray's exit handler, which ray.init registers later
    args = parser().parse_args(argv)
    run(config_from_args(args), run_id=args.run_id or None, experiment=args.experiment or None)
    return 0


from shapebias.tracking import cli_main  # noqa: E402  (after the definitions: keeps the module readable)

main = cli_main(_main)

if __name__ == "__main__":
    status = main()
    gc.freeze()  # the exit then skips collecting every object of torch, MLflow and Ray (seconds)
    sys.exit(status)
