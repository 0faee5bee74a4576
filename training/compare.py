"""The compare step: the seed's reproduction tables, rebuilt from MLflow runs.

    mlflow run . -e compare -P experiment=NAME[,NAME...] --env-manager local
    shapebias compare --experiment NAME [--output-dir DIR] [--tracking-uri URI]

Reads every run of the named experiments from the tracking store (any URI MLflow reads),
builds Table 1, Table 2a/2b and the shape-bias table with the published values beside each
cell and a verdict per claim (``shapebias.report``), prints them, and logs them as Markdown,
CSV, a self-contained HTML page and PNG plots to a run tagged ``shapebias.task=compare``.
Runs that a table cannot use are listed with the reason, never dropped silently.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shapebias.errors import DataError
from shapebias.integrity import open_store
from shapebias.tracking import cli_main, tracked_run, ui_command
from training import cliargs

if TYPE_CHECKING:  # the report (pandas) is imported where it is used: --help answers without it
    from shapebias.report import Report, Run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cliargs.Parser(
        prog="shapebias compare", description=__doc__.split("\n\n")[0], formatter_class=cliargs.DefaultsFormatter
    )
    p.add_argument("--experiment", required=True, help="one or more experiment names, comma-separated")
    p.add_argument("--output-dir", default="", help="also keep the report here (default: a temporary folder)")
    p.add_argument("--tracking-uri", default="", help="read runs from this store (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--no-log", action="store_true", help="print and write files only; create no compare run")
    args = p.parse_args(argv)
    for name in ("experiment", "output_dir", "tracking_uri"):  # an empty MLproject value quoted twice
        if getattr(args, name).strip() in ("''", '""'):
            setattr(args, name, "")
    return args


def experiment_names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise DataError(f"experiment={value!r}: name at least one MLflow experiment (comma-separated for several)")
    return names


def read_runs(client, names: list[str]) -> tuple[list[Run], list[str]]:
    """All active runs of the named experiments as :class:`~shapebias.report.Run`; warnings for names with no runs.

    Raises DataError when no named experiment exists, or none has a run.
    """
    from mlflow.entities import ViewType

    warnings: list[str] = []
    experiments = {}
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            warnings.append(f"experiment {name!r} does not exist")
        else:
            experiments[exp.experiment_id] = name
    if not experiments:
        known = sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL))
        raise DataError(
            f"no experiment named {', '.join(map(repr, names))} in {client.tracking_uri}; "
            f"existing experiments: {', '.join(known) or '(none)'}"
        )
    runs = load_runs(client, experiments)
    for name in experiments.values():
        if not any(r.experiment == name for r in runs):
            warnings.append(f"experiment {name!r} has no runs")
    if not runs:
        raise DataError(
            f"experiment(s) {', '.join(map(repr, experiments.values()))} have no runs: "
            "launch them first (see `shapebias reproduce --help`)"
        )
    return runs, warnings


def load_runs(client, experiments: dict[str, str]) -> list[Run]:
    """The active runs of the experiments (id -> name): read straight from a database store, else
    through the public search API."""
    runs = read_runs_sql(client, experiments)
    return runs if runs is not None else search_runs(client, experiments)


def search_runs(client, experiments: dict[str, str], page_size: int = 10000) -> list[Run]:
    """Any tracking store, through the public search API, page by page."""
    from mlflow.entities import ViewType

    from shapebias.report import Run

    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            list(experiments), max_results=page_size, page_token=token, run_view_type=ViewType.ACTIVE_ONLY
        )
        for r in page:
            runs.append(
                Run(
                    run_id=r.info.run_id,
                    params=dict(r.data.params),
                    metrics=dict(r.data.metrics),
                    tags=dict(r.data.tags),
                    status=r.info.status,
                    experiment=experiments[r.info.experiment_id],
                    start_time=r.info.start_time or 0,
                    run_name=r.info.run_name or "",
                )
            )
        token = page.token
        if not token:
            break
    return runs


def read_runs_sql(client, experiments: dict[str, str]) -> list[Run] | None:
    """A database-backed store (SQLite, PostgreSQL...) read with four column queries.

    MLflow's search builds a full Run entity per run: for 1,000 runs ``search_runs`` takes 2.8-5.3 s
    where these queries take 0.3-0.6 s (``python -m benchmarks.bench_compare``), and the compare
    step's goal is 3 s for read and build together. The data is the same (params, latest metric
    values, tags: what ``search_runs`` returns), from MLflow's own SQLAlchemy models. None where
    the store is not a database (an HTTP server): the caller then uses the search API.
    ``tests/test_compare.py`` checks that both return the same runs.
    """
    try:
        from mlflow.store.tracking.dbmodels import models
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _get_store

        store = _get_store(client.tracking_uri)
    except Exception:  # noqa: BLE001 - private API moved: the public one still works
        return None
    from shapebias.report import Run

    if not isinstance(store, SqlAlchemyStore):
        return None
    ids = [int(i) for i in experiments]
    R = models.SqlRun
    with store.ManagedSessionMaker() as session:
        active = session.query(R.run_uuid).filter(R.experiment_id.in_(ids), R.lifecycle_stage == "active")
        head = active.add_columns(R.experiment_id, R.status, R.start_time, R.name).all()
        runs = {
            rid: Run(
                run_id=rid,
                params={},
                metrics={},
                tags={},
                status=status,
                experiment=experiments[str(exp)],
                start_time=start or 0,
                run_name=name or "",
            )
            for rid, exp, status, start, name in head
        }
        sub = active.subquery()
        for model, field in ((models.SqlParam, "params"), (models.SqlTag, "tags")):
            for rid, key, value in session.query(model.run_uuid, model.key, model.value).join(
                sub, model.run_uuid == sub.c.run_uuid
            ):
                getattr(runs[rid], field)[key] = value
        M = models.SqlLatestMetric
        for rid, key, value, is_nan in session.query(M.run_uuid, M.key, M.value, M.is_nan).join(
            sub, M.run_uuid == sub.c.run_uuid
        ):
            runs[rid].metrics[key] = float("nan") if is_nan else float(value)
    return sorted(runs.values(), key=lambda r: -r.start_time)


def report_dir(base: Path | None, name: str) -> Path:
    """A new, empty folder for one report: ``<output-dir>/compare-<name>`` (the compare run's id;
    a unique suffix without a run), or a temporary folder without ``--output-dir``. Only this
    folder is logged as artifacts, never other files of the output folder."""
    if base is None:
        return Path(tempfile.mkdtemp(prefix="shapebias-compare-"))
    base.mkdir(parents=True, exist_ok=True)
    if not name:
        return Path(tempfile.mkdtemp(prefix="compare-", dir=base))
    path = base / f"compare-{name}"
    path.mkdir()
    return path


def build(client, names: list[str], exclude: str = "") -> tuple[Report, list[str], dict[str, float]]:
    from shapebias.report import build_report

    t0 = time.perf_counter()
    runs, warnings = read_runs(client, names)
    runs = [r for r in runs if r.run_id != exclude]
    t1 = time.perf_counter()
    report = build_report(runs)
    report.notes[:0] = warnings
    t2 = time.perf_counter()
    return report, warnings, {"read_s": t1 - t0, "build_s": t2 - t1}


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # before the heavy imports: --help answers at once
    import mlflow
    from mlflow.tracking import MlflowClient

    from shapebias.report import render_text, write_outputs

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    names = experiment_names(args.experiment)
    base = Path(args.output_dir) if args.output_dir else None
    if base is not None and base.exists() and not base.is_dir():
        raise DataError(
            f"output_dir={args.output_dir!r} is a file; expected a folder (the report goes into a new sub-folder)"
        )
    client = MlflowClient(open_store(mlflow.get_tracking_uri()))
    params = {"experiment": ",".join(names), "output_dir": args.output_dir}

    def work(exclude: str = "") -> Report:
        report, _, timing = build(client, names, exclude)
        header = [
            f"experiments: {', '.join(names)}; tracking store: {client.tracking_uri}",
            f"runs read: {report.n_runs} in {timing['read_s']:.2f} s; tables built in {timing['build_s']:.2f} s",
        ]
        write_outputs(report, out_dir, header)
        print(render_text(report, header))
        if not report.sections:
            raise DataError(
                f"no table could be built from the {report.n_runs} runs of {', '.join(names)}: "
                f"every run is listed above under 'Runs left out' with the reason"
            )
        return report

    if args.no_log:
        out_dir = report_dir(base, "")
        work()
        print(f"report written to {out_dir}")
        return 0
    with tracked_run("compare", params, run_name=f"compare {','.join(names)}") as run:
        out_dir = report_dir(base, run.info.run_id)
        try:
            report = work(exclude=run.info.run_id)
        finally:
            if any(out_dir.iterdir()):
                mlflow.log_artifacts(str(out_dir), artifact_path="compare")
            else:
                out_dir.rmdir()  # nothing was written: leave no empty folder behind
        mlflow.log_metrics(
            {
                "runs_read": report.n_runs,
                "runs_left_out": len(report.left_out),
                "claims_held": int((report.verdicts["verdict"] == "holds").sum()),
                "claims_tested": int((report.verdicts["test"] != "none").sum()),
            }
        )
        print(
            f"compare run {run.info.run_id}: tables {', '.join(report.built)}; "
            f"artifacts under compare/ (report.html, tables.md, *.csv)"
        )
        print(f"report also in {out_dir}" if args.output_dir else "")
        print(f"see it: {ui_command()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
