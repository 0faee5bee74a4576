"""Shape bias with model-vs-human's rules: the 16-class mapping, the formula, the result CSVs,
and the authors' published decisions reproduced file by file."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch

from shapebias.errors import DataError
from shapebias.metrics import imagenet16
from shapebias.metrics import shape_bias as sb

# -------------------------------------------------------------------------- 16-class mapping


def test_table_has_207_distinct_imagenet_classes():
    all_indices = [i for ids in imagenet16.IMAGENET_INDICES.values() for i in ids]
    assert len(all_indices) == 207
    assert len(set(all_indices)) == 207
    assert all(0 <= i < 1000 for i in all_indices)
    assert list(imagenet16.CATEGORIES) == sorted(imagenet16.IMAGENET_INDICES)
    # spot checks against model-vs-human's human_categories.py
    assert imagenet16.IMAGENET_INDICES["airplane"] == (404,)
    assert imagenet16.IMAGENET_INDICES["knife"] == (499,)
    assert imagenet16.IMAGENET_INDICES["oven"] == (766,)
    assert len(imagenet16.IMAGENET_INDICES["dog"]) == 109
    assert len(imagenet16.IMAGENET_INDICES["bird"]) == 49


def test_all_mass_on_one_imagenet_class_maps_to_its_category():
    rows = [(i, c) for c in imagenet16.CATEGORIES for i in imagenet16.IMAGENET_INDICES[c]]
    logits = torch.zeros(len(rows), 1000)
    for r, (index, _) in enumerate(rows):
        logits[r, index] = 50.0  # softmax puts (almost) all mass on this class
    assert imagenet16.decisions_from_logits(logits) == [c for _, c in rows]
    assert all(imagenet16.category_of_index(i) == c for i, c in rows)


def test_decision_uses_mean_not_sum_of_probabilities():
    # dog has 109 classes; a little mass on all of them loses to the same total on one knife class
    probs = torch.full((1, 1000), 0.3 / 890)  # the 890 other classes share 0.3
    probs[0, list(imagenet16.IMAGENET_INDICES["dog"])] = 0.5 / 109
    probs[0, 499] = 0.2  # knife
    assert probs.sum().item() == pytest.approx(1.0)
    logits = probs.log()
    assert imagenet16.decisions_from_logits(logits) == ["knife"]
    scores = imagenet16.category_scores(logits)
    assert scores.shape == (1, 16)
    dog = imagenet16.CATEGORIES.index("dog")
    assert scores[0, dog].item() == pytest.approx(0.5 / 109, rel=1e-3)


def test_classes_outside_the_table_do_not_count():
    logits = torch.zeros(2, 1000)
    logits[:, 0] = 30.0  # tench: no category
    logits[0, 404] = 5.0  # airplane a distant second
    logits[1, 385] = 5.0  # elephant
    assert imagenet16.category_of_index(0) is None
    assert imagenet16.decisions_from_logits(logits) == ["airplane", "elephant"]


def test_wrong_logit_shape_is_refused():
    with pytest.raises(ValueError, match="1000"):
        imagenet16.decisions_from_logits(torch.zeros(2, 10))


# --------------------------------------------------------------------------------- formula


def test_texture_category_follows_model_vs_human():
    assert sb.texture_category("airplane1-bicycle2.png") == "bicycle"
    assert sb.texture_category("0001_s5n_s01_0_bird_00_bird3-clock2.png") == "clock"
    assert sb.texture_category("cue-conflict/dog/dog10-elephant3.png") == "elephant"
    assert sb.shape_category_of_name("airplane1-bicycle2.png") == "airplane"


def test_shape_bias_counts_only_conflict_trials_decided_by_a_cue():
    predicted = ["cat", "dog", "car", "cat", "na"]
    shape = ["cat", "cat", "cat", "cat", "cat"]
    texture = ["dog", "dog", "dog", "cat", "dog"]
    # trial 4 has no conflict; trial 3 and 5 are neither cue: 1 shape, 1 texture
    assert sb.shape_bias_score(predicted, shape, texture) == 0.5
    assert math.isnan(sb.shape_bias_score(["car"], ["cat"], ["dog"]))
    acc = sb.cue_accuracies(predicted, shape, texture)
    assert acc["shape_acc"] == pytest.approx(1 / 4)
    assert acc["texture_acc"] == pytest.approx(1 / 4)
    assert acc["accuracy_16"] == pytest.approx(2 / 5)


def test_by_category_groups_by_shape_class():
    predicted = ["cat", "dog", "dog", "bird"]
    shape = ["cat", "cat", "dog", "dog"]
    texture = ["dog", "dog", "bird", "bird"]
    assert sb.shape_bias_by_category(predicted, shape, texture) == {"cat": 0.5, "dog": 0.5}
    metrics = sb.analyse(predicted, shape, texture)
    assert metrics["shape_bias"] == 0.5 and metrics["shape_bias.cat"] == 0.5


def test_write_and_read_result_csv_round_trip(tmp_path):
    names = ["airplane1-bicycle2.png", "bear2-bear1.png", "cat3-dog1.png"]
    path = sb.write_results_csv(
        tmp_path, "alexnet_topk_10", ["bicycle", "bear", "cat"], ["airplane", "bear", "cat"], names
    )
    assert path.name == "cue-conflict_alexnet-topk-10_session-1.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == "subj,session,trial,rt,object_response,category,condition,imagename"
    assert lines[1] == "alexnet_topk_10,1,1,NaN,bicycle,airplane,NaN,airplane1-bicycle2.png"
    df = sb.read_results_csv(path)
    assert list(df["trial"]) == [1, 2, 3]
    assert sb.shape_bias_from_csv(path) == 0.5  # 1 texture (bicycle), 1 shape (cat); bear: no conflict


def test_csv_missing_columns_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("subj,object_response,category\nx,cat,cat\n")
    with pytest.raises(DataError, match="missing column.*imagename"):
        sb.shape_bias_from_csv(bad)
    with pytest.raises(DataError, match="does not exist"):
        sb.shape_bias_from_csv(tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError):
        sb.shape_bias_from_csv(empty)


def test_column_names_are_case_insensitive(tmp_path):
    path = tmp_path / "upper.csv"
    path.write_text(
        "SUBJ,Session,trial,RT,object_response,Category,condition,ImageName\n"
        "m,1,1,NaN,dog,cat,NaN,cat1-dog2.png\nm,1,2,NaN,cat,cat,NaN,cat1-bird2.png\n"
    )
    assert sb.shape_bias_from_csv(path) == 0.5


# ---------------------------------------------------------------- the authors' published files


def _independent(path) -> float:
    """model-vs-human's ShapeBias.analysis, written out with pandas (rows with shape == texture
    dropped; both fractions over all rows, so the ratio is shape / (shape + texture))."""
    df = pd.read_csv(path, keep_default_na=False)
    tex = df["imagename"].map(lambda n: re.sub(r"\d", "", n.split("_")[-1].split(".")[0].split("-")[-1]))
    conflict = df[df["category"] != tex]
    t = tex[conflict.index]
    n_shape = (conflict["object_response"] == conflict["category"]).sum() / len(df)
    n_texture = (conflict["object_response"] == t).sum() / len(df)
    return n_shape / (n_shape + n_texture)


def test_every_published_file_is_reproduced(reference_dir):
    files = sorted(reference_dir.glob("*.csv"))
    assert len(files) >= 40
    for path in files:
        assert sb.shape_bias_from_csv(path) == pytest.approx(_independent(path), abs=1e-12), path.name


@pytest.mark.parametrize(
    ("name", "shape", "texture"),
    [
        # counts of shape and texture decisions over the 1,200 conflict trials of each file
        ("cue-conflict_AlexNet-normal_session-1.csv", 181, 575),  # ~0.24 dense (paper)
        ("cue-conflict_AlexNet-topK-10_session-1.csv", 277, 108),  # ~0.72 with Top-K (paper)
        ("cue-conflict_AlexNet-topK-10-Revert_session-1.csv", 66, 263),
        ("cue-conflict_VGG-normal_session-1.csv", 77, 892),
        ("cue-conflict_VGG-topK-5_session-1.csv", 236, 168),
        ("cue-conflict_subject-01_session_1.csv", 829, 33),  # human: 'na' answers, long names
    ],
)
def test_published_values(reference_dir, name, shape, texture):
    value = sb.shape_bias_from_csv(reference_dir / name)
    assert value == pytest.approx(shape / (shape + texture), abs=1e-12)


def test_paper_headline_numbers(reference_dir):
    dense = sb.shape_bias_from_csv(reference_dir / "cue-conflict_AlexNet-normal_session-1.csv")
    topk = sb.shape_bias_from_csv(reference_dir / "cue-conflict_AlexNet-topK-10_session-1.csv")
    assert round(dense, 2) == 0.24 and round(topk, 2) == 0.72


def test_humans_pooled_like_model_vs_human(reference_dir):
    frames = sb.read_results_dir(reference_dir)
    humans = [df for subj, df in frames.items() if sb.is_human(subj)]
    assert len(humans) == 10
    pooled = sb.shape_bias_score(*sb.pooled(humans))
    assert 0.9 < pooled < 1.0
