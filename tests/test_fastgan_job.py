"""The train_fastgan job: bad input fails the run with a clear message; a tiny run logs losses,
FID curve, sample grids and the generator, and resumes from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from training import train_fastgan


@pytest.fixture
def tiny_set(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        img = np.zeros((48, 56, 3), np.uint8)
        img[:] = rng.integers(0, 255, 3)
        img[8 + i : 30 + i, 10:40] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


def _args(data_dir, tmp_path, **overrides):
    opts = {
        "data-dir": str(data_dir),
        "im-size": 64,
        "iterations": 2,
        "batch-size": 2,
        "width": 8,
        "recon-loss": "l1",
        "fid-every": 0,
        "noise-injection": "true",
        "checkpoint-every": 1,
        "storage-path": str(tmp_path / "ray"),
    }
    opts.update(overrides)
    return [x for k, v in opts.items() for x in (f"--{k}", str(v))]


def _only_run():
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data-dir": "MISSING"}, "does not exist"),
        ({"data-dir": "EMPTY"}, "holds no images"),
        ({"im-size": 100}, "im_size=100 is not supported"),
        ({"fid-every": 1}, "pt_inception-2015-12-05-6726825d.pth"),
    ],
)
def test_bad_input_fails_the_run(mlflow_store, tmp_path, tiny_set, monkeypatch, capsys, overrides, message):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    (tmp_path / "empty").mkdir()
    data = {"MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty"}.get(overrides.get("data-dir"), tiny_set)
    overrides = {**overrides, "data-dir": data}
    assert train_fastgan.main(_args(data, tmp_path, **overrides)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    _, run = _only_run()
    assert run.info.status == "FAILED"
    assert message in run.data.tags["shapebias.error"]
    assert run.data.tags["shapebias.task"] == "train_fastgan"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"noise-injection": "maybe"}, "choose true or false"),
        ({"topk": 1.5}, "topk=1.5 is outside"),
        ({"sparsity": "complement"}, "sparsity='complement' is not accepted"),
        ({"fid-protocol": "best"}, "standard, authors"),
        ({"iterations": 0}, "iterations=0"),
        ({"fid-dims": 100}, "fid_dims"),
        ({"batch-size": "many"}, "batch_size='many' is not a number"),
    ],
)
def test_bad_parameters_are_config_errors(tmp_path, overrides, message):
    from shapebias.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        args = train_fastgan.parser().parse_args(_args(tmp_path, tmp_path, **overrides))
        train_fastgan.config_from_args(args).validate()


def test_numbers_as_mlflow_passes_them(tmp_path):
    args = train_fastgan.parser().parse_args(
        _args(tmp_path, tmp_path, **{"im-size": "64.0", "iterations": "20.0", "topk": "0.15"})
    )
    cfg = train_fastgan.config_from_args(args).validate()
    assert (cfg.im_size, cfg.iterations, cfg.topk, cfg.noise_injection) == (64, 20, 0.15, True)
    assert cfg.set_name() == tmp_path.name and cfg.params()["noise_injection"] == "true"


@pytest.mark.slow
def test_tiny_run_logs_everything_and_resumes(mlflow_store, tmp_path, tiny_set, capsys):
    import ray

    from shapebias.metrics.fid import write_random_inception_weights

    weights = write_random_inception_weights(tmp_path / "random_inception.pth")
    fid_opts = {"fid-every": 2, "fid-weights": weights, "fid-samples": 4, "fid-dims": 64}
    try:
        assert train_fastgan.main(_args(tiny_set, tmp_path, **fid_opts)) == 0
        client, run = _only_run()
        rid = run.info.run_id
        assert run.info.status == "FINISHED"
        p = run.data.params
        assert (p["dataset"], p["sparsity"], p["topk"], p["noise_injection"], p["recon_loss"]) == (
            "tiny",
            "topk",
            "0.05",
            "true",
            "l1",
        )
        assert p["fid_protocol"] == "standard" and p["fid_protocol.n_samples"] == "5000" and p["seed"] == "0"
        # random Inception weights: never logged as `fid`
        assert "fid" not in run.data.metrics and "fid_unverified" in run.data.metrics
        assert run.data.tags["shapebias.weights"] == "unverified" and run.info.run_name.endswith("-unverified-fid")
        assert [m.step for m in client.get_metric_history(rid, "loss_g")] == [1, 2]
        assert run.data.tags["mlflow.note.content"].startswith("FastGAN at ")
        assert "topk k=0.05" in run.data.tags["mlflow.note.content"]
        (data,) = client.get_run(rid).inputs.dataset_inputs
        assert data.dataset.name == "tiny" and data.dataset.digest == run.data.tags["shapebias.data_fingerprint"]
        curve = client.get_metric_history(rid, "fid_unverified")
        assert [m.step for m in curve] == [2, 3]  # the evaluation, then the best as the last point
        arts = {a.path for d in ("samples", "model") for a in client.list_artifacts(rid, d)}
        assert {
            "samples/iter_000001.png",
            "samples/iter_000002.png",
            "samples/final.png",
            "model/generator_ema.pt",
        } <= arts
        assert (tmp_path / "ray" / rid).is_dir()
        assert rid in capsys.readouterr().out

        # a resume with other settings is refused, and changes nothing
        assert train_fastgan.main(_args(tiny_set, tmp_path, iterations=3, **fid_opts, **{"run-id": rid})) == 2
        assert "iterations='3' (logged '2')" in capsys.readouterr().err
        assert [m.step for m in client.get_metric_history(rid, "loss_g")] == [1, 2]

        # an interrupted run resumes from its last checkpoint (iteration 2) and trains nothing again
        client.set_terminated(rid, "KILLED")
        assert train_fastgan.main(_args(tiny_set, tmp_path, **fid_opts, **{"run-id": rid})) == 0
        client, run = _only_run()
        assert run.info.status == "FINISHED"
        assert run.data.tags["shapebias.resumed_from_iteration"] == "2"
        assert [m.step for m in client.get_metric_history(rid, "loss_g")] == [1, 2]
        state = torch.load(client.download_artifacts(rid, "model/generator_ema.pt"), weights_only=True)
        assert state["iteration"] == 2
    finally:
        ray.shutdown()
