"""For each job with protocols: the ``Config`` fields that change a result, and those that never do.

Every field of the job's ``Config`` dataclass is in exactly one of the two lists
(``tests/test_protocols.py`` holds them to the dataclasses), so a new setting cannot slip past
the comparison unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping

from shapebias.protocols.model import TaskSettings

SYNTHETIC_ONLY = ("synthetic_classes", "synthetic_train_per_class", "synthetic_test_per_class", "image_size")


def _resnet_irrelevant(values: Mapping[str, str]) -> list[str]:
    out = ["topk", "topk_layers"] if values.get("sparsity") == "none" else []
    if values.get("dataset") != "synthetic":
        out += SYNTHETIC_ONLY  # real data sets are read at 224 px
    return out


def _shape_bias_irrelevant(values: Mapping[str, str]) -> list[str]:
    return ["topk"] if values.get("sparsity") == "none" else []


TRAIN_RESNET = TaskSettings(
    task="train_resnet",
    keys=(
        "model_spec",
        "stem_stride",
        "sparsity",
        "topk",
        "topk_layers",
        "dataset",
        "epochs",
        "batch_size",
        "lr",
        "num_workers",
        *SYNTHETIC_ONLY,
    ),
    # num_workers is a result setting: each Ray worker takes batch_size samples a step (global batch).
    ignored=("seed", "data_dir", "stylized_dir", "class_list", "storage_path", "checkpoint_every", "protocol"),
    irrelevant=_resnet_irrelevant,
)

SHAPE_BIAS = TaskSettings(
    task="shape_bias",
    keys=("model", "sparsity", "topk", "weights", "limit"),
    # inference is per image: the batch size, the device and (for pretrained weights) the seed change nothing
    ignored=("data_dir", "batch_size", "seed", "device", "protocol"),
    irrelevant=_shape_bias_irrelevant,
)


def _fastgan_irrelevant(values: Mapping[str, str]) -> list[str]:
    out = ["topk"] if values.get("sparsity") == "none" else []
    if values.get("rollback_patience") == "0":
        out += ["perturb_g", "perturb_d"]
    return out


TRAIN_FASTGAN = TaskSettings(
    task="train_fastgan",
    keys=(
        "dataset",
        "im_size",
        "iterations",
        "batch_size",
        "sparsity",
        "topk",
        "noise_injection",
        "recon_loss",
        "fid_protocol",
        "fid_every",
        "fid_samples",
        "fid_dims",
        "width",
        "lr",
        "ema_decay",
        "rollback_patience",
        "perturb_g",
        "perturb_d",
    ),
    # the data folder is named by `dataset` (and fingerprinted in a tag); the Inception file decides only
    # whether the score is `fid` or `fid_unverified`
    ignored=("data_dir", "fid_weights", "seed", "checkpoint_every", "storage_path", "protocol"),
    irrelevant=_fastgan_irrelevant,
)

TASKS: dict[str, TaskSettings] = {t.task: t for t in (TRAIN_RESNET, TRAIN_FASTGAN, SHAPE_BIAS)}
