"""How long the compare step takes to read 1,000 runs and build the tables (goal: <= 3 s).

    python -m benchmarks.bench_compare [--runs 1000] [--repeat 3]

Writes a temporary SQLite tracking store with N runs of the three table tasks (the ResNet grid
with many seeds, FastGAN and shape-bias runs, each with ~20 params like real jobs), then times
both ways ``compare`` can read them: ``training.compare.search_runs`` (MLflow's public search
API, ``MlflowClient.search_runs``) and ``training.compare.read_runs_sql`` (column queries on
MLflow's own SQLAlchemy models, what ``compare`` uses on a database store), and
``shapebias.report.build_report`` (tables, comparisons, verdicts), separately from the plots.
The store is filled through MLflow's SQLAlchemy models in one transaction (the client would
need minutes for 1,000 runs).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from pathlib import Path


def synthetic_runs(n: int, seed: int = 0) -> list[dict]:
    """n run descriptions spread over Table 1 (most), Table 2 and shape-bias cells."""
    rng = random.Random(seed)
    runs = []
    extra = {f"opt_{i}": str(i) for i in range(12)}  # a job logs its whole configuration
    for i in range(n):
        kind = i % 10
        if kind < 7:
            params = {
                "model_spec": rng.choice(["code", "paper"]),
                "sparsity": rng.choice(["none", "topk", "topk_mean"]),
                "topk": "0.2",
                "stem_stride": "2",
                "dataset": rng.choice(["IN-S1", "IN-S2", "IN-S3", "IN-S4", "synthetic"]),
                "seed": str(i),
                "epochs": "30",
                "lr": "0.05",
                **extra,
            }
            metrics = {"test_acc": rng.uniform(0.7, 0.9), "stylized_acc": rng.uniform(0.5, 0.7)}
            task = "train_resnet"
        elif kind < 9:
            sp = rng.choice(["none", "topk"])
            params = {
                "dataset": rng.choice(["jeep", "fish", "train", "table", "IN-S1-C5"]),
                "sparsity": sp,
                "topk": "0.05",
                "noise_injection": rng.choice(["true", "false"]),
                "seed": str(i),
                "iterations": "50000",
                **extra,
            }
            metrics = {"fid": rng.uniform(40, 80)}
            task = "train_fastgan"
        else:
            sp = rng.choice(["topk", "complement"])
            params = {
                "model": rng.choice(["alexnet", "vgg16"]),
                "sparsity": sp,
                "topk": rng.choice(["0.05", "0.1", "0.2", "0.3", "0.4", "0.5"]),
                "weights": "pretrained",
                "seed": str(i),
                **extra,
            }
            metrics = {"shape_bias": rng.uniform(0.2, 0.7)}
            task = "shape_bias"
        runs.append({"params": params, "metrics": metrics, "tags": {"shapebias.task": task}})
    return runs


def write_runs_bulk(uri: str, experiment: str, runs: list[dict]) -> str:
    """Insert runs straight through MLflow's SQLAlchemy models (one transaction); returns the experiment id."""
    from mlflow.store.tracking.dbmodels import models
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.utils import _get_store

    client = MlflowClient(uri)
    exp_id = client.create_experiment(experiment)
    store = _get_store(uri)
    now = int(time.time() * 1000)
    with store.ManagedSessionMaker() as session:
        for i, run in enumerate(runs):
            rid = uuid.uuid4().hex
            session.add(
                models.SqlRun(
                    run_uuid=rid,
                    name=f"run-{i}",
                    source_type="LOCAL",
                    source_name="bench",
                    entry_point_name="",
                    user_id="bench",
                    status="FINISHED",
                    start_time=now + i,
                    end_time=now + i + 1,
                    source_version="",
                    lifecycle_stage="active",
                    artifact_uri=f"{tempfile.gettempdir()}/{rid}",
                    experiment_id=int(exp_id),
                )
            )
            session.add_all([models.SqlParam(key=k, value=v, run_uuid=rid) for k, v in run["params"].items()])
            session.add_all([models.SqlTag(key=k, value=v, run_uuid=rid) for k, v in run["tags"].items()])
            for k, v in run["metrics"].items():
                session.add(models.SqlMetric(key=k, value=v, timestamp=now, step=0, is_nan=False, run_uuid=rid))
                session.add(models.SqlLatestMetric(key=k, value=v, timestamp=now, step=0, is_nan=False, run_uuid=rid))
    return exp_id


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    from mlflow.tracking import MlflowClient

    from shapebias.report import build_report
    from training.compare import read_runs_sql, search_runs

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'bench.db'}"
        t = time.perf_counter()
        write_runs_bulk(uri, "bench", synthetic_runs(args.runs))
        setup = time.perf_counter() - t
        t = time.perf_counter()
        import scipy.stats  # noqa: F401 - one-off imports, timed apart from the work

        build_report([], plots=False)
        imports = time.perf_counter() - t
        client = MlflowClient(uri)
        exp_id = client.get_experiment_by_name("bench").experiment_id
        client.search_runs([exp_id], max_results=1)  # warm the engine
        rows = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            runs = search_runs(client, {exp_id: "bench"})
            t1 = time.perf_counter()
            fast = read_runs_sql(client, {exp_id: "bench"})
            t2 = time.perf_counter()
            report = build_report(runs, plots=False)
            t3 = time.perf_counter()
            assert fast is not None and len(fast) == len(runs)
            rows.append((i + 1, len(runs), t1 - t0, t2 - t1, t3 - t2))
        t4 = time.perf_counter()
        build_report(runs, plots=True)
        plots = time.perf_counter() - t4
    print(
        f"compare benchmark: {args.runs} runs in a SQLite store (filled in {setup:.1f} s), "
        f"{os.cpu_count()} CPUs; goal: read + build <= 3 s"
    )
    print(f"one-off imports (scipy.stats, reference files): {imports:.2f} s; plots are timed apart")
    print(f"{'try':>3}  {'runs':>5}  {'read, search API (s)':>20}  {'read, SQL (s)':>13}  {'build (s)':>9}")
    for r in rows:
        print(f"{r[0]:>3}  {r[1]:>5}  {r[2]:>20.2f}  {r[3]:>13.2f}  {r[4]:>9.2f}")
    api = min(r[2] + r[4] for r in rows)
    sql = min(r[3] + r[4] for r in rows)
    print(
        f"best read + build: search API {api:.2f} s ({'meets' if api <= 3 else 'MISSES'} the 3 s goal), "
        f"SQL {sql:.2f} s; build with plots: {plots:.2f} s; tables built: {', '.join(report.built)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
