"""The 16 entry-level categories of Geirhos et al. and the ImageNet classes behind each.

Fact table: the ImageNet-1k class indices (torchvision's order, 0..999) that model-vs-human
aggregates into each of its 16 categories; 207 indices in all. Source: Geirhos et al.,
"Partial success in closing the gap between human and machine vision", NeurIPS 2021, and its
code, bethgelab/model-vs-human, ``modelvshuman/helper/human_categories.py`` (the ``*_indices``
lists). Encoded here by hand; the code around it is this project's own.

Decision rule (model-vs-human's ``ImageNetProbabilitiesTo16ClassesMapping``): softmax over the
1,000 logits; each category scores the *mean* probability over its ImageNet classes; the
decision is the highest-scoring category.
"""

from __future__ import annotations

import torch

# Sorted alphabetically, as model-vs-human sorts them; the column order of every score tensor.
CATEGORIES: tuple[str, ...] = (
    "airplane",
    "bear",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "car",
    "cat",
    "chair",
    "clock",
    "dog",
    "elephant",
    "keyboard",
    "knife",
    "oven",
    "truck",
)

IMAGENET_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (
        8,
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        18,
        19,
        20,
        22,
        23,
        24,
        80,
        81,
        82,
        83,
        87,
        88,
        89,
        90,
        91,
        92,
        93,
        94,
        95,
        96,
        98,
        99,
        100,
        127,
        128,
        129,
        130,
        131,
        132,
        133,
        135,
        136,
        137,
        138,
        139,
        140,
        141,
        142,
        143,
        144,
        145,
    ),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (
        152,
        153,
        154,
        155,
        156,
        157,
        158,
        159,
        160,
        161,
        162,
        163,
        164,
        165,
        166,
        167,
        168,
        169,
        170,
        171,
        172,
        173,
        174,
        175,
        176,
        177,
        178,
        179,
        180,
        181,
        182,
        183,
        184,
        185,
        186,
        187,
        188,
        189,
        190,
        191,
        193,
        194,
        195,
        196,
        197,
        198,
        199,
        200,
        201,
        202,
        203,
        205,
        206,
        207,
        208,
        209,
        210,
        211,
        212,
        213,
        214,
        215,
        216,
        217,
        218,
        219,
        220,
        221,
        222,
        223,
        224,
        225,
        226,
        228,
        229,
        230,
        231,
        232,
        233,
        234,
        235,
        236,
        237,
        238,
        239,
        240,
        241,
        243,
        244,
        245,
        246,
        247,
        248,
        249,
        250,
        252,
        253,
        254,
        255,
        256,
        257,
        259,
        261,
        262,
        263,
        265,
        266,
        267,
        268,
    ),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}

NUM_IMAGENET_CLASSES = 1000


def category_of_index(index: int) -> str | None:
    """The category that ImageNet class ``index`` belongs to, or None (most classes)."""
    for name, indices in IMAGENET_INDICES.items():
        if index in indices:
            return name
    return None


def aggregation_matrix(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (1000, 16) matrix whose product with probabilities gives each category's mean."""
    m = torch.zeros(NUM_IMAGENET_CLASSES, len(CATEGORIES), dtype=dtype)
    for j, name in enumerate(CATEGORIES):
        idx = torch.tensor(IMAGENET_INDICES[name])
        m[idx, j] = 1.0 / len(idx)
    return m


def category_scores(logits: torch.Tensor) -> torch.Tensor:
    """(N, 1000) logits -> (N, 16) mean softmax probability per category (CATEGORIES order)."""
    if logits.dim() != 2 or logits.shape[1] != NUM_IMAGENET_CLASSES:
        raise ValueError(f"expected (N, 1000) ImageNet logits, got shape {tuple(logits.shape)}")
    probs = torch.softmax(logits.float(), dim=1)
    return probs @ aggregation_matrix(probs.dtype).to(probs.device)


def decisions_from_logits(logits: torch.Tensor) -> list[str]:
    """model-vs-human's 16-class decision for each row of (N, 1000) logits."""
    best = category_scores(logits).argmax(dim=1).tolist()
    return [CATEGORIES[i] for i in best]
