"""A training epoch: the bare PyTorch loop against the full job (Ray Train + MLflow), 1 and 2 workers.

Same data (the synthetic benchmark of ``training/train_resnet.py``), same model, same batch
size. The bare loop is ``train_epoch`` + ``evaluate`` of ``training/train_resnet.py`` in this
process; the job is ``training.train_resnet.run`` (driver creates the MLflow run, Ray Train
workers train, rank 0 evaluates, logs and checkpoints every epoch), tracked in a throw-away
SQLite store. Per epoch we compare:

* ``train``: the training pass alone (the job's own ``epoch_time_s`` metric, measured inside the
  worker around the same ``train_epoch``);
* ``cycle``: one whole epoch as the user waits for it: for the job, the time between the
  timestamps of consecutive epochs' metrics (training, evaluation, MLflow logging, checkpoint,
  Ray reporting); for the bare loop, training + evaluation.

The first epoch (warm-up) is left out of the medians; the job's start-up (Ray, workers, data) is
reported separately as ``startup_s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import TreeMemorySampler, med, peak_memory_mb


def config(quick: bool, epochs: int | None, per_class: int | None, workers: int = 1):
    from training.train_resnet import Config

    return Config(
        sparsity="topk",
        topk=0.2,
        topk_layers="layer2",
        model_spec="code",
        stem_stride=2,
        dataset="synthetic",
        epochs=epochs or (3 if quick else 4),
        batch_size=64,
        lr=0.05,
        seed=0,
        num_workers=workers,
        synthetic_classes=10,
        synthetic_train_per_class=per_class or (10 if quick else 30),
        synthetic_test_per_class=5 if quick else 10,
        image_size=32,
    ).validate()


def bare_loop(cfg, threads: int | None = None) -> dict[str, Any]:
    """The bare loop, with ``threads`` torch threads (default: this process's setting)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bare_loop(cfg)
    finally:
        torch.set_num_threads(saved)


def _bare_loop(cfg) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from shapebias.models.resnet import sgd
    from training.train_resnet import build_data, build_model, cosine_lr, evaluate, train_epoch

    t_start = time.perf_counter()
    data = build_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data["train"].num_classes)
    optimizer = sgd(model, cfg.model_spec, cfg.lr)
    device = torch.device("cpu")
    train_s, cycle_s = [], []

    def loop() -> None:
        for epoch in range(cfg.epochs):
            for g in optimizer.param_groups:
                g["lr"] = cosine_lr(cfg.lr, epoch, cfg.epochs)
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            loader = DataLoader(data["train"], batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=0)
            t0 = time.perf_counter()
            train_epoch(model, loader, optimizer, device, progress=False)
            t1 = time.perf_counter()
            evaluate(model, {k: v for k, v in data.items() if k != "train"}, device)
            train_s.append(t1 - t0)
            cycle_s.append(time.perf_counter() - t0)

    peak = peak_memory_mb(loop)
    name = f"bare loop, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}"
    return summarize(name, cfg, train_s, cycle_s, time.perf_counter() - t_start, peak, threads=torch.get_num_threads())


def summarize(
    name: str, cfg, train_s: list[float], cycle_s: list[float], total_s: float, peak_mb, **extra
) -> dict[str, Any]:
    steady_train = train_s[1:] or train_s
    steady_cycle = cycle_s[1:] or cycle_s
    return {
        "name": name,
        "workers": cfg.num_workers,
        "epochs": cfg.epochs,
        "train_images": cfg.synthetic_classes * cfg.synthetic_train_per_class,
        "train_s": med(steady_train),
        "cycle_s": med(steady_cycle),
        "train_all_s": [round(t, 2) for t in train_s],
        "cycle_all_s": [round(t, 2) for t in cycle_s],
        "total_s": total_s,
        "peak_mb": peak_mb,
        **extra,
    }


@contextlib.contextmanager
def throwaway_tracking():
    import mlflow

    old_uri = os.environ.get("MLFLOW_TRACKING_URI")
    old_cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="shapebias-bench-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.chdir(tmp)
        mlflow.set_tracking_uri(uri)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old_cwd)
            if old_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old_uri
            mlflow.set_tracking_uri(old_uri)


def job(cfg, tmp: Path) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from training.train_resnet import run

    cfg = dataclasses.replace(cfg, storage_path=str(tmp / f"ray-{cfg.num_workers}"))
    client = MlflowClient()
    t0 = time.perf_counter()
    error = None
    with TreeMemorySampler() as mem:
        try:
            run_id = run(cfg)
        except Exception as exc:  # the job failed after (or before) its epochs: time what it did, say so
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
            runs = client.search_runs(["0"], order_by=["attributes.start_time DESC"], max_results=1)
            if not runs:
                raise
            run_id = runs[0].info.run_id
    total = time.perf_counter() - t0
    train = sorted(client.get_metric_history(run_id, "epoch_time_s"), key=lambda m: m.step)
    logged = sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)
    train_s = [m.value for m in train]
    stamps = [m.timestamp / 1e3 for m in logged]
    cycle_s = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # cycle_s[i] is epoch i+1; pad epoch 0 (start-up mixed in) so indices line up with train_s
    run_start = client.get_run(run_id).info.start_time / 1e3
    startup = stamps[0] - run_start - (train_s[0] if train_s else 0.0) if stamps else float("nan")
    out = summarize(
        f"job, {cfg.num_workers} worker{'s' if cfg.num_workers > 1 else ''}",
        cfg,
        train_s,
        [float("nan")] + cycle_s,
        total,
        mem.peak_mb,
    )
    out["cycle_s"] = med(cycle_s)
    out["startup_s"] = startup
    out["run_id"] = run_id
    if error:
        out["job_error"] = error
    return out


def run(
    quick: bool,
    workers: tuple[int, ...] = (1, 2),
    epochs: int | None = None,
    per_class: int | None = None,
    progress=print,
) -> list[dict[str, Any]]:
    rows = []
    cfg = config(quick, epochs, per_class)
    # the job's Ray workers get 1 CPU each, so Ray sets OMP_NUM_THREADS=1 in them: a 1-thread bare
    # loop is shown too, to tell the platform's overhead from the thread count
    for threads in dict.fromkeys([torch.get_num_threads(), 1]):
        row = bare_loop(cfg, threads)
        rows.append(row)
        progress(f"  epoch {row['name']}: train {row['train_s']:.2f} s, cycle {row['cycle_s']:.2f} s")
    gc.collect()
    import ray

    try:
        with throwaway_tracking() as tmp:
            for n in workers:
                row = job(dataclasses.replace(cfg, num_workers=n), tmp)
                rows.append(row)
                progress(
                    f"  epoch {row['name']}: train {row['train_s']:.2f} s, cycle {row['cycle_s']:.2f} s, "
                    f"start-up {row['startup_s']:.1f} s"
                )
    finally:
        if ray.is_initialized():
            ray.shutdown()
    bare = rows[0]
    for r in rows:
        r["train_over_bare"] = r["train_s"] / bare["train_s"]
        r["cycle_over_bare"] = r["cycle_s"] / bare["cycle_s"]
    return rows
