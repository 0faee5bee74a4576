"""Where protocol values come from: files of the two public code bases, and the two reports."""

from __future__ import annotations

PRIOR_REPO = "COMP6258-Reproducibility-Challenge/emergence-of-shape-bias"
AUTHORS_REPO = "Crazy-Jack/nips2023_shape_vs_texture"

PRIOR_TRAIN = f"{PRIOR_REPO}: cnns-train-top-k/train_resnet.py"
PRIOR_MODEL = f"{PRIOR_REPO}: cnns-train-top-k/resnet_model.py"
PRIOR_DATA = f"{PRIOR_REPO}: cnns-train-top-k/utils.py"
PRIOR_REPORT = "prior reproduction's report (Rungseesiripak et al., University of Southampton)"
TORCHBEARER = (
    "pytorchbearer/torchbearer 0.5.5 (pinned in the prior reproduction's requirements.txt): "
    "torchbearer/trial.py Trial.run"
)

AUTHORS_TRAIN = f"{AUTHORS_REPO}: cnns-train-top-k/train_imgnet_10.py"
AUTHORS_SCRIPTS = f"{AUTHORS_REPO}: cnns-train-top-k/scripts/IN-S1/run_topk.sh"
AUTHORS_INFERENCE = f"{AUTHORS_REPO}: cnns-inference-top-k/network_architecture.txt"
AUTHORS_DECISIONS = f"{AUTHORS_REPO}: cnns-inference-top-k/model-vs-human_topK/raw-data/cue-conflict"
PAPER = "Li, Wen, Li & Lee, NeurIPS 2023"
MODEL_VS_HUMAN = "bethgelab/model-vs-human: cue-conflict data set and shape-bias rule (Geirhos et al. 2021)"


def cite(source: str, detail: str) -> str:
    """``source (detail)``: a file and the line of it that holds the value."""
    return f"{source} ({detail})"
