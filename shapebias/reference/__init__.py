"""Published figures as data files, with their citations (see README.md in this folder).

* ``seed_table1.csv``: Rungseesiripak et al., Table 1 (ResNet-18 top-1 accuracy, %, mean and std
  over three seeds, stylized accuracy in parentheses);
* ``seed_table2a.csv`` / ``seed_table2b.csv``: the same report, Table 2a/2b (FastGAN FID, one run);
* ``li2023_shape_bias.csv``: shape bias of every decision maker in Li et al.'s (NeurIPS 2023) raw
  cue-conflict decisions, computed with model-vs-human's rule; regenerate it with
  ``python -m shapebias.reference /path/to/li2023-raw-cue-conflict``.

Only pandas here: no MLflow, no Ray.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent
TABLES = ("seed_table1", "seed_table2a", "seed_table2b", "li2023_shape_bias")

SEED_CITATION = (
    "Rungseesiripak, Rawat, Turato, Shrestha & Behwal, 'Investigating the reproducibility of "
    "Emergence of Shape Bias in Convolutional Neural Networks through Activation Sparsity' "
    "(University of Southampton reproducibility report)"
)
LI2023_CITATION = (
    "Li, Wen, Li & Lee, 'Emergence of Shape Bias in Convolutional Neural Networks through "
    "Activation Sparsity', NeurIPS 2023; raw decisions from Crazy-Jack/nips2023_shape_vs_texture "
    "(cnns-inference-top-k/model-vs-human_topK/raw-data/cue-conflict)"
)
CITATIONS = {
    "seed_table1": SEED_CITATION + ", Table 1",
    "seed_table2a": SEED_CITATION + ", Table 2a",
    "seed_table2b": SEED_CITATION + ", Table 2b",
    "li2023_shape_bias": LI2023_CITATION,
}


def load(name: str) -> pd.DataFrame:
    """One published table as a DataFrame (values as in the publication: percent, FID)."""
    if name not in TABLES:
        raise ValueError(f"unknown reference table {name!r}; known: {', '.join(TABLES)}")
    return pd.read_csv(
        REFERENCE_DIR / f"{name}.csv",
        dtype={"topk": str, "noise_injection": str, "reproduces": str},
        keep_default_na=False,
    )


# --- the shape-bias reference, computed from the authors' raw decisions ----------------------

_FILE = re.compile(r"^cue-conflict_(?P<maker>.+?)_session[-_]\d+\.csv$")
_MODELS = {"alexnet": "alexnet", "vgg": "vgg16"}


def describe_decision_maker(maker: str) -> dict[str, str]:
    """Map a file's decision-maker name to (model, sparsity, topk) of this project's run schema.

    ``AlexNet-topK-10`` keeps 10 % per channel (sparsity topk, topk 0.1); ``-Revert`` keeps only
    the non-Top-K activations (sparsity complement); ``-normal`` is the dense model (topk 1.0).
    Names whose level the authors did not document (``VGG-topK3``, ``VGG-topK``) are kept but
    marked as reproducing no configuration.
    """
    m = re.fullmatch(r"(?P<net>AlexNet|alexnet|VGG)-(?P<rest>.+)", maker)
    if m is None:
        model = "human" if maker.startswith("subject-") else maker.lower().replace("-", "_")
        return {"model": model, "sparsity": "", "topk": "", "reproduces": "false", "note": "other decision maker"}
    model = _MODELS[m["net"].lower()]
    rest = m["rest"]
    if m["net"] == "alexnet":  # a lower-case second file of the dense AlexNet's decisions
        return {
            "model": model,
            "sparsity": "none",
            "topk": "1.0",
            "reproduces": "false",
            "note": "lower-case duplicate; AlexNet-normal is the reference",
        }
    if rest == "normal":
        return {"model": model, "sparsity": "none", "topk": "1.0", "reproduces": "true", "note": ""}
    lv = re.fullmatch(r"topK-(?P<pct>\d+)(?P<revert>-Revert)?", rest)
    if lv is not None:
        return {
            "model": model,
            "sparsity": "complement" if lv["revert"] else "topk",
            "topk": f"{int(lv['pct']) / 100:g}",
            "reproduces": "true",
            "note": "",
        }
    return {
        "model": model,
        "sparsity": "topk",
        "topk": "",
        "reproduces": "false",
        "note": f"level of '{rest}' not documented by the authors",
    }


def _shape_bias_counts(path: Path) -> tuple[float, int, int]:
    """(shape bias, shape decisions, texture decisions) of one model-vs-human result CSV."""
    df = pd.read_csv(path)
    texture = df["imagename"].astype(str).str.rsplit("/", n=1).str[-1].str.rsplit("-", n=1).str[-1]
    texture = texture.str.replace(r"\d*\.png$", "", regex=True)
    conflict = df["category"] != texture
    resp, shape, tex = df["object_response"][conflict], df["category"][conflict], texture[conflict]
    n_shape, n_texture = int((resp == shape).sum()), int((resp == tex).sum())
    total = n_shape + n_texture
    return (n_shape / total if total else float("nan")), n_shape, n_texture


def shape_bias_of_file(path: Path) -> float:
    """``shape_bias_from_csv`` where it exists, else the same rule (model-vs-human)."""
    try:
        from shapebias.metrics.shape_bias import shape_bias_from_csv
    except ImportError:
        return _shape_bias_counts(path)[0]
    return float(shape_bias_from_csv(path))


def build_shape_bias_reference(raw_dir: Path) -> pd.DataFrame:
    """The rows of ``li2023_shape_bias.csv`` computed from the authors' raw decision files."""
    rows = []
    for path in sorted(Path(raw_dir).glob("*.csv")):
        m = _FILE.match(path.name)
        if m is None:
            continue
        _, n_shape, n_texture = _shape_bias_counts(path)
        rows.append(
            {
                "decision_maker": m["maker"],
                "file": path.name,
                **describe_decision_maker(m["maker"]),
                "shape_bias": round(shape_bias_of_file(path), 6),
                "n_shape": n_shape,
                "n_texture": n_texture,
            }
        )
    if not rows:
        raise FileNotFoundError(f"no model-vs-human result CSVs (cue-conflict_*_session-1.csv) in {raw_dir}")
    cols = [
        "decision_maker",
        "file",
        "model",
        "sparsity",
        "topk",
        "shape_bias",
        "n_shape",
        "n_texture",
        "reproduces",
        "note",
    ]
    return pd.DataFrame(rows)[cols]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m shapebias.reference RAW_DECISIONS_DIR  (rewrites li2023_shape_bias.csv)", file=sys.stderr
        )
        return 2
    df = build_shape_bias_reference(Path(argv[0]))
    out = REFERENCE_DIR / "li2023_shape_bias.csv"
    df.to_csv(out, index=False)
    print(f"wrote {len(df)} rows to {out}")
    return 0
