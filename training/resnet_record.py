"""What a train_resnet run records besides its metrics, so that runs can be told apart and compared.

* :func:`description`: the run's description (what ran, on what, on which protocol);
* :func:`log_datasets`: the data as MLflow dataset inputs (one row per sample; digest = the data
  fingerprint; ``training`` for the train split, ``evaluation`` for the test splits);
* :func:`log_figures`: labelled samples with the model's predictions (one row per split), the
  confusion matrix of the clean test split and the per-epoch curves, under ``figures/``;
* :func:`log_model`: the trained model with its signature and an input example.

The figures are drawn by :mod:`shapebias.plots`; this module only feeds and logs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from shapebias import plots, tracking

GRID_PER_SPLIT = 8
CURVES = ("train_loss", "train_acc", "test_acc", "stylized_acc", "shape_bias")
FIGURES = {"samples": "figures/samples.png", "confusion": "figures/confusion_test.png", "curves": "figures/curves.png"}


def description(cfg: Any, claim: Any, num_classes: int) -> str:
    """One paragraph: model, sparsity and k, data, epochs, protocol (or off-protocol and why)."""
    sparsity = "dense (no Top-K)" if cfg.sparsity == "none" else f"{cfg.sparsity} k={cfg.topk:g} in {cfg.topk_layers}"
    if cfg.dataset == "synthetic":
        data = (
            f"the synthetic cue-conflict benchmark ({cfg.synthetic_classes} classes, "
            f"{cfg.synthetic_train_per_class} train / {cfg.synthetic_test_per_class} test images per class, "
            f"{cfg.image_size} px)"
        )
    else:
        data = f"ImageNet subset {cfg.dataset} ({num_classes} classes) from {cfg.data_dir}"
    protocol = claim.describe() if claim.on_protocol else f"off-protocol: {claim.describe()}"
    return (
        f"ResNet-18 ({cfg.model_spec} spec, stem stride {cfg.stem_stride}), {sparsity}, "
        f"trained {cfg.epochs} epoch(s) on {data}; batch {cfg.batch_size} per worker x {cfg.num_workers}, "
        f"lr {cfg.lr:g} (cosine), seed {cfg.seed}. {protocol}."
    )


def labels(split: Dataset) -> np.ndarray:
    if hasattr(split, "labels"):
        return np.asarray(split.labels)
    return np.asarray([y for _, y in split.samples])


def class_names(split: Dataset) -> list[str]:
    return list(getattr(split, "class_names", None) or split.wnids)


def _frame(name: str, split: Dataset):
    import pandas as pd

    names = np.asarray(class_names(split))
    frame = pd.DataFrame({"split": name, "label": names[labels(split)]})
    if hasattr(split, "samples"):
        frame["file"] = [str(path) for path, _ in split.samples]
    if name == "cue_conflict":
        frame["shape"] = names[np.asarray(split.shape)]
        frame["texture"] = names[np.asarray(split.texture)]
    return frame


def log_datasets(cfg: Any, data: Mapping[str, Dataset], fingerprint: str) -> None:
    """The train split as the ``training`` input, the test splits together as ``evaluation``."""
    import pandas as pd

    test = [_frame(name, split) for name, split in data.items() if name != "train"]
    source = cfg.data_dir or None
    tracking.log_dataset(
        _frame("train", data["train"]),
        name=f"{cfg.dataset}-train",
        digest=fingerprint,
        context="training",
        source=source,
    )
    if test:
        frame = pd.concat(test, ignore_index=True).fillna("")
        tracking.log_dataset(frame, name=f"{cfg.dataset}-test", digest=fingerprint, context="evaluation", source=source)


def _display(split: Dataset, index: int) -> np.ndarray:
    """An image as H x W x 3 in [0, 1] (the stored pixels, or the model input un-normalised)."""
    if hasattr(split, "images"):
        return split.images[index].permute(1, 2, 0).numpy() / 255.0
    from shapebias.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

    x, _ = split[index]
    x = x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def _grid_index(split: Dataset) -> np.ndarray:
    return np.unique(np.linspace(0, len(split) - 1, min(GRID_PER_SPLIT, len(split))).round().astype(int))


@torch.no_grad()
def _grid_predictions(
    model: nn.Module, data: Mapping[str, Dataset], test_predictions: np.ndarray
) -> dict[str, np.ndarray]:
    """The predictions of every split's grid images: the clean test split's from ``test_predictions``,
    the others' from one forward pass over all of them (a model's first call at a batch size is
    the slow one)."""
    index = {name: _grid_index(split) for name, split in data.items()}
    out = {name: np.asarray(test_predictions)[index[name]] for name in data if name == "original"}
    others = [name for name in data if name not in out]
    if others:
        x = torch.stack([data[name][int(i)][0] for name in others for i in index[name]])
        predicted = model(x).argmax(1).numpy()
        bounds = np.cumsum([len(index[name]) for name in others])[:-1]
        out.update(zip(others, np.split(predicted, bounds), strict=True))
    return out


def _grid_row(name: str, split: Dataset, predicted: np.ndarray) -> list[tuple[np.ndarray, str, bool]]:
    index = _grid_index(split)
    names, truth = class_names(split), labels(split)[index]
    if name == "cue_conflict":
        shape, texture = np.asarray(split.shape)[index], np.asarray(split.texture)[index]
        captions = [
            f"shape {names[s]}\ntexture {names[t]}\npred {names[p]}"
            for s, t, p in zip(shape, texture, predicted, strict=True)
        ]
    else:
        captions = [f"true {names[y]}\npred {names[p]}" for y, p in zip(truth, predicted, strict=True)]
    return [
        (_display(split, int(i)), c, bool(p == y)) for i, c, p, y in zip(index, captions, predicted, truth, strict=True)
    ]


def log_figures(
    model: nn.Module, data: Mapping[str, Dataset], run_name: str, test_predictions: np.ndarray, run_id: str
) -> None:
    """Samples with predictions, the clean test split's confusion matrix, the per-epoch curves."""
    model.eval()
    grid = _grid_predictions(model, data, test_predictions)
    rows = {name: _grid_row(name, split, grid[name]) for name, split in data.items()}
    test = data["original"]
    client = mlflow.MlflowClient()
    histories = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in CURVES}
    figures = {
        "samples": plots.sample_grid_figure(rows, f"{run_name}: samples and predictions (green: right, red: wrong)"),
        "confusion": plots.confusion_figure(
            labels(test), test_predictions, class_names(test), f"{run_name}: clean test split"
        ),
        "curves": plots.curves_figure(histories, f"{run_name}: per epoch"),
    }
    for key, fig in figures.items():
        mlflow.log_figure(fig, FIGURES[key])
        plots.close(fig)


@torch.no_grad()
def log_model(model: nn.Module, example: torch.Tensor) -> None:
    """The whole module (pickle; needs ``shapebias`` importable to load), its signature inferred
    from one input image and its logits, that image as the input example."""
    from mlflow.models import infer_signature

    model.eval()
    x = example[:1].numpy().astype(np.float32)
    signature = infer_signature(x, model(torch.from_numpy(x)).numpy())
    mlflow.pytorch.log_model(
        model,
        name="model",
        serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
        signature=signature,
        input_example=x,
    )
