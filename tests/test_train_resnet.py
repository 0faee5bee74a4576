"""The train_resnet job: ImageNet-subset loading, bad input through main(), one real Ray + MLflow run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shapebias.data.imagenet import SUBSETS, imagenet_subset, read_class_list, subset_wnids
from shapebias.errors import ConfigError, DataError
from training import train_resnet
from training.cliargs import number as _number
from training.train_resnet import AUTO_CHECKPOINT_RATIO, CheckpointSchedule, Config, _user_error

WNIDS = ("n01440764", "n02102040")


def _png(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def fake_imagenet(tmp_path):
    """A tiny ImageNet folder (2 WNIDs, train/ and val/), a stylized folder and a class list."""
    root = tmp_path / "imagenet"
    for split, n in (("train", 3), ("val", 2)):
        for w in WNIDS:
            for i in range(n):
                _png(root / split / w / f"{w}_{i}.JPEG", hash((split, w, i)) % 1000)
    stylized = tmp_path / "stylized"
    for w in WNIDS:
        _png(stylized / w / "a.png", 7)
    class_list = tmp_path / "in-s2.txt"
    class_list.write_text("# two classes\n" + "\n".join(WNIDS) + "\n\n")
    return root, stylized, class_list


def test_imagenet_subset_layout_and_transforms(fake_imagenet):
    root, stylized, class_list = fake_imagenet
    splits = imagenet_subset(root, "IN-S2", class_list, stylized)
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "original": 4, "stylized": 2}
    x, y = splits["train"][0]
    assert x.shape == (3, 224, 224) and y == 0
    x, y = splits["original"][3]
    assert x.shape == (3, 224, 224) and y == 1
    assert splits["train"].num_classes == 2


def test_subsets_and_class_lists(tmp_path):
    assert len(SUBSETS["IN-S1"]) == 10 and subset_wnids("IN-S1") == SUBSETS["IN-S1"]
    with pytest.raises(ConfigError, match="class list"):
        subset_wnids("IN-S3")
    bad = tmp_path / "bad.txt"
    bad.write_text("n01440764\ndog\n")
    with pytest.raises(DataError, match="'dog' is not a WNID"):
        read_class_list(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_class_list(tmp_path / "missing.txt")


def test_unreadable_image_names_the_file(fake_imagenet):
    root, _, _ = fake_imagenet
    garbage = root / "val" / WNIDS[1] / "broken.JPEG"
    garbage.write_bytes(b"this is not an image" * 10)
    splits = imagenet_subset(root, "IN-S2", fake_imagenet[2])
    idx = [i for i, (p, _) in enumerate(splits["original"].samples) if p == garbage][0]
    with pytest.raises(DataError, match="broken.JPEG"):
        splits["original"][idx]
    with pytest.raises(DataError, match="broken.JPEG"):
        splits["original"].check_headers()


def test_missing_or_empty_folders(fake_imagenet, tmp_path):
    root, _, class_list = fake_imagenet
    with pytest.raises(DataError, match="has no class folder n02979186"):
        imagenet_subset(root, "IN-S1")  # the fake has only two of IN-S1's WNIDs
    for f in (root / "val" / WNIDS[0]).iterdir():
        f.unlink()
    with pytest.raises(DataError, match="is empty"):
        imagenet_subset(root, "IN-S2", class_list)
    with pytest.raises(DataError, match="does not exist"):
        imagenet_subset(tmp_path / "nowhere", "IN-S2", class_list)


def test_number_parsing():
    assert _number(int)("6") == 6 and _number(int)("6.0") == 6 and _number(float)("0.2") == 0.2
    assert _number(int)("six") == "six"
    with pytest.raises(ConfigError, match="epochs='six' is not a number"):
        Config(epochs="six").validate()
    assert _number(int)("2.5") == "2.5"  # not an int: left for validate to name
    with pytest.raises(ConfigError, match="epochs='2.5' is not accepted; expected an integer"):
        Config(epochs="2.5").validate()


def test_user_error_found_inside_a_wrapped_failure():
    inner = RuntimeError(
        "Caught DataError in DataLoader worker process 0.\nTraceback...\n"
        "shapebias.errors.DataError: unreadable image '/x.png' (OSError)"
    )
    outer = RuntimeError("Training failed")
    outer.worker_failures = {0: inner}
    err = _user_error(outer)
    assert isinstance(err, DataError) and str(err) == "unreadable image '/x.png' (OSError)"
    assert _user_error(RuntimeError("boom")) is None


def _failed_run(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--sparsity", "l1"], ["sparsity='l1'", "none, topk, topk_mean"]),
        (["--model-spec", "vgg"], ["model_spec='vgg'", "code, paper"]),
        (["--dataset", "cifar10"], ["dataset='cifar10'", "synthetic", "IN-S1"]),
        (["--topk", "0"], ["topk=0.0", "(0, 1]"]),
        (["--topk", "1.5"], ["topk=1.5", "(0, 1]"]),
        (["--dataset", "IN-S1"], ["--data-dir"]),
        (["--dataset", "IN-S1", "--data-dir", "{tmp}/nowhere"], ["nowhere", "does not exist"]),
        (
            ["--dataset", "IN-S2", "--data-dir", "{tmp}/imagenet", "--class-list", "{tmp}/in-s2.txt", "--empty"],
            ["is empty"],
        ),
        (
            ["--dataset", "IN-S2", "--data-dir", "{tmp}/imagenet", "--class-list", "{tmp}/in-s2.txt", "--garbage"],
            ["broken.JPEG", "unreadable"],
        ),
    ],
)
def test_bad_input_fails_the_run(args, words, mlflow_store, fake_imagenet, tmp_path, capsys):
    root, _, _ = fake_imagenet
    if "--empty" in args:
        args.remove("--empty")
        for f in (root / "train" / WNIDS[1]).iterdir():
            f.unlink()
    if "--garbage" in args:
        args.remove("--garbage")
        (root / "train" / WNIDS[0] / "broken.JPEG").write_bytes(b"\x00garbage" * 50)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert train_resnet.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # (MLflow may log its store set-up first)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0]
    err = errors[0]
    for w in words:
        assert w in err
    run = _failed_run(mlflow_store)
    assert run.info.status == "FAILED"
    assert run.data.tags["shapebias.task"] == "train_resnet"
    assert "shapebias.error" in run.data.tags
    assert run.data.params["dataset"] in ("synthetic", "cifar10", "IN-S1", "IN-S2")


@pytest.fixture
def ray_local():
    import ray

    yield
    ray.shutdown()


@pytest.mark.slow
def test_end_to_end_ray_mlflow_and_resume(mlflow_store, tmp_path, ray_local):
    """One real run through Ray Train + MLflow at tiny sizes, checkpointed only after its last epoch
    (checkpoint_every beyond the run), then resumed from that checkpoint."""
    from mlflow.tracking import MlflowClient

    tiny = [
        "--synthetic-classes",
        "3",
        "--synthetic-train-per-class",
        "6",
        "--synthetic-test-per-class",
        "4",
        "--image-size",
        "16",
        "--batch-size",
        "6",
        "--lr",
        "0.02",
        "--storage-path",
        str(tmp_path / "ray"),
    ]
    assert train_resnet.main(["--epochs", "2", "--checkpoint-every", "5", *tiny]) == 0
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("shapebias-train_resnet").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert "resnet18-code-topk0.2-synthetic-e2-s0" == run.data.tags["mlflow.runName"]
    folders = [p for p in (tmp_path / "ray" / run_id).glob("checkpoint_*") if p.is_dir()]
    assert len(folders) == 1  # the last epoch's alone
    for p in (
        "sparsity",
        "topk",
        "topk_layers",
        "model_spec",
        "stem_stride",
        "dataset",
        "epochs",
        "seed",
        "num_workers",
    ):
        assert p in run.data.params
    for t in ("shapebias.git_commit", "shapebias.data_fingerprint", "shapebias.versions.torch", "shapebias.device"):
        assert run.data.tags.get(t)
    for m in ("test_acc", "stylized_acc", "shape_bias", "train_loss", "train_acc"):
        assert m in run.data.metrics
    for m in ("test_acc", "stylized_acc", "train_acc"):
        assert 0.0 <= run.data.metrics[m] <= 1.0
    assert "figures/samples.png" in [a.path for a in client.list_artifacts(run_id, "figures")]
    import mlflow

    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)

    # A finished run, or one resumed with other settings, is refused (tests/test_integrity.py); an
    # interrupted one resumes from its checkpoint with the same settings -> epoch 0 is not trained again.
    client.set_terminated(run_id, "KILLED")
    assert train_resnet.main(["--epochs", "2", "--checkpoint-every", "5", "--run-id", run_id, *tiny]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("shapebias.resumed_from_epoch") == "2"
    for key in ("test_acc", "train_loss", "stylized_acc", "shape_bias"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [0, 1]


def test_checkpoint_schedule():
    fixed = CheckpointSchedule(every=2, epochs=5)
    assert [fixed.due(epoch, 1.0) for epoch in range(1, 6)] == [False, True, False, True, True]
    resumed = CheckpointSchedule(every=3, epochs=7)  # counted from the run's start, not the resume
    assert [resumed.due(epoch, 1.0) for epoch in range(5, 8)] == [False, True, True]

    auto = CheckpointSchedule(every=0, epochs=10)
    assert auto.due(1, 1.0)  # the first epoch: the cost of a checkpoint is not known yet
    auto.saved(0.02)  # then one after every AUTO_CHECKPOINT_RATIO * 0.02 s of epochs
    step = AUTO_CHECKPOINT_RATIO * 0.02 / 2.5
    assert [auto.due(epoch, step) for epoch in (2, 3, 4)] == [False, False, True]
    auto.saved(1.0)  # a slower checkpoint: fewer of them
    assert not any(auto.due(epoch, step) for epoch in range(5, 10))
    assert auto.due(10, step)  # the last epoch always has one
    assert CheckpointSchedule(every=0, epochs=3).due(1, 0.0)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        Config(checkpoint_every=-1).validate()


def test_background_metric_logger(mlflow_store):
    """Queued points arrive in order, once per (key, step); a failed log is raised by flush()."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from shapebias.tracking import MetricLogger, RunRef

    with mlflow.start_run() as run:
        ref = RunRef(mlflow_store, run.info.run_id, run.info.experiment_id)
    logger = MetricLogger(ref, background=True)
    for step in (0, 1, 1):
        logger.log({"train_loss": 1.0 / (step + 1), "test_acc": 0.5}, step=step)
    logger.close()
    history = MlflowClient(mlflow_store).get_metric_history(ref.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]
    broken = MetricLogger(RunRef(mlflow_store, "0" * 32, ref.experiment_id), background=True)
    broken.log({"train_loss": 1.0}, step=0)
    with pytest.raises(Exception, match="0" * 32):
        broken.flush()
    broken.close()


def test_run_names_differ_when_settings_differ():
    names = {
        Config(**kw).run_name()
        for kw in ({}, {"topk": 0.1}, {"sparsity": "none"}, {"epochs": 2}, {"model_spec": "paper"}, {"seed": 1})
    }
    assert len(names) == 6
    assert Config().run_name() == "resnet18-code-topk0.2-synthetic-e6-s0"


@pytest.mark.slow
def test_run_is_described_for_comparison(mlflow_store, tmp_path, ray_local):
    """A tiny run lands in its task's experiment with a description, dataset inputs, a model
    signature and labelled figures."""
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    args = [
        "--epochs",
        "1",
        "--synthetic-classes",
        "3",
        "--synthetic-train-per-class",
        "4",
        "--synthetic-test-per-class",
        "3",
        "--image-size",
        "16",
        "--batch-size",
        "6",
        "--topk",
        "0.3",
        "--storage-path",
        str(tmp_path / "ray"),
    ]
    assert train_resnet.main(args) == 0
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("shapebias-train_resnet")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "resnet18-code-topk0.3-synthetic-e1-s0"
    note = run.data.tags["mlflow.note.content"]
    for words in ("ResNet-18", "topk k=0.3", "1 epoch", "synthetic", "off-protocol"):
        assert words in note
    assert all(v != "" for v in run.data.params.values()) and "data_dir" not in run.data.params
    for tag in ("shapebias.samples_logged", "shapebias.num_classes"):
        assert tag not in run.data.tags
    inputs = {(d.dataset.name, d.dataset.digest, d.tags[0].value) for d in run.inputs.dataset_inputs}
    digest = run.data.tags["shapebias.data_fingerprint"]
    assert inputs == {("synthetic-train", digest, "training"), ("synthetic-test", digest, "evaluation")}
    train_rows = json.loads(
        [d for d in run.inputs.dataset_inputs if d.dataset.name == "synthetic-train"][0].dataset.profile
    )
    assert train_rows["num_rows"] == 3 * 4
    model = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert list(model.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, 16, 16]
    assert list(model.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3]
    assert model.saved_input_example_info["type"] == "ndarray"
    figures = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "figures")}
    assert set(figures) == {"figures/samples.png", "figures/confusion_test.png", "figures/curves.png"}
    assert all(size > 5000 for size in figures.values())
