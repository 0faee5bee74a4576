"""How long the synthetic shape-bias study takes: ``python -m benchmarks.bench_study``.

Two measurements, each printed as a table (and written as JSON to ``benchmarks/results/``):

* ``--mode pilot`` (default): a few runs of the study, each exactly the study's run (``training.study.train``
  on the benchmark rendered once, one thread), one after another in this process, no Ray, no
  MLflow. Reports CPU seconds and wall seconds per run, the run's metrics, and projects the whole
  study: ``runs x CPU-s per run / cores``, plus the measured rendering per seed. ``--set`` times
  other settings (the pilot that chose the study's settings, docs/synthetic-study.md).
* ``--mode full``: the whole study, ``training.study.run_study`` exactly as
  ``python -m training.reproduce synthetic`` runs it (Ray tasks on every core, MLflow child runs, the
  report), into a throw-away SQLite store; reports its wall time against the goal (15 minutes)
  and the CPU seconds per run that the runs logged (``train_cpu_s``).

Both record the load average before and after: on a shared machine the wall times are not the
idle machine's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

GOAL_S = 15 * 60
PILOT_VARIANTS = "synthetic.none,synthetic.topk.10,synthetic.topk_mean.10"


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def pilot(variants: list[str], seeds: list[int], cores: int, overrides: dict[str, Any]) -> dict[str, Any]:
    from training import study

    planned = study.plan(variants, seeds, overrides)
    rows, renders = [], []
    data = {}
    for p in planned:
        if p.cfg.seed not in data:
            c0, w0 = time.process_time(), time.perf_counter()
            data[p.cfg.seed] = study.render(dataclasses.asdict(p.cfg))
            renders.append({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0})
        result = study.train(dataclasses.asdict(p.cfg), data[p.cfg.seed])
        rows.append({"run": p.label(), "cpu_s": result["cpu_s"], "wall_s": result["wall_s"], **result["metrics"]})
        metrics = " ".join(f"{k}={v:.3f}" for k, v in result["metrics"].items())
        print(f"  {p.label()}: {result['cpu_s']:.1f} CPU-s, {result['wall_s']:.1f} s wall; {metrics}", flush=True)
    full = study.plan(study.variant_names(), study.seed_list(), overrides)
    cpu = statistics.mean(r["cpu_s"] for r in rows)
    render = statistics.mean(r["cpu_s"] for r in renders)
    total = len(full) * cpu + len({p.cfg.seed for p in full}) * render
    return {
        "runs": rows,
        "render": renders,
        "cpu_s_per_run": cpu,
        "study_runs": len(full),
        "projected_cpu_s": total,
        "cores": cores,
        "projected_wall_s": total / cores,
    }


def full(experiment: str, tracking_uri: str, where: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    from training import study

    planned = study.plan(study.variant_names(), study.seed_list(), {})
    t0 = time.perf_counter()
    rc = study.run_study(planned, "", experiment, where, tracking_uri=tracking_uri)
    wall = time.perf_counter() - t0
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id], filter_string="tags.`shapebias.task` = 'train_resnet'", max_results=1000
    )
    cpu = [r.data.metrics["train_cpu_s"] for r in runs if "train_cpu_s" in r.data.metrics]
    return {
        "exit_status": rc,
        "runs": len(runs),
        "wall_s": wall,
        "goal_s": GOAL_S,
        "goal_met": wall <= GOAL_S and rc == 0,
        "cpu_s_per_run": statistics.mean(cpu) if cpu else float("nan"),
        "tracking_uri": tracking_uri,
    }


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(
        [
            f"| {'measure':<{width}} | value |",
            f"|{'-' * (width + 2)}|-------|",
            *(f"| {k:<{width}} | {v} |" for k, v in rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="pilot", choices=("pilot", "full"))
    ap.add_argument("--variants", default=PILOT_VARIANTS, help="pilot: the variants to time (one run each per seed)")
    ap.add_argument("--seeds", default="0", help="pilot: seeds to time")
    ap.add_argument(
        "--set",
        default="",
        dest="overrides",
        help="pilot: KEY=VALUE,... settings in place of the protocols' (how the settings were chosen)",
    )
    ap.add_argument("--where", default="local", help="full: local (Ray on every core) or inline (no Ray)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="pilot: cores of the projection")
    ap.add_argument("--tracking-uri", default="", help="full: the store (default: a throw-away SQLite file)")
    ap.add_argument("--out", default="", help="JSON file (default benchmarks/results/study-<time>.json)")
    args = ap.parse_args(argv)
    from training import study

    before = load()
    print(f"load average before: {before} on {os.cpu_count()} cores", flush=True)
    if args.mode == "pilot":
        out = pilot(
            study.variant_names(args.variants),
            study.seed_list(args.seeds),
            args.cores,
            study.parse_overrides(args.overrides),
        )
        rows = [
            ("runs timed", str(len(out["runs"]))),
            ("CPU-s per run (mean)", f"{out['cpu_s_per_run']:.1f}"),
            ("wall s per run (mean)", f"{statistics.mean(r['wall_s'] for r in out['runs']):.1f}"),
            ("rendering per seed, CPU-s", f"{statistics.mean(r['cpu_s'] for r in out['render']):.2f}"),
            ("study runs", str(out["study_runs"])),
            ("projected CPU-s", f"{out['projected_cpu_s']:.0f}"),
            (f"projected wall on {out['cores']} cores (s)", f"{out['projected_wall_s']:.0f} (goal {GOAL_S})"),
        ]
    else:
        tmp = tempfile.mkdtemp(prefix="bench-study-")
        out = full("bench-study", args.tracking_uri or f"sqlite:///{tmp}/mlflow.db", study.check_where(args.where))
        rows = [
            ("runs", str(out["runs"])),
            ("wall s", f"{out['wall_s']:.0f}"),
            ("goal s", str(GOAL_S)),
            ("goal met", str(out["goal_met"])),
            ("CPU-s per run (mean)", f"{out['cpu_s_per_run']:.1f}"),
        ]
    after = load()
    rows += [("load average before", str(before)), ("load average after", str(after))]
    print(table(rows))
    path = (
        Path(args.out)
        if args.out
        else (Path(__file__).parent / "results" / f"study-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mode": args.mode, "load_before": before, "load_after": after, **out}, indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
