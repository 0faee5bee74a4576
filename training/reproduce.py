"""Launch the runs that a reproduction table is missing, and only those.

    shapebias reproduce table1 [--where local|http://HEAD:8265|ray://HEAD:10001] [--dry-run]
                        [--experiment NAME] [--seeds 0,1,2] [--datasets IN-S1,IN-S2] [--job-args "..."]
    mlflow run . -e reproduce -P table=table1 -P dry_run=true --env-manager local

The grid of a table (its cells x seeds) is compared with the runs already in the experiment: a
cell x seed is done when a FINISHED run of the right task has the cell's parameters and the
table's metrics (random-weight runs never count). Everything else is launched: locally one job
after another (``python -m training.<job>``), or on a Ray cluster through the Ray Jobs API. A run
that exists but did not finish (FAILED, KILLED, or RUNNING after an interruption) is relaunched
with ``MLFLOW_RUN_ID`` set to it, so the job resumes that run (and Ray Train its checkpoint).
Running the command again after an interruption launches nothing that finished; on Ray, jobs
of this experiment that are still pending or running are not submitted twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence

from shapebias import settings
from shapebias.report import runs as report_runs
from shapebias.report.runs import Run
from shapebias.report.tables import TABLE2A_DATASETS, TABLE2B_DATASETS
from shapebias.errors import ConfigError, DataError, check_choice
from shapebias.tracking import cli_main

TABLES = ("table1", "table2", "shape_bias")
SHAPE_BIAS_LEVELS = ("0.05", "0.1", "0.2", "0.3", "0.4", "0.5")
RESUMABLE = ("train_resnet", "train_fastgan")
JOB_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_S3_ENDPOINT_URL",
           "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
           "SHAPEBIAS_SHARED_DIR", "SHAPEBIAS_CUE_CONFLICT_DIR", "SHAPEBIAS_FEW_SHOT_DIR")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell x seed of a table's grid: the parameters that identify its run."""

    table: str
    task: str
    params: tuple[tuple[str, str], ...]  # normalised, matched against runs
    seed: str                            # "" where the task has no seed (shape bias)

    def label(self) -> str:
        text = " ".join(f"{k}={v}" for k, v in self.params)
        return f"{text} seed={self.seed}" if self.seed else text

    def key(self) -> str:
        return hashlib.sha1(f"{self.table}|{self.label()}".encode()).hexdigest()[:12]


@dataclasses.dataclass
class Job:
    """One launch: a job module with its arguments, covering one or more cells."""

    module: str
    args: list[str]
    cells: list[Cell]
    resume_run_id: str = ""

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def key(self) -> str:
        return hashlib.sha1("|".join(c.key() for c in self.cells).encode()).hexdigest()[:12]


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def grid(table: str, seeds: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
         levels: Sequence[str] | None = None) -> list[Cell]:
    """The cells x seeds a table needs (the seed report's own grid unless narrowed)."""
    n = report_runs.canonical_value
    cells: list[Cell] = []
    if table == "table1":
        for spec in ("code", "paper"):
            for sparsity in ("none", "topk", "topk_mean"):
                for ds in datasets or ("IN-S1", "IN-S2", "IN-S3", "IN-S4"):
                    for seed in seeds or ("0", "1", "2"):
                        cells.append(Cell(table, "train_resnet", (("model_spec", spec), ("sparsity", sparsity),
                                                                  ("stem_stride", "2"), ("dataset", ds)), n(seed)))
    elif table == "table2":
        settings_a = [("none", "", "false"), ("topk", "0.05", "false"), ("topk", "0.05", "true")]
        settings_b = [("none", "", "false"), ("topk", "0.05", "false"), ("topk", "0.15", "false"),
                      ("topk", "0.15", "true")]
        for ds in datasets or (*TABLE2A_DATASETS, *TABLE2B_DATASETS):
            for sparsity, topk, noise in settings_b if ds in TABLE2B_DATASETS else settings_a:
                for seed in seeds or ("0",):
                    cells.append(Cell(table, "train_fastgan", (("dataset", ds), ("sparsity", sparsity),
                                                               ("topk", topk), ("noise_injection", noise)), n(seed)))
    elif table == "shape_bias":
        for model, sparsities in (("alexnet", ("none", "topk", "complement")), ("vgg16", ("none", "topk"))):
            for sparsity in sparsities:
                for level in ("1",) if sparsity == "none" else (levels or SHAPE_BIAS_LEVELS):
                    cells.append(Cell(table, "shape_bias", (("model", model), ("sparsity", sparsity),
                                                            ("topk", n(level))), ""))
    else:
        check_choice("table", table, TABLES)
    return cells


def cell_of(run: Run, table: str) -> tuple[tuple[tuple[str, str], ...], str] | None:
    """The (params, seed) of a run in the terms of :func:`grid`, or None if it is not the table's task."""
    spec = report_runs.SPEC_OF_TABLE[table]
    if run.task != spec.task:
        return None
    p = {k: report_runs.canonical_value(v) for k, v in run.params.items()}
    if table == "table1":
        names = ("model_spec", "sparsity", "stem_stride", "dataset")
    elif table == "table2":
        p["dataset"] = report_runs.dataset_of(run.params)
        p["noise_injection"] = p.get("noise_injection", "false")
        if p.get("sparsity") == "none":
            p["topk"] = ""
        names = ("dataset", "sparsity", "topk", "noise_injection")
    else:
        if p.get("sparsity") == "none":
            p["topk"] = "1"
        names = ("model", "sparsity", "topk")
    seed = "" if table == "shape_bias" else p.get("seed", "")
    return tuple((k, p.get(k, "")) for k in names), seed


@dataclasses.dataclass
class Status:
    cell: Cell
    state: str        # done | missing | unfinished
    run_id: str = ""


def status(cells: Sequence[Cell], runs: Iterable[Run]) -> list[Status]:
    """Which cells x seeds are done (a FINISHED run with the metrics), unfinished, or missing."""
    table = cells[0].table if cells else "table1"
    metrics = report_runs.SPEC_OF_TABLE[table].metrics
    done: dict[tuple, str] = {}
    unfinished: dict[tuple, Run] = {}
    for run in runs:
        where = cell_of(run, table)
        if where is None or run.random_weights:
            continue
        if run.status == "FINISHED" and all(m in run.metrics for m in metrics):
            done.setdefault(where, run.run_id)
        elif run.status != "FINISHED":
            old = unfinished.get(where)
            if old is None or run.start_time > old.start_time:
                unfinished[where] = run
    out = []
    for c in cells:
        where = (c.params, c.seed)
        if where in done:
            out.append(Status(c, "done", done[where]))
        elif where in unfinished:
            out.append(Status(c, "unfinished", unfinished[where].run_id))
        else:
            out.append(Status(c, "missing"))
    return out


def jobs_for(todo: Sequence[Status], job_args: Sequence[str] = (), data_root: str = "",
             strict: bool = True) -> list[Job]:
    """The launches that cover the cells to do; shape-bias levels of one model x sparsity share a sweep.

    ``strict``: a few-shot set without a folder is a DataError (else a placeholder, for dry runs).
    """
    jobs: list[Job] = []
    sweeps: dict[tuple[str, str], list[Cell]] = {}
    for st in todo:
        c, p = st.cell, dict(st.cell.params)
        resume = st.run_id if st.state == "unfinished" and c.task in RESUMABLE else ""
        if c.task == "train_resnet":
            args = ["--model-spec", p["model_spec"], "--sparsity", p["sparsity"], "--stem-stride", p["stem_stride"],
                    "--dataset", p["dataset"], "--seed", c.seed]
            jobs.append(Job("training.train_resnet", args + list(job_args), [c], resume))
        elif c.task == "train_fastgan":
            try:
                folder = few_shot_folder(p["dataset"], data_root)
            except DataError:
                if strict:
                    raise
                folder = f"<no folder for {p['dataset']}: pass --data-root>"
            args = ["--data-dir", folder, "--sparsity", p["sparsity"],
                    "--noise-injection", p["noise_injection"], "--seed", c.seed]
            if p["topk"]:
                args += ["--topk", p["topk"]]
            jobs.append(Job("training.train_fastgan", args + list(job_args), [c], resume))
        else:
            sweeps.setdefault((p["model"], p["sparsity"]), []).append(c)
    for (model, sparsity), cells in sweeps.items():
        levels = ",".join(dict(c.params)["topk"] for c in cells)
        if sparsity == "none":
            levels = "1.0"
        args = ["--model", model, "--sparsity", sparsity, "--topk", levels, "--weights", "pretrained"]
        jobs.append(Job("training.shape_bias", args + list(job_args), cells))
    return jobs


def few_shot_folder(name: str, data_root: str = "") -> str:
    """Where the few-shot set ``name`` is: ``--data-root/name``, else the settings; else a clear error."""
    if data_root:
        return os.path.join(data_root, name)
    path = settings.few_shot_dir(name)
    if path is None:
        raise DataError(f"no folder for the few-shot set {name!r}: pass --data-root DIR (with DIR/{name}/), "
                        "set SHAPEBIAS_FEW_SHOT_DIR, or leave the set out with --datasets")
    return str(path)


# --- launching ---------------------------------------------------------------------------------

def job_env(experiment_id: str, job: Job) -> dict[str, str]:
    import mlflow

    env = {k: os.environ[k] for k in JOB_ENV if k in os.environ}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    env["MLFLOW_EXPERIMENT_ID"] = experiment_id
    if job.resume_run_id:
        env["MLFLOW_RUN_ID"] = job.resume_run_id
    return env


def launch_local(jobs: Sequence[Job], experiment_id: str) -> list[tuple[Job, int]]:
    """One job after another in this machine's environment; returns (job, exit status)."""
    from tqdm import tqdm

    results = []
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME")}
    for job in tqdm(jobs, desc="reproduce", unit="job"):
        print(f"launch: {shlex.join(job.command())}" + (f"  (resuming run {job.resume_run_id})" if job.resume_run_id else ""),
              flush=True)
        rc = subprocess.call(job.command(), cwd=settings.REPO_ROOT, env={**base, **job_env(experiment_id, job)})
        results.append((job, rc))
    return results


def launch_ray(jobs: Sequence[Job], experiment_id: str, address: str, table: str) -> list[tuple[Job, str]]:
    """Submit through the Ray Jobs API; a job of the same cells still pending/running is not resubmitted."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    live = {(j.metadata or {}).get("shapebias.job") for j in client.list_jobs()
            if j.status in (JobStatus.PENDING, JobStatus.RUNNING)}
    out = []
    for job in jobs:
        meta = {"shapebias.job": f"{experiment_id}-{job.key()}", "shapebias.table": table}
        if meta["shapebias.job"] in live:
            print(f"already running on the cluster: {' '.join(job.args)}")
            out.append((job, "already running"))
            continue
        entrypoint = shlex.join(["python", "-m", job.module, *job.args])
        sub_id = client.submit_job(
            entrypoint=entrypoint, metadata=meta,
            runtime_env={"working_dir": str(settings.REPO_ROOT), "env_vars": job_env(experiment_id, job),
                         "excludes": [".venv", ".git", "mlruns", ".ray_results", "*.db", "shared"]})
        print(f"submitted {sub_id}: {entrypoint}")
        out.append((job, sub_id))
    return out


# --- command -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shapebias reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("table", help="table1 | table2 | shape_bias")
    p.add_argument("--where", default="local", help="local, or a Ray address (http://HEAD:8265, ray://HEAD:10001)")
    p.add_argument("--experiment", default="reproduce", help="MLflow experiment that holds the table's runs")
    p.add_argument("--dry-run", nargs="?", const="true", default="false",
                   help="list what is missing and what would be launched; launch nothing")
    p.add_argument("--seeds", default="", help="comma-separated seeds (default: 0,1,2 for table1, 0 for table2)")
    p.add_argument("--datasets", default="", help="comma-separated datasets (default: the seed report's)")
    p.add_argument("--levels", default="", help="shape_bias: Top-K levels (default: 0.05,0.1,0.2,0.3,0.4,0.5)")
    p.add_argument("--job-args", default="", help="extra arguments for every job, e.g. --job-args=\"--epochs 30 --data-dir /in\"")
    p.add_argument("--data-root", default="", help="table2: folder that holds the few-shot sets by name")
    p.add_argument("--tracking-uri", default="", help="default: MLFLOW_TRACKING_URI")
    args = p.parse_args(argv)
    for name, value in vars(args).items():  # an empty MLproject value quoted twice arrives as ''
        if isinstance(value, str) and value.strip() in ("''", '""'):
            setattr(args, name, "")
    return args


def truthy(name: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no", ""):
        return False
    raise ConfigError(f"{name}={value!r} is not accepted; use true or false")


def read_experiment_runs(client, experiment: str) -> list[Run]:
    from training.compare import load_runs

    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else load_runs(client, {exp.experiment_id: experiment})


@cli_main
def main(argv: list[str] | None = None) -> int:
    import mlflow
    from mlflow.tracking import MlflowClient

    args = parse_args(argv)
    check_choice("table", args.table, TABLES)
    dry = truthy("dry_run", args.dry_run)
    where = args.where.strip()
    if where != "local" and not where.startswith(("http://", "https://", "ray://")) and where != "auto":
        raise ConfigError(f"where={where!r} is not accepted; use local, auto or a Ray address such as "
                          "http://HEAD:8265 or ray://HEAD:10001")
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient()
    cells = grid(args.table, csv_list(args.seeds) or None, csv_list(args.datasets) or None,
                 csv_list(args.levels) or None)
    states = status(cells, read_experiment_runs(client, args.experiment))
    todo = [s for s in states if s.state != "done"]
    print(f"{args.table}: {len(cells)} cells x seeds in experiment {args.experiment!r} "
          f"({client.tracking_uri}): {len(cells) - len(todo)} done, "
          f"{sum(s.state == 'missing' for s in todo)} missing, {sum(s.state == 'unfinished' for s in todo)} unfinished")
    for s in todo:
        extra = f" (run {s.run_id} did not finish: resume)" if s.state == "unfinished" else ""
        print(f"  {s.state:<10} {s.cell.label()}{extra}")
    if not todo:
        print("nothing to launch")
        return 0
    jobs = jobs_for(todo, shlex.split(args.job_args), args.data_root, strict=not dry)
    if dry:
        for job in jobs:
            print(f"would launch: python -m {job.module} {shlex.join(job.args)}"
                  + (f"  [MLFLOW_RUN_ID={job.resume_run_id}]" if job.resume_run_id else ""))
        print(f"dry run: {len(jobs)} job(s) would be launched {'locally' if where == 'local' else 'on ' + where}")
        return 0
    exp = client.get_experiment_by_name(args.experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(args.experiment)
    if where == "local":
        results = launch_local(jobs, experiment_id)
        failed = [j for j, rc in results if rc != 0]
        print(f"launched {len(results)} job(s); {len(failed)} failed"
              + ("" if not failed else ": rerun the same command to retry them"))
        return 1 if failed else 0
    launch_ray(jobs, experiment_id, where, args.table)
    print(f"submitted to {where}; rerun the same command later: finished cells are skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
