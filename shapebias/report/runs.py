"""Runs as the compare step sees them, which table each feeds, and how a table groups them into cells.

A configuration is every parameter but the seed (and but paths and worker counts, which do not
change a result); the runs of one configuration are the seeds of one cell.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from shapebias.protocols.model import canonical_scalar

TASK_TAG = "shapebias.task"
WEIGHTS_TAG = "shapebias.weights"  # same name as shapebias.tracking.WEIGHTS_TAG (no MLflow import here)
PARENT_TAG = "mlflow.parentRunId"
PARAM_TAG_PREFIX = "shapebias.param."  # same as shapebias.tracking.PARAM_TAG_PREFIX

# Parameters that never make two runs different configurations.
IGNORED_PARAMS = frozenset(
    {
        "seed",
        "data_dir",
        "stylized_dir",
        "class_list",
        "storage_path",
        "checkpoint_every",
        "fid_weights",
        "num_workers",
        "output_dir",
        "weights",
        "sweep",
        "protocol",
        "device",
    }
)
# Parameters that mean nothing for a dense model (sparsity none): blanked before grouping.
SPARSITY_ONLY_PARAMS = ("topk", "topk_layers")


@dataclasses.dataclass
class Run:
    """One tracked run: its params and latest metric values as MLflow stores them."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    status: str = "FINISHED"
    experiment: str = ""
    start_time: int = 0
    run_name: str = ""

    def __post_init__(self) -> None:
        """Params as the run ran them: a ``shapebias.param.<name>`` tag replaces the param MLflow
        logged first (``mlflow run`` logs MLproject's empty parameters as ``''``)."""
        run_values = {k[len(PARAM_TAG_PREFIX) :]: v for k, v in self.tags.items() if k.startswith(PARAM_TAG_PREFIX)}
        if run_values:
            self.params = {**self.params, **run_values}

    @property
    def task(self) -> str:
        return self.tags.get(TASK_TAG, "")

    @property
    def random_weights(self) -> bool:
        return self.tags.get(WEIGHTS_TAG, "") == "random"


@dataclasses.dataclass
class LeftOut:
    """A run that no table uses, and why."""

    run_id: str
    experiment: str
    task: str
    status: str
    reason: str


@functools.lru_cache(maxsize=65536)
def _canonical(text: str) -> str:
    return canonical_scalar(text)  # cached: the report canonicalises every param of every run


def canonical_value(value: Any) -> str:
    """A parameter value in canonical form: "2", "2.0" -> "2"; "True" -> "true"; "0.20" -> "0.2"."""
    return _canonical(str(value).strip())


def dataset_of(params: Mapping[str, str]) -> str:
    """The ``dataset`` param, else the folder name of ``data_dir`` (FastGAN runs)."""
    if params.get("dataset"):
        return params["dataset"]
    data_dir = params.get("data_dir", "").rstrip("/\\")
    return data_dir.replace("\\", "/").rsplit("/", 1)[-1] if data_dir else ""


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """Which runs a table reads and how it groups them."""

    name: str
    task: str
    required_params: tuple[str, ...]
    metrics: tuple[str, ...]
    row_params: tuple[str, ...]  # always part of the row key, in this order
    column_param: str  # one column per value (dataset, Top-K level)
    ignored: frozenset[str] = IGNORED_PARAMS


TABLE1 = TableSpec(
    "table1",
    "train_resnet",
    ("model_spec", "sparsity", "stem_stride", "dataset", "seed"),
    ("test_acc", "stylized_acc"),
    ("model_spec", "sparsity", "stem_stride"),
    "dataset",
)
TABLE2 = TableSpec(
    "table2",
    "train_fastgan",
    ("sparsity", "noise_injection", "dataset"),
    ("fid",),
    ("sparsity", "topk", "noise_injection"),
    "dataset",
)
SHAPE_BIAS = TableSpec(
    "shape_bias",
    "shape_bias",
    ("model", "sparsity", "topk"),
    ("shape_bias",),
    ("model", "sparsity"),
    "topk",
    IGNORED_PARAMS | {"batch_size"},
)
# The synthetic study (shapebias.report.study): train_resnet runs that claim a synthetic.* protocol.
STUDY = TableSpec(
    "synthetic",
    "train_resnet",
    ("sparsity", "dataset", "seed"),
    ("shape_bias", "test_acc", "stylized_acc", "cue_conflict_shape_acc", "cue_conflict_texture_acc"),
    ("sparsity",),
    "topk",
)
STUDY_PROTOCOL_PREFIX = "synthetic."
SPEC_OF_TASK = {s.task: s for s in (TABLE1, TABLE2, SHAPE_BIAS)}
SPEC_OF_TABLE = {s.name: s for s in (TABLE1, TABLE2, SHAPE_BIAS, STUDY)}


def spec_of(run: Run) -> TableSpec | None:
    """The table a run feeds: the study's for a synthetic.* protocol claim, else its task's."""
    claim = run.tags.get("shapebias.protocol") or run.params.get("protocol", "")
    if run.task == STUDY.task and claim.startswith(STUDY_PROTOCOL_PREFIX):
        return STUDY
    return SPEC_OF_TASK.get(run.task)


def canonical_params(run: Run, spec: TableSpec) -> dict[str, str]:
    """The run's params in canonical form, as the table groups them."""
    params = {k: canonical_value(v) for k, v in run.params.items()}
    if spec.task == "train_fastgan":
        params["dataset"] = dataset_of(run.params)
        params.setdefault("topk", "")
    if params.get("sparsity") == "none":
        for k in SPARSITY_ONLY_PARAMS:
            if k in params and not (spec.task == "shape_bias" and k == "topk"):
                params[k] = ""
    return params


def _why_unusable(run: Run, spec: TableSpec, parents: set[str]) -> str:
    """Why a run of the table's task cannot be used ("" when it can)."""
    if (
        spec is SHAPE_BIAS
        and "shape_bias" not in run.metrics
        and (run.run_id in parents or "," in run.params.get("topk", ""))
    ):
        return "sweep parent run: its levels are its child runs"
    if run.status != "FINISHED":
        return f"status {run.status} (only FINISHED runs count)"
    params = canonical_params(run, spec)
    missing = []
    missing_params = [k for k in spec.required_params if not params.get(k)]
    missing_metrics = [k for k in spec.metrics if k not in run.metrics or not math.isfinite(run.metrics[k])]
    if missing_params:
        missing.append("param " + ", ".join(missing_params))
    if missing_metrics:
        missing.append("metric " + ", ".join(missing_metrics))
    return "missing " + "; ".join(missing) if missing else ""


def select_runs(runs: Iterable[Run]) -> tuple[dict[str, list[Run]], list[LeftOut], list[str]]:
    """Sort runs into the tables (by task tag): (runs per table, runs left out with why, notes)."""
    runs = list(runs)
    parents = {r.tags[PARENT_TAG] for r in runs if r.tags.get(PARENT_TAG)}
    by_table: dict[str, list[Run]] = defaultdict(list)
    left_out: list[LeftOut] = []
    for run in runs:
        spec = spec_of(run)
        if spec is None:
            why = "no shapebias.task tag" if not run.task else f"task {run.task!r} feeds no table"
            left_out.append(LeftOut(run.run_id, run.experiment, run.task or "-", run.status, why))
            continue
        why = _why_unusable(run, spec, parents)
        if why:
            left_out.append(LeftOut(run.run_id, run.experiment, run.task or "-", run.status, why))
        else:
            by_table[spec.name].append(run)
    notes = []
    tasks = sorted({r.task or "-" for r in runs})
    if len(tasks) > 1:
        notes.append(f"runs of several tasks are mixed ({', '.join(tasks)}): each table reads its own task")
    return by_table, left_out, notes


RowKey = tuple[tuple[str, str], ...]


@dataclasses.dataclass
class Cell:
    """The runs (one per seed) of one configuration."""

    row: RowKey
    column: str
    runs: list[Run]
    values: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.runs)

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values[metric]))

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds (n - 1); NaN for one seed."""
        v = self.values[metric]
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    def run_ids(self) -> str:
        return ",".join(r.run_id for r in self.runs)


@dataclasses.dataclass
class Grouping:
    """A table's cells, the parameters that vary and so split rows, and the runs a later one superseded."""

    cells: list[Cell]
    varying: list[str]
    superseded: list[LeftOut]

    def index(self) -> dict[tuple[RowKey, str], Cell]:
        return {(c.row, c.column): c for c in self.cells}


def group_cells(runs: Sequence[Run], spec: TableSpec) -> Grouping:
    """Cells of one table; the row key gains every parameter that varies across the table's runs.

    Two runs of one configuration and one seed: the later one counts, the other is listed.
    """
    params = [canonical_params(r, spec) for r in runs]
    keys = sorted({k for p in params for k in p} - spec.ignored - set(spec.row_params) - {spec.column_param})

    def counts(p: dict, k: str) -> bool:  # a dense run's Top-K settings say nothing
        return not (p.get("sparsity") == "none" and k in SPARSITY_ONLY_PARAMS and spec.task != "shape_bias")

    varying = [k for k in keys if len({p.get(k, "") for p in params if counts(p, k)}) > 1]
    row_keys = list(spec.row_params) + varying
    buckets: dict[tuple, dict[str, Run]] = defaultdict(dict)
    superseded: list[LeftOut] = []
    for run, p in sorted(zip(runs, params, strict=True), key=lambda rp: rp[0].start_time):
        key = (tuple((k, p.get(k, "")) for k in row_keys), p.get(spec.column_param, ""))
        seed = p.get("seed", "") if spec.task != "shape_bias" else ""
        if seed in buckets[key]:
            old = buckets[key][seed]
            superseded.append(
                LeftOut(
                    old.run_id,
                    old.experiment,
                    old.task,
                    old.status,
                    f"same configuration and seed as the later run {run.run_id}",
                )
            )
        buckets[key][seed] = run
    cells = []
    for (row, column), by_seed in buckets.items():
        seeds = [run for _, run in sorted(by_seed.items())]
        values = {m: np.array([r.metrics[m] for r in seeds], dtype=float) for m in spec.metrics}
        cells.append(Cell(row, column, seeds, values))
    return Grouping(cells, varying, superseded)


def column_order(values: Iterable[str], known: Sequence[str]) -> list[str]:
    """Known values in their given order, then numbers ascending, then the rest alphabetically."""

    def key(v: str) -> tuple:
        if v in known:
            return (0, known.index(v), 0.0, v)
        try:
            return (1, 0, float(v), v)
        except ValueError:
            return (2, 0, 0.0, v)

    return sorted(set(values), key=key)
