"""The reproduction tables: runs in, the seed's tables out, published values beside, verdicts.

Pure Python + pandas/scipy (matplotlib only for the plots): no MLflow. ``training/compare.py``
reads the runs from a tracking store and hands them here as :class:`Run` records, so the same
functions serve a notebook that builds runs by hand.

What each table reads (the run schema in the README):

* **Table 1** (tag ``shapebias.task=train_resnet``): params ``model_spec``, ``sparsity``,
  ``stem_stride``, ``dataset``, ``seed``; metrics ``test_acc``, ``stylized_acc`` (fractions).
  A row per model spec x sparsity (x stem stride, and x any other parameter, where it varies),
  a column per dataset; cells ``mean ± std (stylized mean ± std)`` in percent, std over seeds
  with n - 1, ``n=..`` shown where n is not 3.
* **Table 2a/2b** (``train_fastgan``): params ``dataset`` (or the folder name of ``data_dir``),
  ``sparsity``, ``topk``, ``noise_injection``; metric ``fid``. Table 2a holds the seed's four
  few-shot sets, 2b its two ImageNet class sets, others go to a third table.
* **Shape bias** (``shape_bias``): params ``model``, ``sparsity``, ``topk``; metric
  ``shape_bias``. Runs tagged ``shapebias.weights=random`` go to a separate table that is
  labelled as such and never compared with the published values.

A configuration is every parameter but the seed (and but paths and worker counts, which do
not change a result); runs of one configuration are the seeds of one cell.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shapebias import reference

ALPHA = 0.05
TEST_NAME = "Welch's t-test, one-sided"
ONE_SEED = "not testable, one seed"
WEIGHTS_TAG = "shapebias.weights"  # same name as shapebias.tracking.WEIGHTS_TAG (no MLflow import here)
PARENT_TAG = "mlflow.parentRunId"

# Parameters that never make two runs different configurations.
IGNORED_PARAMS = frozenset({
    "seed", "data_dir", "stylized_dir", "class_list", "storage_path", "fid_weights", "num_workers",
    "output_dir", "weights", "sweep",
})
# Parameters that mean nothing for a dense model (sparsity none): blanked before grouping.
SPARSITY_ONLY_PARAMS = ("topk", "topk_layers")

TABLE1_DATASETS = ("IN-S1", "IN-S2", "IN-S3", "IN-S4", "synthetic")
TABLE2A_DATASETS = ("jeep", "fish", "train", "table")
TABLE2B_DATASETS = ("IN-S1-C5", "IN-S3-C1")
SPEC_LABEL = {"code": "CS", "paper": "PS"}
RESNET_SPARSITY_LABEL = {"none": "", "topk": " w. Top-K", "topk_mean": " w. Top-K Mean Rpl."}
GAN_SPARSITY_LABEL = {"none": "Baseline", "topk": "Top K", "topk_mean": "Top K Mean Rpl."}


# --- runs --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One tracked run, as the compare step sees it."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    status: str = "FINISHED"
    experiment: str = ""
    start_time: int = 0
    run_name: str = ""

    @property
    def task(self) -> str:
        return self.tags.get("shapebias.task", "")

    @property
    def random_weights(self) -> bool:
        return self.tags.get(WEIGHTS_TAG, "") == "random"


@functools.lru_cache(maxsize=65536)
def _norm(s: str) -> str:
    if s.lower() in ("true", "false"):
        return s.lower()
    try:
        f = float(s)
    except ValueError:
        return s
    if math.isfinite(f) and f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return format(f, ".10g")


def norm(value: Any) -> str:
    """A parameter value in canonical form: "2", "2.0" -> "2"; "True" -> "true"; "0.20" -> "0.2"."""
    return _norm(str(value).strip())


def dataset_of(params: Mapping[str, str]) -> str:
    """The ``dataset`` param, else the folder name of ``data_dir`` (FastGAN runs)."""
    if params.get("dataset"):
        return params["dataset"]
    data_dir = params.get("data_dir", "").rstrip("/\\")
    return data_dir.replace("\\", "/").rsplit("/", 1)[-1] if data_dir else ""


@dataclasses.dataclass
class LeftOut:
    run_id: str
    experiment: str
    task: str
    status: str
    reason: str


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """Which runs a table reads and how it groups them."""

    name: str
    task: str
    required_params: tuple[str, ...]
    metrics: tuple[str, ...]
    row_params: tuple[str, ...]   # always part of the row key, in this order
    col_param: str                # one column per value (dataset, topk level)
    ignored: frozenset[str] = IGNORED_PARAMS


TABLE1 = TableSpec("table1", "train_resnet", ("model_spec", "sparsity", "stem_stride", "dataset", "seed"),
                   ("test_acc", "stylized_acc"), ("model_spec", "sparsity", "stem_stride"), "dataset")
TABLE2 = TableSpec("table2", "train_fastgan", ("sparsity", "noise_injection", "dataset"),
                   ("fid",), ("sparsity", "topk", "noise_injection"), "dataset")
SHAPE_BIAS = TableSpec("shape_bias", "shape_bias", ("model", "sparsity", "topk"), ("shape_bias",),
                       ("model", "sparsity"), "topk", IGNORED_PARAMS | {"batch_size"})
SPECS = {s.task: s for s in (TABLE1, TABLE2, SHAPE_BIAS)}


def _params(run: Run, spec: TableSpec) -> dict[str, str]:
    p = {k: norm(v) for k, v in run.params.items()}
    if spec.task == "train_fastgan":
        p["dataset"] = dataset_of(run.params)
        p.setdefault("topk", "")
    if p.get("sparsity") == "none":
        for k in SPARSITY_ONLY_PARAMS:
            if k in p and not (spec.task == "shape_bias" and k == "topk"):
                p[k] = ""
    return p


def select(runs: Iterable[Run]) -> tuple[dict[str, list[Run]], list[LeftOut], list[str]]:
    """Sort runs into the tables (by task tag); every run that no table uses is listed with why."""
    runs = list(runs)
    parents = {r.tags.get(PARENT_TAG) for r in runs if r.tags.get(PARENT_TAG)}
    by_table: dict[str, list[Run]] = defaultdict(list)
    left: list[LeftOut] = []
    notes: list[str] = []

    def out(r: Run, why: str) -> None:
        left.append(LeftOut(r.run_id, r.experiment, r.task or "-", r.status, why))

    for r in runs:
        spec = SPECS.get(r.task)
        if spec is None:
            out(r, "no shapebias.task tag" if not r.task else f"task {r.task!r} feeds no table")
            continue
        if spec is SHAPE_BIAS and "shape_bias" not in r.metrics and (
            r.run_id in parents or "," in r.params.get("topk", "")
        ):
            out(r, "sweep parent run: its levels are its child runs")
            continue
        if r.status != "FINISHED":
            out(r, f"status {r.status} (only FINISHED runs count)")
            continue
        p = _params(r, spec)
        missing_p = [k for k in spec.required_params if not p.get(k)]
        missing_m = [k for k in spec.metrics if k not in r.metrics or not math.isfinite(r.metrics[k])]
        if missing_p or missing_m:
            what = []
            if missing_p:
                what.append("param " + ", ".join(missing_p))
            if missing_m:
                what.append("metric " + ", ".join(missing_m))
            out(r, "missing " + "; ".join(what))
            continue
        by_table[spec.name].append(r)
    tasks = sorted({r.task or "-" for r in runs})
    if len(tasks) > 1:
        notes.append(f"runs of several tasks are mixed ({', '.join(tasks)}): each table reads its own task")
    return by_table, left, notes


# --- cells -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Cell:
    """The runs (one per seed) of one configuration."""

    row: tuple[tuple[str, str], ...]
    col: str
    runs: list[Run]
    values: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.runs)

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values[metric]))

    def std(self, metric: str) -> float:
        v = self.values[metric]
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def group(runs: Sequence[Run], spec: TableSpec) -> tuple[list[Cell], list[str], list[LeftOut]]:
    """Cells of one table; the row key gains every parameter that varies across the table's runs.

    Two runs of one configuration and one seed: the later one counts, the other is listed.
    """
    params = [_params(r, spec) for r in runs]
    keys = sorted({k for p in params for k in p} - spec.ignored - set(spec.row_params) - {spec.col_param})

    def counts(p: dict, k: str) -> bool:  # a dense run's Top-K settings say nothing
        return not (p.get("sparsity") == "none" and k in SPARSITY_ONLY_PARAMS and spec.task != "shape_bias")

    varying = [k for k in keys if len({p.get(k, "") for p in params if counts(p, k)}) > 1]
    row_keys = list(spec.row_params) + varying
    buckets: dict[tuple, dict[str, tuple[Run, dict]]] = defaultdict(dict)
    superseded: list[LeftOut] = []
    for run, p in sorted(zip(runs, params), key=lambda rp: rp[0].start_time):
        row = tuple((k, p.get(k, "")) for k in row_keys)
        key = (row, p.get(spec.col_param, ""))
        seed = p.get("seed", "") if spec.task != "shape_bias" else ""
        if seed in buckets[key]:
            old = buckets[key][seed][0]
            superseded.append(LeftOut(old.run_id, old.experiment, old.task, old.status,
                                      f"same configuration and seed as the later run {run.run_id}"))
        buckets[key][seed] = (run, p)
    cells = []
    for (row, col), by_seed in buckets.items():
        rs = [rp[0] for _, rp in sorted(by_seed.items())]
        cells.append(Cell(row, col, rs, {m: np.array([r.metrics[m] for r in rs], dtype=float) for m in spec.metrics}))
    return cells, varying, superseded


def _col_order(values: Iterable[str], known: Sequence[str]) -> list[str]:
    def key(v: str):
        if v in known:
            return (0, known.index(v), 0.0, v)
        try:
            return (1, 0, float(v), v)
        except ValueError:
            return (2, 0, 0.0, v)
    return sorted(set(values), key=key)


# --- formatting --------------------------------------------------------------------------------

def pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:.1f}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.3g}"


def signed(x: float, digits: int = 1) -> str:
    if not math.isfinite(x):
        return "–"
    s = f"{x:+.{digits}f}"
    return s.replace("-0." + "0" * digits, "+0." + "0" * digits) if set(s[1:]) <= {"0", "."} else s


def acc_cell(cell: Cell) -> str:
    """``88.4 ± 0.3 (67.2 ± 1.8)``; ``n=2`` appended where n is not 3; one seed: no ±."""
    if cell.n == 1:
        text = f"{pct(cell.mean('test_acc'))} ({pct(cell.mean('stylized_acc'))})"
    else:
        text = (f"{pct(cell.mean('test_acc'))} ± {pct(cell.std('test_acc'))} "
                f"({pct(cell.mean('stylized_acc'))} ± {pct(cell.std('stylized_acc'))})")
    return text if cell.n == 3 else f"{text} n={cell.n}"


def fid_cell(cell: Cell) -> str:
    """``50.65`` for one run (the seed's Table 2); ``50.65 ± 1.20 n=3`` for several."""
    if cell.n == 1:
        return f"{cell.mean('fid'):.2f}"
    return f"{cell.mean('fid'):.2f} ± {cell.std('fid'):.2f} n={cell.n}"


def sb_cell(cell: Cell) -> str:
    if cell.n == 1:
        return pct(cell.mean("shape_bias"))
    return f"{pct(cell.mean('shape_bias'))} ± {pct(cell.std('shape_bias'))} n={cell.n}"


def _extra(row: Mapping[str, str], shown: Iterable[str]) -> str:
    rest = [f"{k}={v or '–'}" for k, v in row.items() if k not in shown]
    return f" [{', '.join(rest)}]" if rest else ""


def resnet_label(row: Mapping[str, str], varying: Sequence[str]) -> str:
    spec = row["model_spec"]
    label = f"{SPEC_LABEL.get(spec, spec)} ResNet-18{RESNET_SPARSITY_LABEL.get(row['sparsity'], ' w. ' + row['sparsity'])}"
    if "stem_stride" in varying:
        label += f" (stride {row['stem_stride']})"
    return label + _extra(row, {"model_spec", "sparsity", "stem_stride"})


def gan_label(row: Mapping[str, str], topk_varies: bool) -> str:
    label = GAN_SPARSITY_LABEL.get(row["sparsity"], row["sparsity"])
    if row["sparsity"] != "none" and topk_varies and row.get("topk"):
        label += f"={_num(row['topk']) * 100:g}" if math.isfinite(_num(row["topk"])) else f"={row['topk']}"
    if row.get("noise_injection") == "true":
        label += " + Noise"
    return label + _extra(row, {"sparsity", "topk", "noise_injection"})


def _num(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def level_label(topk: str) -> str:
    try:
        return f"{float(topk) * 100:g}%"
    except ValueError:
        return topk or "–"


# --- report structure --------------------------------------------------------------------------

@dataclasses.dataclass
class Section:
    key: str                 # file stem for CSV
    title: str
    table: pd.DataFrame      # display strings
    data: pd.DataFrame | None = None  # numbers for the CSV (defaults to ``table``)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Report:
    sections: list[Section]
    verdicts: pd.DataFrame
    left_out: pd.DataFrame
    notes: list[str]
    plots: dict[str, bytes]
    n_runs: int

    @property
    def built(self) -> list[str]:
        return [s.key for s in self.sections]


VERDICT_COLUMNS = ["claim", "scope", "metric", "n (claim)", "n (baseline)", "mean (claim)", "mean (baseline)",
                   "difference", "test", "p", "verdict", "published difference"]


@dataclasses.dataclass
class Claim:
    text: str
    metric: str
    direction: str  # "greater": claimed group higher; "less": lower
    unit: str       # "pp" (percentage points of a fraction) or "" (FID)


CLAIM_TOPK_STYLIZED = Claim("Top-K raises stylized accuracy over the dense baseline", "stylized_acc", "greater", "pp")
CLAIM_TOPK_CLEAN = Claim("Top-K raises clean accuracy over the dense baseline", "test_acc", "greater", "pp")
CLAIM_MEAN_STYLIZED = Claim("Top-K mean replacement beats the baseline on stylized images", "stylized_acc",
                            "greater", "pp")
CLAIM_FID = Claim("Top-K lowers FID", "fid", "less", "")
CLAIM_NOISE = Claim("Noise injection lowers FID further with Top-K", "fid", "less", "")
CLAIM_SB = Claim("Top-K at inference raises shape bias over the dense model", "shape_bias", "greater", "pp")
CLAIM_SB_TREND = Claim("Shape bias rises as Top-K gets sparser (smaller k; dense = k 1)", "shape_bias", "greater", "")


def welch(a: np.ndarray, b: np.ndarray, direction: str) -> tuple[str, float, str]:
    """(test, p, verdict) for "a is <direction> than b"; one seed in either group: no test."""
    diff = float(np.mean(a) - np.mean(b))
    as_claimed = diff > 0 if direction == "greater" else diff < 0
    if len(a) < 2 or len(b) < 2:
        return "none", float("nan"), f"{ONE_SEED} ({'direction as claimed' if as_claimed else 'opposite direction'})"
    if np.std(a) == 0 and np.std(b) == 0:
        return "none", float("nan"), "not testable, no variance between seeds"
    p = welch_p(a, b, direction)
    if p < ALPHA:
        return TEST_NAME, p, "holds"
    if as_claimed:
        return TEST_NAME, p, "not significant (direction as claimed)"
    p_other = welch_p(a, b, "less" if direction == "greater" else "greater")
    return TEST_NAME, p, "contradicted (significant the other way)" if p_other < ALPHA else "does not hold"


def welch_p(a: np.ndarray, b: np.ndarray, direction: str) -> float:
    """One-sided p-value of Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom).

    The same number as ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=direction)``
    (a test checks this), without its per-call overhead: the compare step runs hundreds.
    """
    from scipy.special import stdtr

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se2 = va + vb
    t = (np.mean(a) - np.mean(b)) / math.sqrt(se2)
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(stdtr(df, -t) if direction == "greater" else stdtr(df, t))


def verdict_row(claim: Claim, scope: str, a: Cell | None, b: Cell | None, published_diff: float) -> dict:
    scale = 100.0 if claim.unit == "pp" else 1.0
    unit = f" {claim.unit}" if claim.unit else ""
    row = {"claim": claim.text, "scope": scope, "metric": claim.metric,
           "published difference": "–" if not math.isfinite(published_diff) else f"{signed(published_diff, 2 if not unit else 1)}{unit}"}
    if a is None or b is None:
        row.update({"n (claim)": a.n if a else 0, "n (baseline)": b.n if b else 0, "mean (claim)": "–",
                    "mean (baseline)": "–", "difference": "–", "test": "none", "p": "–",
                    "verdict": "no runs for " + ("the claim" if a is None else "the baseline")})
        return row
    va, vb = a.values[claim.metric], b.values[claim.metric]
    test, p, verdict = welch(va, vb, claim.direction)
    digits = 1 if unit else 2
    row.update({"n (claim)": a.n, "n (baseline)": b.n, "mean (claim)": f"{np.mean(va) * scale:.{digits}f}",
                "mean (baseline)": f"{np.mean(vb) * scale:.{digits}f}",
                "difference": f"{signed((np.mean(va) - np.mean(vb)) * scale, digits)}{unit}",
                "test": test, "p": fmt_p(p), "verdict": verdict})
    return row


# --- Table 1 -----------------------------------------------------------------------------------

def _by(cells: Sequence[Cell]) -> dict[tuple, Cell]:
    return {(c.row, c.col): c for c in cells}


def table1(runs: Sequence[Run]) -> tuple[list[Section], list[dict], list[LeftOut], dict[str, Any]]:
    cells, varying, superseded = group(runs, TABLE1)
    cols = _col_order((c.col for c in cells), TABLE1_DATASETS)
    rows = sorted({c.row for c in cells}, key=lambda r: (
        ["code", "paper"].index(dict(r)["model_spec"]) if dict(r)["model_spec"] in ("code", "paper") else 9,
        dict(r)["model_spec"], r[2:], ["none", "topk", "topk_mean"].index(dict(r)["sparsity"])
        if dict(r)["sparsity"] in ("none", "topk", "topk_mean") else 9, dict(r)["sparsity"]))
    index = _by(cells)
    shown_varying = list(varying) + (["stem_stride"] if len({dict(r)["stem_stride"] for r in rows}) > 1 else [])
    labels = {r: resnet_label(dict(r), shown_varying) for r in rows}
    wide = pd.DataFrame([[labels[r]] + [acc_cell(index[(r, c)]) if (r, c) in index else "–" for c in cols]
                         for r in rows], columns=["Model", *cols])
    pub = reference.load("seed_table1")
    pub_index = {(p.model_spec, p.sparsity, norm(p.stem_stride), p.dataset): p for p in pub.itertuples()}
    long, data = [], []
    for r in rows:
        d = dict(r)
        for c in cols:
            cell = index.get((r, c))
            if cell is None:
                continue
            p = pub_index.get((d["model_spec"], d["sparsity"], d["stem_stride"], c))
            published = (f"{p.test_acc_mean:.1f} ± {p.test_acc_std:.1f} ({p.stylized_acc_mean:.1f} ± "
                         f"{p.stylized_acc_std:.1f})") if p else "–"
            dt = cell.mean("test_acc") * 100 - p.test_acc_mean if p else float("nan")
            ds = cell.mean("stylized_acc") * 100 - p.stylized_acc_mean if p else float("nan")
            long.append({"Model": labels[r], "dataset": c, "n": cell.n, "reproduced": acc_cell(cell),
                         "published": published, "Δ clean (pp)": signed(dt), "Δ stylized (pp)": signed(ds)})
            data.append({"setting": labels[r], **d, "dataset": c, "n": cell.n,
                         "seeds": ",".join(norm(x.params.get("seed", "")) for x in cell.runs),
                         "test_acc_mean": cell.mean("test_acc"), "test_acc_std": cell.std("test_acc"),
                         "stylized_acc_mean": cell.mean("stylized_acc"), "stylized_acc_std": cell.std("stylized_acc"),
                         "published_test_acc_mean": p.test_acc_mean / 100 if p else None,
                         "published_test_acc_std": p.test_acc_std / 100 if p else None,
                         "published_stylized_acc_mean": p.stylized_acc_mean / 100 if p else None,
                         "published_stylized_acc_std": p.stylized_acc_std / 100 if p else None,
                         "run_ids": ",".join(x.run_id for x in cell.runs)})
    notes = ["Top-1 accuracy (%), mean ± std over seeds (std with n - 1), stylized accuracy in parentheses; "
             "n shown where it is not 3."]
    if varying:
        notes.append("parameters that vary between runs and so split rows: " + ", ".join(varying))
    sections = [
        Section("table1", "Table 1: ResNet-18 top-1 accuracy (%), stylized in parentheses", wide,
                pd.DataFrame(data), notes),
        Section("table1_vs_published", "Table 1 beside the published values (Rungseesiripak et al., Table 1)",
                pd.DataFrame(long), None, ["Δ = reproduced mean − published mean, in percentage points."]),
    ]
    verdicts = []
    def rest(r: tuple) -> tuple:
        return tuple((k, v) for k, v in r if k != "sparsity" and k not in SPARSITY_ONLY_PARAMS)

    bases = {rest(r): r for r in rows if dict(r)["sparsity"] == "none"}
    claims_of = {"topk": (CLAIM_TOPK_STYLIZED, CLAIM_TOPK_CLEAN), "topk_mean": (CLAIM_MEAN_STYLIZED,)}
    for claim in (CLAIM_TOPK_STYLIZED, CLAIM_TOPK_CLEAN, CLAIM_MEAN_STYLIZED):
        for r in rows:
            d = dict(r)
            if claim not in claims_of.get(d["sparsity"], ()):
                continue
            base = bases.get(rest(r))
            for c in cols:
                a = index.get((r, c))
                if a is None:
                    continue
                b = index.get((base, c)) if base else None
                pa = pub_index.get((d["model_spec"], d["sparsity"], d["stem_stride"], c))
                pb = pub_index.get((d["model_spec"], "none", d["stem_stride"], c))
                key = claim.metric + "_mean"
                pdiff = getattr(pa, key) - getattr(pb, key) if pa and pb else float("nan")
                verdicts.append(verdict_row(claim, f"{labels[r]}, {c}", a, b, pdiff))
    plot_data = {"cells": cells, "labels": labels, "cols": cols, "pub": pub_index}
    return sections, verdicts, superseded, plot_data


# --- Table 2 -----------------------------------------------------------------------------------

def table2(runs: Sequence[Run]) -> tuple[list[Section], list[dict], list[LeftOut], dict[str, Any]]:
    cells, varying, superseded = group(runs, TABLE2)
    pub = pd.concat([reference.load("seed_table2a").assign(table="2a"),
                     reference.load("seed_table2b").assign(table="2b")], ignore_index=True)
    pub_fid = {(p.dataset, p.sparsity, norm(p.noise_injection), norm(p.topk) if p.topk else ""): float(p.fid)
               for p in pub.itertuples()}
    groups = [("table2a", "Table 2a: FastGAN FID on the seed's few-shot sets", TABLE2A_DATASETS),
              ("table2b", "Table 2b: FastGAN FID on the seed's new ImageNet class sets", TABLE2B_DATASETS),
              ("table2_other", "Table 2 (other data sets): FastGAN FID", None)]
    known = set(TABLE2A_DATASETS) | set(TABLE2B_DATASETS)
    sections, verdicts, plot_rows = [], [], []
    for key, title, datasets in groups:
        sub = [c for c in cells if (c.col in datasets if datasets else c.col not in known)]
        if not sub:
            continue
        cols = _col_order((c.col for c in sub), datasets or ())
        topk_varies = len({dict(c.row).get("topk") for c in sub if dict(c.row)["sparsity"] != "none"}) > 1
        rows = sorted({c.row for c in sub}, key=lambda r: (
            dict(r)["sparsity"] != "none", dict(r)["sparsity"], _num(dict(r)["topk"]),
            dict(r)["noise_injection"], r))
        labels = {r: gan_label(dict(r), topk_varies) for r in rows}
        index = _by(sub)
        wide = pd.DataFrame([[labels[r]] + [fid_cell(index[(r, c)]) if (r, c) in index else "–" for c in cols]
                             for r in rows], columns=["Model (FastGAN)", *cols])

        def published(row: Mapping[str, str], dataset: str) -> float:
            """The published FID of this setting: same sparsity and noise, same k (or the seed's unstated k)."""
            noise = row.get("noise_injection") or "false"
            topk = row.get("topk", "") if row["sparsity"] != "none" else ""
            for k in (topk, ""):
                if (dataset, row["sparsity"], noise, k) in pub_fid:
                    return pub_fid[(dataset, row["sparsity"], noise, k)]
            return float("nan")

        long, data = [], []
        for r in rows:
            d = dict(r)
            for c in cols:
                cell = index.get((r, c))
                if cell is None:
                    continue
                p = published(d, c)
                long.append({"Model (FastGAN)": labels[r], "dataset": c, "n": cell.n, "reproduced": fid_cell(cell),
                             "published": "–" if math.isnan(p) else f"{p:.2f}",
                             "Δ FID": signed(cell.mean("fid") - p, 2)})
                data.append({"setting": labels[r], **d, "dataset": c, "n": cell.n, "fid_mean": cell.mean("fid"),
                             "fid_std": cell.std("fid"), "published_fid": None if math.isnan(p) else p,
                             "run_ids": ",".join(x.run_id for x in cell.runs)})
                plot_rows.append((labels[r], c, cell.mean("fid"), p))
        notes = ["FID (lower is better); one run per cell as in the seed, mean ± std and n where there are several."]
        if varying:
            notes.append("parameters that vary between runs and so split rows: " + ", ".join(varying))
        sections.append(Section(key, title, wide, pd.DataFrame(data), notes))
        sections.append(Section(f"{key}_vs_published", f"{title.split(':')[0]} beside the published values",
                                pd.DataFrame(long), None, ["Δ = reproduced − published FID."]))
        # claims: Top-K vs baseline, Top-K + noise vs Top-K (same other params)
        for r in rows:
            d = dict(r)
            if d["sparsity"] != "topk":
                continue
            rest = {k: v for k, v in d.items() if k not in ("sparsity", "topk", "noise_injection")}
            def find(**want: str) -> tuple | None:
                for q in rows:
                    dq = dict(q)
                    if all(dq.get(k) == v for k, v in {**rest, **want}.items()):
                        return q
                return None
            if d["noise_injection"] != "true":
                base, claim = find(sparsity="none", noise_injection=d["noise_injection"]), CLAIM_FID
            else:
                base, claim = find(sparsity="topk", topk=d["topk"], noise_injection="false"), CLAIM_NOISE
            if base is None:
                continue
            for c in cols:
                a, b = index.get((r, c)), index.get((base, c))
                if a is None and b is None:
                    continue
                pdiff = published(d, c) - published(dict(base), c)
                verdicts.append(verdict_row(claim, f"{labels[r]} vs {labels[base]}, {c}", a, b, pdiff))
    return sections, verdicts, superseded, {"rows": plot_rows}


# --- shape bias --------------------------------------------------------------------------------

def shape_bias_tables(runs: Sequence[Run]) -> tuple[list[Section], list[dict], list[LeftOut], dict[str, Any]]:
    sections, verdicts, superseded_all = [], [], []
    pub = reference.load("li2023_shape_bias")
    pub = pub[pub.reproduces == "true"]
    pub_index = {(p.model, p.sparsity, norm(p.topk)): float(p.shape_bias) for p in pub.itertuples()}
    plot: dict[str, Any] = {"real": [], "random": [], "published": pub_index}
    for random_weights in (False, True):
        subset = [r for r in runs if r.random_weights == random_weights]
        if not subset:
            continue
        cells, varying, superseded = group(subset, SHAPE_BIAS)
        superseded_all += superseded
        cols = _col_order((c.col for c in cells), ())
        rows = sorted({c.row for c in cells}, key=lambda r: (dict(r)["model"], ["none", "topk", "complement"].index(
            dict(r)["sparsity"]) if dict(r)["sparsity"] in ("none", "topk", "complement") else 9, r))
        index = _by(cells)
        tag = " (RANDOM WEIGHTS: not a reproduction)" if random_weights else ""
        label = {r: f"{dict(r)['model']} {dict(r)['sparsity']}{_extra(dict(r), {'model', 'sparsity'})}" for r in rows}
        wide = pd.DataFrame([[label[r]] + [sb_cell(index[(r, c)]) if (r, c) in index else "–" for c in cols]
                             for r in rows], columns=["model / sparsity", *(level_label(c) for c in cols)])
        long, data = [], []
        for r in rows:
            d = dict(r)
            for c in cols:
                cell = index.get((r, c))
                if cell is None:
                    continue
                p = float("nan") if random_weights else pub_index.get((d["model"], d["sparsity"], c), float("nan"))
                long.append({"model": d["model"], "sparsity": d["sparsity"], "topk": level_label(c), "n": cell.n,
                             "reproduced": sb_cell(cell), "published": pct(p),
                             "Δ (pp)": signed((cell.mean("shape_bias") - p) * 100)})
                data.append({**d, "topk": c, "n": cell.n, "shape_bias_mean": cell.mean("shape_bias"),
                             "shape_bias_std": cell.std("shape_bias"), "random_weights": random_weights,
                             "published_shape_bias": None if math.isnan(p) else p,
                             "run_ids": ",".join(x.run_id for x in cell.runs)})
                plot["random" if random_weights else "real"].append((d["model"], d["sparsity"], c, cell.mean("shape_bias")))
        notes = ["Shape bias (%) on the cue-conflict set, by model and Top-K level (fraction of activations kept)."]
        if random_weights:
            notes.append("These runs used random weights (tag shapebias.weights=random): a pipeline check, "
                         "never compared with the published values.")
        else:
            notes.append("Published: Li et al. (NeurIPS 2023) raw decisions, scored with model-vs-human's rule.")
        if varying:
            notes.append("parameters that vary between runs and so split rows: " + ", ".join(varying))
        key = "shape_bias_random_weights" if random_weights else "shape_bias"
        sections.append(Section(key, f"Shape bias{tag}", wide, pd.DataFrame(data), notes))
        if not random_weights:
            sections.append(Section("shape_bias_vs_published", "Shape bias beside the published values (Li et al. 2023)",
                                    pd.DataFrame(long), None, ["Δ = reproduced − published, percentage points."]))
            verdicts += _shape_bias_verdicts(rows, cols, index, pub_index)
    return sections, verdicts, superseded_all, plot


def spearman(x: Sequence[float], y: Sequence[float], direction: str) -> tuple[float, float]:
    """Spearman's rho (ties averaged) and its one-sided p-value from the t approximation.

    The same numbers as ``scipy.stats.spearmanr(x, y, alternative=direction)`` (a test checks
    this) without importing scipy.stats, which alone takes seconds.
    """
    from scipy.special import stdtr

    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    rho = float(np.corrcoef(rx, ry)[0, 1])
    n = len(rx)
    if abs(rho) >= 1.0:
        p_less = 0.0 if rho < 0 else 1.0
    else:
        t = rho * math.sqrt((n - 2) / ((1 - rho) * (1 + rho)))
        p_less = float(stdtr(n - 2, t))
    return rho, (p_less if direction == "less" else 1.0 - p_less)


def _shape_bias_verdicts(rows, cols, index, pub_index) -> list[dict]:
    out = []
    for r in rows:
        d = dict(r)
        if d["sparsity"] != "topk":
            continue
        base = next((q for q in rows if dict(q)["sparsity"] == "none"
                     and all(dict(q).get(k) == v for k, v in d.items() if k != "sparsity")), None)
        dense = [index[(base, c)] for c in cols if base is not None and (base, c) in index]
        b = dense[0] if dense else None
        for c in cols:
            a = index.get((r, c))
            if a is None:
                continue
            pdiff = pub_index.get((d["model"], "topk", c), float("nan")) - pub_index.get((d["model"], "none", "1"), float("nan"))
            out.append(verdict_row(CLAIM_SB, f"{d['model']}, k={level_label(c)}", a, b, pdiff * 100))
        # the dense model is the level k = 1 (all activations kept)
        levels = [(float(c), index[(r, c)].mean("shape_bias")) for c in cols if (r, c) in index]
        levels += [(1.0, b.mean("shape_bias"))] if b is not None and all(k != 1.0 for k, _ in levels) else []
        pub_levels = [(float(k), v) for (m, s, k), v in pub_index.items()
                      if m == d["model"] and s in ("topk", "none")]
        row = {"claim": CLAIM_SB_TREND.text, "scope": d["model"], "metric": "shape_bias",
               "n (claim)": len(levels), "n (baseline)": "–", "mean (claim)": "–", "mean (baseline)": "–"}
        if len(levels) < 3:
            row.update({"difference": "–", "test": "none", "p": "–",
                        "verdict": f"not testable, {len(levels)} level(s) (needs 3)"})
        else:
            ks, vs = zip(*sorted(levels))
            rho, p = spearman(ks, vs, "less")  # smaller k, higher shape bias
            row.update({"difference": f"rho={rho:+.2f}", "test": "Spearman rank correlation, one-sided", "p": fmt_p(p),
                        "verdict": "holds" if p < ALPHA else ("not significant (direction as claimed)"
                                                               if rho < 0 else "does not hold")})
        if len(pub_levels) >= 3:
            pk, pv = zip(*sorted(pub_levels))
            row["published difference"] = f"rho={spearman(pk, pv, 'less')[0]:+.2f}"
        else:
            row["published difference"] = "–"
        out.append(row)
    return out


# --- the whole report --------------------------------------------------------------------------

BUILDERS: dict[str, Callable] = {"table1": table1, "table2": table2, "shape_bias": shape_bias_tables}


def build_report(runs: Iterable[Run], plots: bool = True) -> Report:
    runs = list(runs)
    by_table, left, notes = select(runs)
    sections: list[Section] = []
    verdicts: list[dict] = []
    plot_data: dict[str, Any] = {}
    for name, builder in BUILDERS.items():
        if not by_table.get(name):
            continue
        secs, verds, superseded, pdata = builder(by_table[name])
        sections += secs
        verdicts += verds
        left += superseded
        plot_data[name] = pdata
    verdict_df = pd.DataFrame(verdicts, columns=VERDICT_COLUMNS)
    left_df = pd.DataFrame([dataclasses.asdict(x) for x in left],
                           columns=["run_id", "experiment", "task", "status", "reason"])
    return Report(sections, verdict_df, left_df, notes, make_plots(plot_data) if plots else {}, len(runs))


def claim_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per claim: in how many cells it holds, is not significant, is contradicted, is untestable."""
    rows = []
    for claim, g in verdicts.groupby("claim", sort=False):
        v = g["verdict"]
        rows.append({"claim": claim, "cells": len(g), "holds": int((v == "holds").sum()),
                     "not significant": int(v.str.startswith("not significant").sum()),
                     "does not hold / contradicted": int(v.str.startswith(("does not", "contradicted")).sum()),
                     "not testable": int(v.str.startswith(("not testable", "no runs")).sum())})
    return pd.DataFrame(rows, columns=["claim", "cells", "holds", "not significant",
                                       "does not hold / contradicted", "not testable"])


# --- plots -------------------------------------------------------------------------------------

def make_plots(data: Mapping[str, Any]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}

    def save(fig, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out[name] = buf.getvalue()

    if "table1" in data:
        d = data["table1"]
        cells = {(x.row, x.col): x for x in d["cells"]}
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, metric, title in zip(axes, ("test_acc", "stylized_acc"), ("clean", "stylized")):
            rows = list(d["labels"])
            width = 0.8 / max(1, len(rows))
            for i, r in enumerate(rows):
                xs, ys, es = [], [], []
                for j, c in enumerate(d["cols"]):
                    cell = cells.get((r, c))
                    if cell is not None:
                        xs.append(j + i * width)
                        ys.append(cell.mean(metric) * 100)
                        es.append(0 if cell.n < 2 else cell.std(metric) * 100)
                ax.bar(xs, ys, width, yerr=es, label=d["labels"][r], capsize=2)
                rd = dict(r)
                for j, c in enumerate(d["cols"]):
                    p = d["pub"].get((rd["model_spec"], rd["sparsity"], rd["stem_stride"], c))
                    if p is not None:
                        ax.plot(j + i * width, getattr(p, metric + "_mean"), "k_", markersize=10)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(d["cols"]))], d["cols"])
            ax.set_title(f"Table 1, {title} accuracy (black ticks: published)")
            ax.set_ylabel("top-1 accuracy (%)")
        axes[0].legend(fontsize=7)
        save(fig, "table1.png")
    if "table2" in data and data["table2"]["rows"]:
        rows = data["table2"]["rows"]
        fig, ax = plt.subplots(figsize=(9, 4))
        xlabels = [f"{label}\n{ds}" for label, ds, _, _ in rows]
        ax.bar(range(len(rows)), [r[2] for r in rows], label="reproduced")
        ax.plot(range(len(rows)), [r[3] for r in rows], "k_", markersize=14, label="published")
        ax.set_xticks(range(len(rows)), xlabels, fontsize=6, rotation=90)
        ax.set_ylabel("FID")
        ax.set_title("Table 2: FastGAN FID")
        ax.legend()
        save(fig, "table2.png")
    if "shape_bias" in data:
        d = data["shape_bias"]
        models = sorted({m for m, *_ in d["real"] + d["random"]} | {"alexnet", "vgg16"})
        models = [m for m in models if any(x[0] == m for x in d["real"] + d["random"])]
        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
        for ax, model in zip(axes[0], models):
            for sparsity, colour in (("topk", "tab:red"), ("complement", "tab:blue"), ("none", "tab:gray")):
                pub = sorted((float(k), v) for (m, s, k), v in d["published"].items() if m == model and s == sparsity)
                if pub:
                    ax.plot(*zip(*pub), "--o", color=colour, alpha=0.5, label=f"{sparsity}, published")
                for kind, style in (("real", "-s"), ("random", ":x")):
                    pts = sorted((float(k), v) for m, s, k, v in d[kind] if m == model and s == sparsity)
                    if pts:
                        ax.plot(*zip(*pts), style, color=colour,
                                label=f"{sparsity}, reproduced" + (" (RANDOM WEIGHTS)" if kind == "random" else ""))
            ax.set_xlabel("Top-K fraction kept")
            ax.set_ylabel("shape bias")
            ax.set_ylim(0, 1)
            ax.set_title(f"{model}: shape bias vs sparsity")
            ax.legend(fontsize=7)
        save(fig, "shape_bias.png")
    return out


# --- rendering ---------------------------------------------------------------------------------

def text_table(df: pd.DataFrame) -> str:
    """A plain aligned table (cells printed exactly as built)."""
    if df.empty:
        return "(empty)"
    cols = [str(c) for c in df.columns]
    cells = [[str(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(cols[i]), *(len(r[i]) for r in cells)) for i in range(len(cols))]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(empty)_"
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _all_sections(report: Report) -> list[Section]:
    extra = [
        Section("verdicts", "Verdicts per claim", report.verdicts, None, [
            f"Test: {TEST_NAME} in the claimed direction (Welch-Satterthwaite df); p < {ALPHA} = holds. "
            "Trend claim: Spearman's rank correlation of shape bias with k, one-sided. With one seed in either group "
            f"there is no test: '{ONE_SEED}' (the direction is still reported). 'published difference' is the "
            "same difference in the published table."]),
        Section("claims", "Claims: summary over cells", claim_summary(report.verdicts)),
        Section("left_out", "Runs left out (and why)", report.left_out),
    ]
    return report.sections + extra


def render_text(report: Report, header: Sequence[str] = ()) -> str:
    parts = [*header]
    parts += [f"note: {n}" for n in report.notes]
    for s in _all_sections(report):
        if s.key == "left_out" and s.table.empty:
            parts.append("\nAll runs were used.")
            continue
        parts.append(f"\n{s.title}\n{'=' * len(s.title)}")
        parts.append(text_table(s.table))
        parts += [f"  {n}" for n in s.notes]
    return "\n".join(parts) + "\n"


def render_markdown(report: Report, header: Sequence[str] = ()) -> str:
    parts = ["# Reproduction tables", "", *[f"{h}  " for h in header], ""]
    parts += [f"> note: {n}\n" for n in report.notes]
    for s in _all_sections(report):
        parts += [f"## {s.title}", "", markdown_table(s.table), ""]
        parts += [f"- {n}" for n in s.notes]
        parts.append("")
    for name in report.plots:
        parts.append(f"![{name}]({name})")
    return "\n".join(parts) + "\n"


def render_html(report: Report, header: Sequence[str] = ()) -> str:
    """One self-contained page: tables, notes and the plots inline as base64 PNG."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>shapebias: reproduction tables</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}"
             ".holds{background:#d9f2d9}.contradicted{background:#f6d3d3}</style></head><body>",
             "<h1>Reproduction tables</h1>"]
    parts += [f"<p>{html.escape(h)}</p>" for h in header]
    parts += [f"<p><em>note: {html.escape(n)}</em></p>" for n in report.notes]
    for s in _all_sections(report):
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        body = s.table.to_html(index=False, escape=True, na_rep="–", border=0)
        if s.key == "verdicts":
            body = body.replace("<td>holds</td>", "<td class='holds'>holds</td>").replace(
                "<td>contradicted", "<td class='contradicted'>contradicted")
        parts.append(body)
        parts += [f"<p>{html.escape(n)}</p>" for n in s.notes]
    for name, png in report.plots.items():
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(report: Report, out_dir, header: Sequence[str] = ()) -> list[str]:
    """tables.md, report.html, report.txt, one CSV per table, the plots; returns the file names."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("report.txt", render_text(report, header)), ("tables.md", render_markdown(report, header)),
                       ("report.html", render_html(report, header))):
        (out / name).write_text(text, encoding="utf-8")
        written.append(name)
    for s in _all_sections(report):
        (s.data if s.data is not None else s.table).to_csv(out / f"{s.key}.csv", index=False)
        written.append(f"{s.key}.csv")
    for name, png in report.plots.items():
        (out / name).write_bytes(png)
        written.append(name)
    return written
