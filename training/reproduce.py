"""Launch the runs that a reproduction table is missing, and only those.

    shapebias reproduce table1 [--where local|http://HEAD:8265|ray://HEAD:10001] [--dry-run]
                        [--experiment NAME] [--seeds 0,1,2] [--datasets IN-S1,IN-S2] [--scale smoke]
    mlflow run . -e reproduce -P table=table1 -P dry_run=true --env-manager local

The grid of a table is its protocols (``shapebias.protocols``) x seeds. A cell x seed is done
when a FINISHED run claims the cell's protocol, its settings equal the protocol's (on-protocol),
it has the seed and the table's metrics; random-weight runs never count. Every job is launched
with ``--protocol NAME`` and every setting of the protocol spelled out. ``--scale smoke``
launches the same cells as cheap pipeline checks (synthetic data, one epoch; 16 cue-conflict
images): those runs are off-protocol, count only for ``--scale smoke`` and are never compared
with published values. Table 2's FastGAN jobs also get ``--data-dir`` (``--data-root``/NAME).

Everything not done is launched: locally one job after another (``python -m training.<job>``),
or on a Ray cluster through the Ray Jobs API. A run that exists but did not finish (FAILED,
KILLED, or RUNNING after an interruption) is relaunched with ``MLFLOW_RUN_ID`` set to it, so the
job resumes that run (and Ray Train its checkpoint).
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
from typing import TYPE_CHECKING

from shapebias import protocols, settings, tasks
from shapebias.errors import ConfigError, DataError, check_choice
from shapebias.integrity import is_live, open_store
from shapebias.tracking import FORWARDED_ENV, cli_main
from training import cliargs
from training.cliargs import split_args

if TYPE_CHECKING:  # the report (pandas) is imported where it is used: --help answers without it
    from shapebias.report.runs import Run

TABLES = ("table1", "table2", "shape_bias", "synthetic")  # synthetic: the study (training/study.py)
DEFAULT_SEEDS = {"table1": ("0", "1", "2"), "table2": ("0",)}  # the prior reproduction's runs per cell
SHAPE_BIAS_LEVELS = ("0.05", "0.1", "0.2", "0.3", "0.4", "0.5")
RESUMABLE = tasks.RESUMABLE
SCALES: dict[str, dict[str, dict[str, object]]] = {  # settings that --scale changes, per task
    "full": {},
    "smoke": {
        "train_resnet": {
            "dataset": "synthetic",
            "epochs": 1,
            "synthetic_classes": 10,
            "synthetic_train_per_class": 20,
            "synthetic_test_per_class": 10,
            "image_size": 32,
        },
        "shape_bias": {"limit": 16},
    },
}
JOB_ENV = FORWARDED_ENV  # no secrets: see shapebias.tracking.FORWARDED_ENV


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell x seed of a table's grid: the parameters that identify its run."""

    table: str
    task: str
    params: tuple[tuple[str, str], ...]  # the settings the cell's runs have (normalised)
    seed: str  # "" where the task has no seed (shape bias)
    protocol: str = ""  # the protocol its runs claim ("" for tables without protocols)

    def label(self) -> str:
        text = self.protocol or " ".join(f"{k}={v}" for k, v in self.params)
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


def grid(
    table: str,
    seeds: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    levels: Sequence[str] | None = None,
    scale: str = "full",
) -> list[Cell]:
    """The cells x seeds a table needs (the published grid unless narrowed), at ``scale``."""
    from shapebias.report.runs import canonical_value as n

    check_choice("table", table, TABLES)
    check_choice("scale", scale, tuple(SCALES))
    chosen = protocols.for_table(table)
    if table in ("table1", "table2") and datasets:
        chosen = _narrow(chosen, "dataset", "datasets", datasets)
    if table == "shape_bias" and levels:
        chosen = [p for p in chosen if p.values()["sparsity"] == "none"] + _narrow(
            [p for p in chosen if p.values()["sparsity"] != "none"], "topk", "levels", [n(v) for v in levels]
        )
    cells = []
    for p in chosen:
        values = {**p.values(), **{k: protocols.canonical(v) for k, v in SCALES[scale].get(p.task, {}).items()}}
        params = tuple(values.items())
        for seed in ("",) if p.task == "shape_bias" else (seeds or DEFAULT_SEEDS[table]):
            cells.append(Cell(table, p.task, params, n(seed) if seed else "", p.name))
    return cells


def _narrow(chosen: list[protocols.Protocol], key: str, option: str, wanted: Sequence[str]) -> list:
    known = list(dict.fromkeys(p.values()[key] for p in chosen))
    bad = [w for w in wanted if w not in known]
    if bad:
        raise ConfigError(
            f"{option}={','.join(wanted)!r}: {', '.join(bad)} has no protocol; "
            f"the published ones are {', '.join(known)}"
        )
    return [p for p in chosen if p.values()[key] in wanted]


def place_of(run: Run, table: str, scale: str) -> tuple | None:
    """Where a run stands in a table's grid: (protocol or params, seed), or None when it counts for no cell.

    A run counts for the cell of the protocol it claims when its settings equal that protocol's
    (at ``scale``: the smoke settings); a shape-bias run has no seed.
    """
    from shapebias.report.runs import canonical_value

    claimed = protocols.claim_of(run.tags, run.params)
    p = protocols.REGISTRY.get(claimed)
    if p is None or p.table != table or run.task != p.task:
        return None
    target = {**p.values(), **SCALES[scale].get(p.task, {})}
    rules = protocols.TASKS[p.task]
    if rules.effective({**run.params}) != rules.effective(target):
        return None
    return claimed, "" if p.task == "shape_bias" else canonical_value(run.params.get("seed", ""))


@dataclasses.dataclass
class Status:
    cell: Cell
    state: str  # done | missing | unfinished | running (a live process has it)
    run_id: str = ""


def status(cells: Sequence[Cell], runs: Iterable[Run], scale: str = "full") -> list[Status]:
    """Which cells x seeds are done (a FINISHED run with the metrics), unfinished, or missing."""
    from shapebias.report.runs import SPEC_OF_TABLE

    table = cells[0].table if cells else "table1"
    metrics = SPEC_OF_TABLE[table].metrics
    done: dict[tuple, str] = {}
    unfinished: dict[tuple, Run] = {}
    for run in runs:
        where = place_of(run, table, scale)
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
        where = (c.protocol or c.params, c.seed)
        if where in done:
            out.append(Status(c, "done", done[where]))
        elif where in unfinished:  # a RUNNING run whose process is alive is not launched twice
            run = unfinished[where]
            out.append(Status(c, "running" if is_live(run.status, run.tags) else "unfinished", run.run_id))
        else:
            out.append(Status(c, "missing"))
    return out


def jobs_for(
    todo: Sequence[Status], job_args: Sequence[str] = (), data_root: str = "", strict: bool = True
) -> list[Job]:
    """The launches that cover the cells to do; shape-bias levels of one model x sparsity share a sweep.

    ``strict``: a few-shot set without a folder is a DataError (else a placeholder, for dry runs).
    """
    jobs: list[Job] = []
    sweeps: dict[tuple[str, str], list[Cell]] = {}
    for st in todo:
        c, p = st.cell, dict(st.cell.params)
        resume = st.run_id if st.state == "unfinished" and c.task in RESUMABLE else ""
        if c.task == "train_resnet":
            args = ["--protocol", c.protocol, *protocols.flags(p), "--seed", c.seed]
            jobs.append(Job(tasks.TASKS["train_resnet"].module, args + list(job_args), [c], resume))
        elif c.task == "train_fastgan":
            try:
                folder = few_shot_folder(p["dataset"], data_root)
            except DataError:
                if strict:
                    raise
                folder = f"<no folder for {p['dataset']}: pass --data-root>"
            args = ["--protocol", c.protocol, *protocols.flags(p), "--data-dir", folder, "--seed", c.seed]
            jobs.append(Job(tasks.TASKS["train_fastgan"].module, args + list(job_args), [c], resume))
        else:
            sweeps.setdefault((p["model"], p["sparsity"]), []).append(c)
    for cells in sweeps.values():
        values = dict(cells[0].params)
        if values["sparsity"] != "none":
            values["topk"] = ",".join(dict(c.params)["topk"] for c in cells)
        args = ["--protocol", ",".join(c.protocol for c in cells), *protocols.flags(values)]
        jobs.append(Job(tasks.TASKS["shape_bias"].module, args + list(job_args), cells))
    return jobs


def few_shot_folder(name: str, data_root: str = "") -> str:
    """Where the few-shot set ``name`` is: ``--data-root/name``, else the settings; else a clear error."""
    if data_root:
        return os.path.join(data_root, name)
    path = settings.few_shot_dir(name)
    if path is None:
        raise DataError(
            f"no folder for the few-shot set {name!r}: pass --data-root DIR (with DIR/{name}/), "
            "set SHAPEBIAS_FEW_SHOT_DIR, or leave the set out with --datasets"
        )
    return str(path)


def notes(cells: Sequence[Cell], runs: Sequence[Run], job_args: Sequence[str], scale: str) -> list[str]:
    """What the user should know: runs that count for no cell, flags that leave the protocols."""
    out = []
    if cells and cells[0].protocol:
        task, table = cells[0].task, cells[0].table
        ignored = [
            r
            for r in runs
            if r.task == task and r.status == "FINISHED" and not r.random_weights and place_of(r, table, scale) is None
        ]
        if ignored:
            out.append(
                f"{len(ignored)} FINISHED {task} run(s) count for no cell: they claim no protocol of "
                f"{table} or their settings differ from it (`shapebias compare` lists them under other settings)"
            )
        keys = {k for c in cells for k, _ in c.params}
        changed = sorted({a[2:].split("=")[0].replace("-", "_") for a in job_args if a.startswith("--")} & keys)
        if changed:
            out.append(
                f"--job-args sets {', '.join(changed)}: a protocol setting; these runs will be off-protocol, "
                "never count as done and never sit beside a published value"
            )
    if scale != "full":
        out.append(f"scale {scale}: pipeline checks, off-protocol by design; never compared with published values")
    return out


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
    """One job after another in the local environment; returns (job, exit status)."""
    from tqdm import tqdm

    results = []
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME")}
    for job in tqdm(jobs, desc="reproduce", unit="job"):
        print(
            f"launch: {shlex.join(job.command())}"
            + (f"  (resuming run {job.resume_run_id})" if job.resume_run_id else ""),
            flush=True,
        )
        rc = subprocess.call(job.command(), cwd=settings.REPO_ROOT, env={**base, **job_env(experiment_id, job)})
        results.append((job, rc))
    return results


def launch_ray(jobs: Sequence[Job], experiment_id: str, address: str, table: str) -> list[tuple[Job, str]]:
    """Submit through the Ray Jobs API; a job of the same cells still pending/running is not resubmitted."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    live = {
        (j.metadata or {}).get("shapebias.job")
        for j in client.list_jobs()
        if j.status in (JobStatus.PENDING, JobStatus.RUNNING)
    }
    out = []
    for job in jobs:
        meta = {"shapebias.job": f"{experiment_id}-{job.key()}", "shapebias.table": table}
        if meta["shapebias.job"] in live:
            print(f"already running on the cluster: {' '.join(job.args)}")
            out.append((job, "already running"))
            continue
        entrypoint = shlex.join(["python", "-m", job.module, *job.args])
        sub_id = client.submit_job(
            entrypoint=entrypoint,
            metadata=meta,
            runtime_env={
                "working_dir": str(settings.REPO_ROOT),
                "env_vars": job_env(experiment_id, job),
                "excludes": [".venv", ".git", "mlruns", ".ray_results", "*.db", "shared"],
            },
        )
        print(f"submitted {sub_id}: {entrypoint}")
        out.append((job, sub_id))
    return out


# --- command -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cliargs.Parser(
        prog="shapebias reproduce", description=__doc__.split("\n\n")[0], formatter_class=cliargs.DefaultsFormatter
    )
    p.add_argument(
        "table",
        metavar="{" + ",".join(TABLES) + "}",
        help="the table whose missing runs to launch (synthetic: the study, training/study.py)",
    )
    p.add_argument("--where", default="local", help="local, or a Ray address (http://HEAD:8265, ray://HEAD:10001)")
    p.add_argument("--experiment", default="reproduce", help="MLflow experiment that holds the table's runs")
    p.add_argument(
        "--dry-run",
        action=cliargs.Flag,
        default=False,
        help="list what is missing and what would be launched; launch nothing",
    )
    p.add_argument("--seeds", default="", help="comma-separated seeds (default: 0,1,2 for table1, 0 for table2)")
    p.add_argument("--datasets", default="", help="comma-separated datasets (default: the seed report's)")
    p.add_argument("--levels", default="", help="shape_bias: Top-K levels (default: 0.05,0.1,0.2,0.3,0.4,0.5)")
    p.add_argument(
        "--scale",
        default="full",
        metavar="{" + ",".join(SCALES) + "}",
        help="full: the protocols; smoke: cheap off-protocol pipeline checks",
    )
    p.add_argument(
        "--job-args",
        default="",
        help='extra arguments for every job, e.g. --job-args="--data-dir /in" '
        "(one that changes a protocol setting makes the runs off-protocol: they never count as done)",
    )
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


def _synthetic_study(args: argparse.Namespace) -> int:
    """``reproduce synthetic``: the study's own launcher (Ray tasks, one parent run), same options."""
    from training import study

    check_choice("scale", args.scale, tuple(SCALES))
    overrides = dict(study.SMOKE) if args.scale == "smoke" else {}
    planned = study.plan(study.variant_names(), study.seed_list(args.seeds), overrides)
    return study.run_study(
        planned,
        study.overrides_text(overrides),
        args.experiment,
        study.check_where(args.where),
        truthy("dry_run", args.dry_run),
        tracking_uri=args.tracking_uri,
    )


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # before the heavy imports: --help answers at once
    import mlflow
    from mlflow.tracking import MlflowClient

    check_choice("table", args.table, TABLES)
    if args.table == "synthetic":
        return _synthetic_study(args)
    dry = truthy("dry_run", args.dry_run)
    where = args.where.strip()
    if where != "local" and not where.startswith(("http://", "https://", "ray://")) and where != "auto":
        raise ConfigError(
            f"where={where!r} is not accepted; use local, auto or a Ray address such as "
            "http://HEAD:8265 or ray://HEAD:10001"
        )
    split_args("job_args", args.job_args)  # unbalanced quotes fail before anything is read
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient(open_store(mlflow.get_tracking_uri()))
    cells = grid(
        args.table,
        csv_list(args.seeds) or None,
        csv_list(args.datasets) or None,
        csv_list(args.levels) or None,
        args.scale,
    )
    runs = read_experiment_runs(client, args.experiment)
    states = status(cells, runs, args.scale)
    running = [s for s in states if s.state == "running"]
    todo = [s for s in states if s.state not in ("done", "running")]
    print(
        f"{args.table}: {len(cells)} cells x seeds in experiment {args.experiment!r} "
        f"({client.tracking_uri}): {len(cells) - len(todo) - len(running)} done, "
        f"{f'{len(running)} running, ' if running else ''}"
        f"{sum(s.state == 'missing' for s in todo)} missing, {sum(s.state == 'unfinished' for s in todo)} unfinished"
    )
    for s in running:
        print(f"  running    {s.cell.label()} (run {s.run_id} has a live process: not launched again)")
    for s in todo:
        extra = f" (run {s.run_id} did not finish: resume)" if s.state == "unfinished" else ""
        print(f"  {s.state:<10} {s.cell.label()}{extra}")
    for line in notes(cells, runs, split_args("job_args", args.job_args), args.scale):
        print(f"note: {line}")
    if not todo:
        print("nothing to launch")
        return 0
    jobs = jobs_for(todo, split_args("job_args", args.job_args), args.data_root, strict=not dry)
    if dry:
        for job in jobs:
            print(
                f"would launch: python -m {job.module} {shlex.join(job.args)}"
                + (f"  [MLFLOW_RUN_ID={job.resume_run_id}]" if job.resume_run_id else "")
            )
        print(f"dry run: {len(jobs)} job(s) would be launched {'locally' if where == 'local' else 'on ' + where}")
        return 0
    exp = client.get_experiment_by_name(args.experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(args.experiment)
    if where == "local":
        results = launch_local(jobs, experiment_id)
        failed = [j for j, rc in results if rc != 0]
        print(
            f"launched {len(results)} job(s); {len(failed)} failed"
            + ("" if not failed else ": rerun the same command to retry them")
        )
        return 1 if failed else 0
    launch_ray(jobs, experiment_id, where, args.table)
    print(f"submitted to {where}; rerun the same command later: finished cells are skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
