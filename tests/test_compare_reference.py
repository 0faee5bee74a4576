"""The published figures shipped as data files: well-formed, and the shape-bias file equal to a
recomputation from the authors' raw decisions (where shared/ is present)."""

from __future__ import annotations

import pandas as pd
import pytest

from shapebias import reference


def test_seed_tables_are_complete():
    t1 = reference.load("seed_table1")
    assert len(t1) == 2 * 3 * 4 and set(t1.dataset) == {"IN-S1", "IN-S2", "IN-S3", "IN-S4"}
    assert (t1.n == 3).all() and t1.test_acc_mean.between(70, 95).all()
    row = t1[(t1.model_spec == "code") & (t1.sparsity == "topk_mean") & (t1.dataset == "IN-S3")].iloc[0]
    assert (row.test_acc_mean, row.test_acc_std, row.stylized_acc_mean, row.stylized_acc_std) == (73.5, 6.6, 54.0, 3.9)
    t2b = reference.load("seed_table2b")
    # the report's garbled "Baseline 154.3588.81" is 154.35 (IN-S1 C-5) and 88.81 (IN-S3 C-1)
    assert list(t2b[t2b.setting == "Baseline"].fid) == [154.35, 88.81]
    assert len(reference.load("seed_table2a")) == 12
    for name in reference.TABLES:
        assert name in reference.CITATIONS


def test_shape_bias_reference_maps_files_to_configurations():
    sb = reference.load("li2023_shape_bias")
    ok = sb[sb.reproduces == "true"]
    assert len(ok) == 1 + 6 + 6 + 1 + 6  # AlexNet dense/Top-K/non-Top-K, VGG-16 dense/Top-K
    assert not ok.duplicated(["model", "sparsity", "topk"]).any()
    alex = ok.set_index(["model", "sparsity", "topk"]).shape_bias
    assert alex[("alexnet", "none", "1.0")] == pytest.approx(181 / (181 + 575), abs=1e-6)
    assert alex[("alexnet", "topk", "0.1")] > 0.7  # Li et al.: ~0.24 dense -> ~0.72 with Top-K
    assert reference.describe_decision_maker("VGG-topK3")["reproduces"] == "false"


def test_shape_bias_reference_matches_the_raw_decisions(reference_dir):
    """Recompute every row from the shared raw CSVs (with a short pandas expression, independently)."""
    stored = reference.load("li2023_shape_bias").set_index("file")
    files = sorted(reference_dir.glob("cue-conflict_*.csv"))
    assert len(files) == len(stored)
    for path in files:
        df = pd.read_csv(path)
        texture = df.imagename.str.extract(r"-([a-z]+)\d*\.png$")[0]
        keep = df.category != texture
        shape = (df.object_response[keep] == df.category[keep]).sum()
        tex = (df.object_response[keep] == texture[keep]).sum()
        assert stored.loc[path.name, "shape_bias"] == pytest.approx(shape / (shape + tex), abs=1e-6), path.name
        assert (stored.loc[path.name, "n_shape"], stored.loc[path.name, "n_texture"]) == (shape, tex)
    rebuilt = reference.build_shape_bias_reference(reference_dir)
    assert rebuilt.shape_bias.round(6).tolist() == stored.loc[rebuilt.file, "shape_bias"].tolist()
