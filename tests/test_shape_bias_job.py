"""The `shape_bias` job end to end (random weights, tiny folders), its run schema and bad input."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from shapebias import tracking
from shapebias.metrics import shape_bias as sb
from shapebias.metrics.imagenet16 import CATEGORIES
from training import shape_bias as job

torch.set_num_threads(1)


@pytest.fixture
def tiny_set(tmp_path):
    """16 noise images in the cue-conflict layout: one per shape category, texture = the next one."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cue-conflict"
    for i, shape in enumerate(CATEGORIES):
        (root / shape).mkdir(parents=True)
        pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / shape / f"{shape}1-{CATEGORIES[(i + 1) % 16]}1.png")
    return root


def runs(store):
    client = MlflowClient(store)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def artifacts(client, run_id, path=None):
    return sorted(a.path for a in client.list_artifacts(run_id, path))


def test_single_level_random_weights_run(mlflow_store, tiny_set, tmp_path, capsys):
    rc = job.main(
        [
            "--model",
            "alexnet",
            "--topk",
            "0.1",
            "--weights",
            "random",
            "--data-dir",
            str(tiny_set),
            "--batch-size",
            "8.0",
        ]
    )
    assert rc == 0
    (run,) = runs(mlflow_store)
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("RANDOM-WEIGHTS")
    assert run.data.tags[tracking.WEIGHTS_TAG] == "random"
    assert run.data.tags[tracking.TASK_TAG] == "shape_bias"
    p = run.data.params
    assert (p["model"], p["sparsity"], p["topk"], p["weights"], p["sweep"]) == (
        "alexnet",
        "topk",
        "0.1",
        "random",
        "false",
    )
    m = run.data.metrics
    assert {"shape_bias", "shape_acc", "texture_acc", "accuracy_16"} <= set(m)
    assert all(0.0 <= m[k] <= 1.0 for k in ("shape_acc", "texture_acc", "accuracy_16"))
    client = MlflowClient(mlflow_store)
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("alexnet with random weights") and "k = 0.1" in note and "16 cue-conflict images" in note
    (data,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert data.dataset.name == "cue-conflict" and data.dataset.digest == run.data.tags["shapebias.data_fingerprint"]
    assert {t.key: t.value for t in data.tags}["mlflow.data.context"] == "evaluation"
    assert artifacts(client, run.info.run_id, "plots") == [
        "plots/shape_bias_by_category.png",
        "plots/shape_bias_curve.png",
    ]
    (csv_artifact,) = artifacts(client, run.info.run_id, "decisions")
    assert csv_artifact.endswith("cue-conflict_alexnet-topk-10-RANDOM-WEIGHTS_session-1.csv")
    local = client.download_artifacts(run.info.run_id, csv_artifact, str(tmp_path))
    df = sb.read_results_csv(local)
    assert len(df) == 16 and set(df["object_response"]) <= set(CATEGORIES)
    if "shape_bias" in m:
        assert sb.shape_bias_from_csv(local) == pytest.approx(m["shape_bias"])
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "mlflow run . -e shape_bias" in out


def test_sweep_is_a_parent_with_one_child_per_level(mlflow_store, cue_conflict_dir):
    rc = job.main(
        [
            "--model",
            "alexnet",
            "--sparsity",
            "topk",
            "--topk",
            "1.0,0.2",
            "--weights",
            "random",
            "--limit",
            "16",
            "--batch-size",
            "16",
        ]
    )
    assert rc == 0
    all_runs = runs(mlflow_store)
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.params["sweep"] == "true" and parent.data.params["topk"] == "1.0,0.2"
    assert parent.data.tags[tracking.TASK_TAG] == "shape_bias"
    assert "shape_bias" not in parent.data.metrics  # the parent holds the curve, not a result
    client = MlflowClient(mlflow_store)
    assert "plots/shape_bias_curve.png" in artifacts(client, parent.info.run_id, "plots")
    assert "sweep_summary.csv" in artifacts(client, parent.info.run_id)
    levels = {}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags[tracking.WEIGHTS_TAG] == "random"
        assert child.info.run_name.startswith("RANDOM-WEIGHTS")
        assert child.info.status == "FINISHED"
        assert "shape_bias" in child.data.metrics and "shape_acc" in child.data.metrics
        assert len(artifacts(client, child.info.run_id, "plots")) == 2
        levels[child.data.params["topk"]] = child.data.params["sparsity"]
    assert levels == {"1.0": "none", "0.2": "topk"}  # dense = sparsity none, topk 1.0


BAD_PARAMETERS = [
    (["--model", "resnet50"], "unknown model 'resnet50'; known models: alexnet, vgg16"),
    (["--topk", "0.1,1.5"], r"topk='1.5' is outside \(0, 1\]"),
    (["--topk", "0"], r"topk='0' is outside \(0, 1\]"),
    (["--sparsity", "dropout"], "sparsity='dropout' is not accepted; choose one of: none, topk, complement"),
]


def test_bad_parameters_fail_the_run(mlflow_store, tiny_set, capsys):
    client = MlflowClient(mlflow_store)
    for argv, message in BAD_PARAMETERS:
        rc = job.main(["--weights", "random", "--data-dir", str(tiny_set), *argv])
        assert rc == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: ") and re.search(message, err), err
        run = client.search_runs(
            [client.get_experiment_by_name("shapebias-shape_bias").experiment_id],
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )[0]
        assert run.info.status == "FAILED"
        assert re.search(message, run.data.tags[tracking.ERROR_TAG])
    assert len(runs(mlflow_store)) == len(BAD_PARAMETERS)


def test_folder_not_in_layout_fails_the_run(mlflow_store, tmp_path, capsys):
    (tmp_path / "images" / "train").mkdir(parents=True)
    rc = job.main(["--weights", "random", "--data-dir", str(tmp_path / "images")])
    assert rc == 2
    assert "expected <shape>/<shape>N-<texture>M.png" in capsys.readouterr().err.splitlines()[-1]
    (run,) = runs(mlflow_store)
    assert run.info.status == "FAILED"


def test_missing_weights_fail_the_run(mlflow_store, tiny_set, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rc = job.main(["--model", "vgg16", "--data-dir", str(tiny_set)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "download.pytorch.org" in err
    (run,) = runs(mlflow_store)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.WEIGHTS_TAG] == "pretrained"
    assert not run.info.run_name.startswith("RANDOM")


def test_quoted_empty_values_from_mlflow_run_mean_empty():
    assert job._unquote("''") == "" and job._unquote('""') == "" and job._unquote("/a b") == "/a b"
    assert job.parse_levels("none", "0.1,0.2") == [1.0]
    assert job.parse_levels("topk", "0.1, 0.2,0.1") == [0.1, 0.2]
    assert job.level_label("vgg16", "topk", 0.05) == "vgg16_topk_5"
    assert job.level_label("vgg16", "topk", 1.0) == "vgg16_normal"
    assert mlflow.active_run() is None
