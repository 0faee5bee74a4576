"""The synthetic shape-bias study: ResNet-18 with and without Top-K on the generated cue-conflict
benchmark (``shapebias.data.synthetic``), many seeds, small enough for a laptop.

One protocol per variant, ``synthetic.<sparsity>[.<k in %>]``: the dense model and Top-K / Top-K
mean replacement at each level of :data:`LEVELS` (9 in all); a variant's runs are its seeds.
Unlike the other families this is no published experiment: its settings were chosen once with a
pilot (``docs/synthetic-study.md``: the pilot's command and numbers) so that the dense model
learns the task well yet stays texture-biased and the whole study fits in minutes on two cores;
they are fixed since.
"""

from __future__ import annotations

from shapebias.protocols.model import Protocol, Setting
from shapebias.protocols.sources import PRIOR_MODEL, cite

TABLE = "synthetic"
PREFIX = "synthetic."
SPARSITIES = ("none", "topk", "topk_mean")
LEVELS = (0.05, 0.1, 0.2, 0.4)
SEEDS = tuple(str(s) for s in range(8))  # 9 variants x 8 seeds = 72 runs
PILOT = "docs/synthetic-study.md (pilot)"
TITLE = {"none": "dense", "topk": "Top-K", "topk_mean": "Top-K mean replacement"}

SETTINGS = {
    "model_spec": Setting("code", cite(PRIOR_MODEL, "the Code-Spec network of Table 1")),
    "stem_stride": Setting(2, cite(PRIOR_MODEL, "stem stride 2, as Table 1")),
    "topk_layers": Setting(
        "layer1",
        "study design: at 16 px layer1's maps are 8x8, so k = 5, 10, 20, 40 % keep 3, 6, 12, "
        "25 positions; layer2's 4x4 maps would keep 1 position at both 5 and 10 %",
    ),
    "dataset": Setting("synthetic", "the generated cue-conflict benchmark: no download"),
    "epochs": Setting(6, PILOT),
    "batch_size": Setting(32, PILOT),
    "lr": Setting(0.05, PILOT),
    "num_workers": Setting(1, "one process per run (a Ray task), a global batch of batch_size"),
    "synthetic_classes": Setting(6, PILOT),
    "synthetic_train_per_class": Setting(40, PILOT),
    "synthetic_test_per_class": Setting(20, PILOT),
    "image_size": Setting(16, PILOT),
}
IMPLIED = {
    "schedule": Setting("cosine to 0 over the epochs, stepped once per epoch", "training/train_resnet.py cosine_lr"),
    "evaluation": Setting("after the last epoch, on 'original', 'stylized' and 'cue_conflict'", "training/study.py"),
}
DEVIATIONS = (
    "Not a published experiment: generated 16-pixel images of six shape/texture classes instead of ImageNet "
    "subsets, 6 epochs instead of 50, Top-K after layer1 instead of layer2; it tests the direction of the "
    "paper's claims on a toy problem, not its numbers.",
)


def name_of(sparsity: str, level: float | None = None) -> str:
    if sparsity == "none":
        return f"{PREFIX}{sparsity}"
    if level is None:
        raise ValueError(f"a {sparsity} protocol needs a Top-K level")
    return f"{PREFIX}{sparsity}.{level * 100:g}"


def protocol(sparsity: str, level: float | None = None) -> Protocol:
    settings = {"sparsity": Setting(sparsity, "study design (docs/synthetic-study.md)")}
    if sparsity != "none":
        settings["topk"] = Setting(level, "study design: k in 5, 10, 20, 40 %")
    settings.update(SETTINGS)
    if sparsity == "none":
        settings.pop("topk_layers")
    title = TITLE[sparsity] + ("" if level is None else f", k = {level * 100:g} %")
    return Protocol(
        name=name_of(sparsity, level),
        task="train_resnet",
        table=TABLE,
        title=f"Synthetic study: ResNet-18 {title}",
        settings=settings,
        implied=IMPLIED,
        deviations=DEVIATIONS,
    )


def protocols() -> list[Protocol]:
    return [protocol(s, level) for s in SPARSITIES for level in ((None,) if s == "none" else LEVELS)]
