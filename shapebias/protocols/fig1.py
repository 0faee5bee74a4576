"""The authors' Fig. 1 sweep: shape bias of pretrained AlexNet / VGG-16 with Top-K at inference.

One protocol per model x sparsity x level, ``fig1.<model>.<sparsity>[.<level in %>]``: the levels
whose decisions the authors committed (``reproduces=true`` in ``li2023_shape_bias.csv``).
"""

from __future__ import annotations

from shapebias.protocols.model import Protocol, Setting
from shapebias.protocols.sources import AUTHORS_DECISIONS, AUTHORS_INFERENCE, MODEL_VS_HUMAN, cite

TABLE = "shape_bias"
LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
SWEEPS = (("alexnet", "none"), ("alexnet", "topk"), ("alexnet", "complement"), ("vgg16", "none"), ("vgg16", "topk"))
FILE_MODEL = {"alexnet": "AlexNet", "vgg16": "VGG"}
TITLE = {"none": "dense", "topk": "Top-K", "complement": "non-Top-K activations only"}

WEIGHTS = Setting("pretrained", "torchvision's ImageNet weights, as model-vs-human loads alexnet and vgg16")
LIMIT = Setting(0, cite(MODEL_VS_HUMAN, "all 1,280 cue-conflict images"))

IMPLIED = {
    "topk_placement": Setting(
        "AlexNet: after max-pool 1, max-pool 2, conv3, conv4 and the last max-pool; "
        "VGG-16: after each of its five max-pools",
        AUTHORS_INFERENCE,
    ),
    "decision_rule": Setting(
        "ImageNet logits mapped to the 16 categories; shape / (shape + texture) over the "
        "trials whose shape and texture classes differ",
        MODEL_VS_HUMAN,
    ),
}
DEVIATIONS = (
    "The authors' VGG-topK0 ... VGG-topK10 and VGG-topK decision files name no documented level and have no protocol.",
)


def _file(model: str, sparsity: str, level: float | None) -> str:
    if sparsity == "none":
        return f"cue-conflict_{FILE_MODEL[model]}-normal_session-1.csv"
    if level is None:
        raise ValueError(f"a {sparsity} model needs a Top-K level")
    suffix = "-Revert" if sparsity == "complement" else ""
    return f"cue-conflict_{FILE_MODEL[model]}-topK-{level * 100:g}{suffix}_session-1.csv"


def protocol(model: str, sparsity: str, level: float | None = None) -> Protocol:
    source = cite(AUTHORS_DECISIONS, _file(model, sparsity, level))
    settings = {"model": Setting(model, source), "sparsity": Setting(sparsity, source)}
    if sparsity != "none":
        settings["topk"] = Setting(level, source)
    settings.update(weights=WEIGHTS, limit=LIMIT)
    name = f"fig1.{model}.{sparsity}" + ("" if level is None else f".{level * 100:g}")
    title = f"{model} {TITLE[sparsity]}" + ("" if level is None else f", k = {level * 100:g} %")
    return Protocol(
        name=name,
        task="shape_bias",
        table=TABLE,
        title=title,
        settings=settings,
        implied=IMPLIED,
        deviations=DEVIATIONS,
    )


def protocols() -> list[Protocol]:
    return [
        protocol(model, sparsity, level)
        for model, sparsity in SWEEPS
        for level in ((None,) if sparsity == "none" else LEVELS)
    ]
