"""training/texture_synthesis.py: the MLflow run it leaves, and bad input."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from shapebias import tracking
from shapebias.settings import REPO_ROOT
from training import texture_synthesis as job

TINY = [
    "--image-size",
    "16",
    "--steps",
    "2",
    "--iterations-per-step",
    "3",
    "--layers",
    "relu1_1,pool1,pool2",
    "--topk",
    "0.2",
]


def _only_run(uri: str):
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    return client, runs[0]


def test_random_weight_run_logs_grid_losses_and_one_structure_metric_per_mask(mlflow_store, capsys):
    assert job.main([*TINY, "--weights", "random", "--image", "skimage:chelsea"]) == 0
    client, run = _only_run(mlflow_store)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TASK_TAG] == "texture_synthesis"
    assert run.data.tags[tracking.WEIGHTS_TAG] == "random"
    assert run.data.tags["mlflow.runName"].startswith("RANDOM-WEIGHTS")
    assert run.data.params["topk"] == "0.2" and run.data.params["method"] == "texture"
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("Texture synthesis (texture) of 1 image(s) from skimage:chelsea") and "k = 0.2" in note
    (data,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert data.dataset.name == "targets:skimage:chelsea"
    metrics = run.data.metrics
    for mask in ("all", "topk", "complement", "noise"):
        assert -1.0 <= metrics[f"ssim_{mask}"] <= 1.0
        assert -1.0 <= metrics[f"edge_corr_{mask}"] <= 1.0
    for mask in ("all", "topk", "complement"):
        history = client.get_metric_history(run.info.run_id, f"loss_{mask}")
        assert sorted(m.step for m in history) == [0, 1, 2]
        by_step = {m.step: m.value for m in history}
        assert by_step[2] < by_step[0]
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"grids", "images", "losses.png", "structure_metrics.csv", "losses.csv"} <= files
    assert [a.path for a in client.list_artifacts(run.info.run_id, "grids")] == ["grids/chelsea.png"]
    grid = Path(client.download_artifacts(run.info.run_id, "grids/chelsea.png"))
    from PIL import Image

    assert Image.open(grid).size[0] > 3 * Image.open(grid).size[1]  # four panels side by side
    table = Path(client.download_artifacts(run.info.run_id, "structure_metrics.csv")).read_text().splitlines()
    assert table[0] == "image,mask,ssim,edge_corr,final_loss,steps" and len(table) == 5
    out = capsys.readouterr().out
    assert run.info.run_id in out and "ssim" in out and "random VGG-19 weights" in out


def test_logged_optimizer_steps_and_layers_are_what_ran(mlflow_store, monkeypatch):
    """Spies on torch's L-BFGS and on the network: what they were asked to do equals the params."""
    from shapebias import synthesis

    built, steps, layers_seen = [], [], set()
    original_lbfgs, original_forward = torch.optim.LBFGS, synthesis.VGGFeatures.forward

    class Spy(original_lbfgs):
        def __init__(self, params, **kwargs):
            built.append(kwargs)
            super().__init__(params, **kwargs)

        def step(self, closure):
            steps.append(len(built))
            return super().step(closure)

    def forward(self, x):
        out = original_forward(self, x)
        layers_seen.update(out)
        return out

    monkeypatch.setattr(torch.optim, "LBFGS", Spy)
    monkeypatch.setattr(synthesis.VGGFeatures, "forward", forward)
    argv = [
        "--image-size",
        "16",
        "--steps",
        "2.0",
        "--iterations-per-step",
        "3",
        "--layers",
        "pool2, relu1_1,pool1",
        "--weights",
        "random",
        "--image",
        "skimage:chelsea",
    ]
    assert job.main(argv) == 0
    _, run = _only_run(mlflow_store)
    p = run.data.params
    assert len(built) == 3  # one optimiser per mask
    assert {b["line_search_fn"] for b in built} == {"strong_wolfe"} and p["optimizer"] == "lbfgs-strong-wolfe"
    assert {b["max_iter"] for b in built} == {int(p["iterations_per_step"])} == {3}
    assert {b["lr"] for b in built} == {float(p["lr"])}
    assert [steps.count(i) for i in (1, 2, 3)] == [int(p["steps"])] * 3 == [2] * 3
    assert sorted(layers_seen) == sorted(p["layers"].split(",")) and p["layers"] == "relu1_1,pool1,pool2"


def test_defaults_are_the_authors_budget():
    cfg = job.config_from_args(job.parse_args([]))
    assert (cfg["steps"], cfg["iterations_per_step"], cfg["optimizer"]) == ("100", "20", "lbfgs-strong-wolfe")


def test_inversion_of_a_folder_logs_per_image_metrics(mlflow_store, tmp_path):
    from PIL import Image

    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    assert job.main([*TINY, "--weights", "random", "--image", str(folder), "--method", "inversion"]) == 0
    client, run = _only_run(mlflow_store)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("one", "two"):
        assert f"ssim_topk.{name}" in metrics and f"edge_corr_complement.{name}" in metrics
        assert len(client.get_metric_history(run.info.run_id, f"loss_all.{name}")) == 3
    assert metrics["ssim_topk"] == pytest.approx((metrics["ssim_topk.one"] + metrics["ssim_topk.two"]) / 2)
    grids = sorted(a.path for a in client.list_artifacts(run.info.run_id, "grids"))
    assert grids == ["grids/one.png", "grids/two.png"]


BAD_INPUT = [
    (["--image", "/no/such/picture.png"], "does not exist"),
    (["--image", "skimage:dog"], "skimage:chelsea"),
    (["--image-size", "4"], "image_size=4 is too small"),
    (["--method", "style"], "method='style' is not accepted; choose one of: texture, inversion"),
    (["--topk", "1.5"], "topk='1.5' is outside (0, 1]"),
    (["--steps", "0"], "steps='0' is not accepted"),
    (["--layers", "relu1_1,fc7"], "layer='fc7'"),
]


def test_bad_input_fails_the_run_with_exit_status_2(mlflow_store, tmp_path, monkeypatch, capsys):
    """One store for all cases (creating an SQLite store is the slow part): each case is one run."""
    from PIL import Image

    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "tiny.png")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cases = [([*TINY, "--weights", "random", *args], message) for args, message in BAD_INPUT]
    cases += [
        (
            [*TINY, "--weights", "random", "--image", str(tmp_path / "tiny.png")],
            "6x6 px, too small for layers relu1_1,pool1,pool2",
        ),
        (
            [*TINY, "--image", "skimage:chelsea"],
            f"vgg19-dcbb9e9d.pth are missing from {tmp_path / 'hub' / 'checkpoints'}",
        ),
        ([*TINY, "--weights", str(tmp_path / "mine.pth")], f"weights file {tmp_path / 'mine.pth'} does not exist"),
    ]
    client = MlflowClient(mlflow_store)
    for argv, message in cases:
        assert job.main(argv) == 2, argv
        lines = capsys.readouterr().err.splitlines()
        assert any(line.startswith("error: ") and message in line for line in lines), (message, lines)
        run = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )[0]
        assert run.info.status == "FAILED", argv
        assert message in run.data.tags[tracking.ERROR_TAG]
        is_random = "random" in argv
        assert run.data.tags[tracking.WEIGHTS_TAG] == ("random" if is_random else "pretrained")
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == len(cases)


def test_mlproject_entry_point_matches_the_parser():
    spec = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]["texture_synthesis"]
    params = spec["parameters"]
    assert {"image", "image_size", "steps", "iterations_per_step", "weights", "topk", "method"} <= set(params)
    values = {name: shlex.quote(str(p.get("default", "x"))) for name, p in params.items()}
    argv = shlex.split(spec["command"].format(**values))
    assert argv[:3] == ["python", "-m", "training.texture_synthesis"]
    args = job.parse_args(argv[3:])
    cfg = job.config_from_args(args)
    assert cfg["image"] == "skimage:chelsea" and cfg["weights"] == "pretrained"
    assert job.validate(cfg)["size"] == 256
    assert (cfg["steps"], cfg["iterations_per_step"]) == ("100", "20")
