"""Shape bias as model-vs-human (Geirhos et al.) computes it.

Shape bias = shape decisions / (shape decisions + texture decisions), over the trials whose
shape class differs from their texture class. Decisions that are neither cue do not count.

model-vs-human's result format is one CSV per decision maker and session::

    subj,session,trial,rt,object_response,category,condition,imagename

``object_response`` is the decision (one of the 16 categories, or ``na`` for a human who did not
answer), ``category`` the shape class, and the texture class is the last word of ``imagename``
(``airplane1-bicycle2.png`` or ``0001_s5n_s01_0_bird_00_bird3-bird2.png``: texture = bicycle,
bird), read with model-vs-human's rule (:func:`texture_category`). Column names are compared
case-insensitively, as model-vs-human lower-cases them on reading.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shapebias.errors import DataError

RESULT_COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")
DATASET_NAME = "cue-conflict"


def shape_bias_score(predicted: Sequence, shape: Sequence, texture: Sequence) -> float:
    """Fraction of shape decisions among shape-or-texture decisions (cue-conflict trials only).

    Returns NaN when no trial was decided by either cue.
    """
    if not (len(predicted) == len(shape) == len(texture)):
        raise ValueError("predicted, shape and texture must have the same length")
    n_shape = n_texture = 0
    for p, s, t in zip(predicted, shape, texture, strict=True):
        if s == t:
            continue
        if p == s:
            n_shape += 1
        elif p == t:
            n_texture += 1
    total = n_shape + n_texture
    return n_shape / total if total else float("nan")


def shape_bias_by_category(predicted: Sequence, shape: Sequence, texture: Sequence) -> dict[str, float]:
    """Shape bias per *shape* category (model-vs-human groups trials by ``category``).

    Keys are the shape categories that occur, in sorted order; NaN where a category has no
    shape-or-texture decision.
    """
    if not (len(predicted) == len(shape) == len(texture)):
        raise ValueError("predicted, shape and texture must have the same length")
    out = {}
    for cat in sorted(set(shape)):
        rows = [(p, s, t) for p, s, t in zip(predicted, shape, texture, strict=True) if s == cat]
        out[cat] = shape_bias_score(*zip(*rows, strict=True))
    return out


def cue_accuracies(predicted: Sequence, shape: Sequence, texture: Sequence) -> dict[str, float]:
    """Accuracy by shape and by texture over the cue-conflict trials (shape != texture).

    ``shape_acc`` + ``texture_acc`` is the fraction of conflict trials decided by either cue;
    ``accuracy_16`` is model-vs-human's 16-class accuracy (decision == shape) over all trials.
    """
    conflict = [(p, s, t) for p, s, t in zip(predicted, shape, texture, strict=True) if s != t]
    n = len(conflict)
    nan = float("nan")
    return {
        "shape_acc": sum(p == s for p, s, _ in conflict) / n if n else nan,
        "texture_acc": sum(p == t for p, _, t in conflict) / n if n else nan,
        "accuracy_16": sum(p == s for p, s in zip(predicted, shape, strict=True)) / len(shape) if len(shape) else nan,
    }


_DIGITS = re.compile(r"\d")


def texture_category(imagename: str) -> str:
    """The texture class in a cue-conflict image name, by model-vs-human's rule.

    Last ``_``-separated word, extension dropped, last ``-``-separated part, digits removed:
    ``0001_s5n_s01_0_bird_00_bird3-clock2.png`` -> ``clock``. Folders in the name are ignored.
    """
    if not isinstance(imagename, str):
        raise DataError(f"imagename {imagename!r} is not a file name")
    name = imagename.replace("\\", "/").rsplit("/", 1)[-1]
    word = name.split("_")[-1].split(".")[0].split("-")[-1]
    return _DIGITS.sub("", word)


def shape_category_of_name(imagename: str) -> str:
    """The shape class in a cue-conflict image name: ``airplane1-bicycle2.png`` -> ``airplane``."""
    name = imagename.replace("\\", "/").rsplit("/", 1)[-1]
    word = name.split("_")[-1].split(".")[0].split("-")[0]
    return _DIGITS.sub("", word)


# ----------------------------------------------------------------------------- result CSVs


def results_filename(subj: str, session: int = 1, dataset: str = DATASET_NAME) -> str:
    """model-vs-human's file name: ``cue-conflict_<subj, '_' -> '-'>_session-<n>.csv``."""
    return f"{dataset}_{subj.replace('_', '-')}_session-{session}.csv"


def write_results_csv(
    path: str | Path,
    subj: str,
    decisions: Sequence[str],
    categories: Sequence[str],
    imagenames: Sequence[str],
    *,
    session: int = 1,
    condition: str = "NaN",
) -> Path:
    """Write one decision maker's decisions in model-vs-human's result format.

    ``path`` may be a folder, in which case :func:`results_filename` names the file. Rows come
    in the order given (trial = 1, 2, ...); ``rt`` is ``NaN`` as for every model in
    model-vs-human.
    """
    if not (len(decisions) == len(categories) == len(imagenames)):
        raise ValueError("decisions, categories and imagenames must have the same length")
    path = Path(path)
    if path.is_dir():
        path = path / results_filename(subj, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RESULT_COLUMNS)
        for trial, (d, c, name) in enumerate(zip(decisions, categories, imagenames, strict=True), start=1):
            writer.writerow([subj, session, trial, "NaN", d, c, condition, name])
    return path


def read_results_csv(path: str | Path):
    """Read a model-vs-human result CSV into a pandas DataFrame (columns lower-cased).

    Raises DataError when the file is missing, empty or lacks one of the required columns.
    Decisions are read as text (``na`` stays a string, as in model-vs-human).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"result CSV {path} does not exist")
    try:
        df = pd.read_csv(
            path,
            dtype={"object_response": str, "category": str, "imagename": str, "subj": str},
            keep_default_na=False,
            na_values=[],
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV file: {exc}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} is not a model-vs-human result file: missing column(s) {', '.join(missing)}; "
            f"expected columns {','.join(RESULT_COLUMNS)}"
        )
    if len(df) == 0:
        raise DataError(f"{path} has no trials")
    for col in ("object_response", "category", "imagename"):
        df[col] = df[col].astype(str).str.strip()
    return df


def analyse(predicted: Sequence[str], shape: Sequence[str], texture: Sequence[str]) -> dict[str, float]:
    """Every number the job logs: ``shape_bias``, ``shape_bias.<category>``, accuracies."""
    out = {"shape_bias": shape_bias_score(predicted, shape, texture)}
    out.update({f"shape_bias.{c}": v for c, v in shape_bias_by_category(predicted, shape, texture).items()})
    out.update(cue_accuracies(predicted, shape, texture))
    return out


def cues_of_frame(df) -> tuple[list[str], list[str], list[str]]:
    """(decisions, shape classes, texture classes) of a result DataFrame."""
    predicted = df["object_response"].tolist()
    shape = df["category"].tolist()
    texture = [texture_category(n) for n in df["imagename"]]
    return predicted, shape, texture


def shape_bias_from_csv(path: str | Path) -> float:
    """The shape bias of one model-vs-human result CSV (what its ShapeBias analysis gives)."""
    return shape_bias_score(*cues_of_frame(read_results_csv(path)))


def analyse_csv(path: str | Path) -> dict[str, float]:
    """:func:`analyse` applied to one result CSV."""
    return analyse(*cues_of_frame(read_results_csv(path)))


def read_results_dir(folder: str | Path) -> dict[str, object]:
    """All result CSVs in a folder, keyed by ``subj`` (the first value of that column)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of model-vs-human result CSVs")
    out = {}
    for path in sorted(folder.glob("*.csv")):
        df = read_results_csv(path)
        out[str(df["subj"].iloc[0])] = df
    if not out:
        raise DataError(f"{folder} holds no .csv result files")
    return out


def pooled(frames: Iterable) -> tuple[list[str], list[str], list[str]]:
    """Concatenate several decision makers' trials (model-vs-human pools its human subjects)."""
    p: list[str] = []
    s: list[str] = []
    t: list[str] = []
    for df in frames:
        a, b, c = cues_of_frame(df)
        p += a
        s += b
        t += c
    return p, s, t


def is_human(subj: str) -> bool:
    """model-vs-human's convention: human observers are named ``subject-NN``."""
    return subj.startswith("subject-")


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """Drop NaN values (MLflow stores them, but tables and plots are clearer without)."""
    return {k: float(v) for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


__all__ = [
    "RESULT_COLUMNS",
    "analyse",
    "analyse_csv",
    "cue_accuracies",
    "cues_of_frame",
    "finite",
    "is_human",
    "pooled",
    "read_results_csv",
    "read_results_dir",
    "results_filename",
    "shape_bias_by_category",
    "shape_bias_from_csv",
    "shape_bias_score",
    "shape_category_of_name",
    "texture_category",
    "write_results_csv",
]
