"""A training epoch: the bare PyTorch loop against the full job (Ray Train + MLflow), 1 and 2 workers.

Same data (the synthetic benchmark of ``training/train_resnet.py``), same model, same batch
size, same torch threads (a local job gives its one CPU worker all the CPUs: ``cpus // workers``
threads each). The bare loop is ``train_epoch`` + ``evaluate`` of ``training/train_resnet.py`` in
this process, each epoch timed by a ``torch.utils.benchmark.Timer``; it runs before the jobs and
again after them, so that a change in the machine's load during the jobs shows and is averaged
(the bare figures pool the epochs of both). The job is ``training.train_resnet.run`` (driver
creates the MLflow run, Ray Train workers train, rank 0 evaluates, logs and checkpoints on its
schedule), tracked in a throw-away SQLite store, with ``SHAPEBIAS_TIMELINE`` set so that the
worker stamps its epochs (:mod:`training.timeline`). Per epoch we compare:

* ``train``: the training pass alone (the job's own stamps around the same ``train_epoch``);
* ``cycle``: one whole epoch as the user waits for it: for the job, the time between the ends of
  consecutive epochs (training, evaluation, MLflow logging, checkpoint, Ray reporting); for the
  bare loop, training + evaluation.

The first epoch (warm-up) is left out; ``_s`` figures are medians of the other epochs, ``_min_s``
their minima (the least disturbed epoch: on a shared machine the steadier comparison). The job's
start-up (Ray, workers, data) is reported separately as ``startup_s``.
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


def job_threads(workers: int = 1) -> int:
    """The torch threads of each worker of a local CPU job (``training.raytools.make_trainer``)."""
    return max(1, (os.cpu_count() or 1) // workers)


def bare_loop(cfg, threads: int | None = None, label: str = "") -> dict[str, Any]:
    """The bare loop, with ``threads`` torch threads (default: this process's setting)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bare_loop(cfg, label)
    finally:
        torch.set_num_threads(saved)


def _bare_loop(cfg, label: str) -> dict[str, Any]:
    from torch.utils import benchmark
    from torch.utils.data import DataLoader

    from shapebias.models.resnet import sgd
    from training.train_resnet import build_data, build_model, cosine_lr, evaluate, train_epoch

    t_start = time.perf_counter()
    data = build_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data["train"].num_classes)
    optimizer = sgd(model, cfg.model_spec, cfg.lr)
    device = torch.device("cpu")
    test = {k: v for k, v in data.items() if k != "train"}
    train_s, cycle_s = [], []
    state = {"epoch": 0, "t1": 0.0}

    def train() -> None:
        epoch = state["epoch"]
        for g in optimizer.param_groups:
            g["lr"] = cosine_lr(cfg.lr, epoch, cfg.epochs)
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        loader = DataLoader(data["train"], batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=0)
        train_epoch(model, loader, optimizer, device, progress=False)

    threads = torch.get_num_threads()
    timers = {
        name: benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads, label="epoch", description=name)
        for name, fn in (("train", train), ("evaluate", lambda: evaluate(model, test, device)))
    }

    def loop() -> None:
        for epoch in range(cfg.epochs):
            state["epoch"] = epoch
            t = timers["train"].timeit(1).median
            e = timers["evaluate"].timeit(1).median
            train_s.append(t)
            cycle_s.append(t + e)

    peak = peak_memory_mb(loop)
    name = f"bare loop, {threads} thread{'s' if threads > 1 else ''}{label}"
    return summarize(name, cfg, train_s, cycle_s, time.perf_counter() - t_start, peak, threads=threads)


def pooled(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One row from several runs of the bare loop: medians and minima over all their steady epochs."""
    train = [t for r in rows for t in r["train_all_s"][1:]]
    cycle = [t for r in rows for t in r["cycle_all_s"][1:]]
    return {
        **rows[0],
        "name": name,
        "train_s": med(train),
        "cycle_s": med(cycle),
        "train_min_s": min(train, default=float("nan")),
        "cycle_min_s": min(cycle, default=float("nan")),
        "train_all_s": train,  # the steady epochs of every run, in the order they ran
        "cycle_all_s": cycle,
        "pooled_from": [r["name"] for r in rows],
    }


def summarize(
    name: str, cfg, train_s: list[float], cycle_s: list[float], total_s: float, peak_mb, **extra
) -> dict[str, Any]:
    steady_train = [t for t in train_s[1:] or train_s if t == t]
    steady_cycle = [t for t in cycle_s[1:] or cycle_s if t == t]
    return {
        "name": name,
        "workers": cfg.num_workers,
        "epochs": cfg.epochs,
        "train_images": cfg.synthetic_classes * cfg.synthetic_train_per_class,
        "train_s": med(steady_train),
        "cycle_s": med(steady_cycle),
        "train_min_s": min(steady_train, default=float("nan")),
        "cycle_min_s": min(steady_cycle, default=float("nan")),
        "train_all_s": [round(t, 3) for t in train_s],
        "cycle_all_s": [round(t, 3) for t in cycle_s],
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

    from training import timeline
    from training.train_resnet import run

    cfg = dataclasses.replace(cfg, storage_path=str(tmp / f"ray-{cfg.num_workers}"))
    client = MlflowClient()
    events_file = tmp / f"timeline-{cfg.num_workers}.tsv"
    saved_env = os.environ.get(timeline.ENV)
    os.environ[timeline.ENV] = str(events_file)  # local Ray's processes inherit it at ray.init
    t0 = time.perf_counter()
    wall0 = time.time()
    error = None
    try:
        with TreeMemorySampler() as mem:
            try:
                run_id = run(cfg)
            except Exception as exc:  # the job failed after (or before) its epochs: time what it did, say so
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
                runs = client.search_runs(["0"], order_by=["attributes.start_time DESC"], max_results=1)
                if not runs:
                    raise
                run_id = runs[0].info.run_id
    finally:
        if saved_env is None:
            os.environ.pop(timeline.ENV, None)
        else:
            os.environ[timeline.ENV] = saved_env
    total = time.perf_counter() - t0
    events = timeline.read(str(events_file)) if events_file.exists() else []
    first = {e.name: e.t for e in reversed(events)}
    ends = [first.get(f"worker: epoch {i} reported") for i in range(cfg.epochs + 1)]
    ends[0] = first.get("worker: data and model ready")
    trained = [first.get(f"worker: epoch {i} trained") for i in range(1, cfg.epochs + 1)]
    nan = float("nan")
    train_s = [t - a if t is not None and a is not None else nan for a, t in zip(ends, trained, strict=False)]
    cycle_s = [b - a if a is not None and b is not None else nan for a, b in zip(ends, ends[1:], strict=False)]
    out = summarize(
        f"job, {cfg.num_workers} worker{'s' if cfg.num_workers > 1 else ''}",
        cfg,
        train_s,
        cycle_s,
        total,
        mem.peak_mb,
        threads=job_threads(cfg.num_workers),
    )
    out["startup_s"] = ends[0] - wall0 if ends[0] is not None else nan
    out["checkpoints"] = sum(p.is_dir() for p in (tmp / f"ray-{cfg.num_workers}" / run_id).glob("checkpoint_*"))
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
    """Rows: the bare loop before the jobs, each job, the bare loop after them, and the two bare runs
    pooled (``bare loop``, the reference of every ``*_over_bare`` ratio)."""
    cfg = config(quick, epochs, per_class)
    threads = job_threads(1)

    def bare(label: str) -> dict[str, Any]:
        row = bare_loop(cfg, threads, label)
        progress(f"  epoch {row['name']}: train {row['train_s']:.2f} s, cycle {row['cycle_s']:.2f} s")
        return row

    rows = [bare(" (before the jobs)")]
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
    rows.append(bare(" (after the jobs)"))
    bare_rows = [r for r in rows if r["name"].startswith("bare loop")]
    reference = pooled(bare_rows, f"bare loop, {threads} thread{'s' if threads > 1 else ''} (both runs)")
    rows.append(reference)
    for r in rows:
        r["train_over_bare"] = r["train_s"] / reference["train_s"]
        r["cycle_over_bare"] = r["cycle_s"] / reference["cycle_s"]
        r["cycle_over_bare_min"] = r["cycle_min_s"] / reference["cycle_min_s"]
    return rows
