"""Table 2 of the prior reproduction: FastGAN FID with and without Top-K (and noise) on few-shot sets.

One protocol per dataset x variant, ``table2.<dataset>.<variant>``; its runs are the seeds of the
cell. The prior reproduction ran the authors' ``TopKGen`` (its copy differs only by the noise
injection that works), with the authors' run scripts and their FID evaluator, so the values are
those of the authors' scripts; the FID protocol is ``authors``.

* Table 2a (jeep, fish, train, table): Baseline, Top K (5 %; 15 % for table, as the scripts),
  Top K + Noise.
* Table 2b (IN-S1-C5, IN-S3-C1): Baseline, Top K = 5 %, Top K = 15 %, Top K = 15 % + Noise.
"""

from __future__ import annotations

from shapebias.protocols.model import Protocol, Setting
from shapebias.protocols.sources import AUTHORS_REPO, PRIOR_REPO, PRIOR_REPORT, cite

TABLE = "table2"
GAN = "few-shot-img-syn/TopKGen"
AUTHORS_GAN_TRAIN = f"{AUTHORS_REPO}: {GAN}/train.py"
AUTHORS_GAN_OPTIONS = f"{AUTHORS_REPO}: {GAN}/options/__init__.py"
AUTHORS_EVAL = f"{AUTHORS_REPO}: {GAN}/utlis/eval_agent_module.py"
AUTHORS_GAN_MODELS = f"{AUTHORS_REPO}: {GAN}/models.py"
PRIOR_GAN_MODELS = f"{PRIOR_REPO}: {GAN}/models.py"

# Table 2a's datasets -> the authors' script folder (their "railway" is the tables' "train")
SCRIPT_OF = {
    "jeep": "jeep",
    "fish": "fish",
    "train": "railway",
    "table": "table",
    "IN-S1-C5": "in_s1_train/5",
    "IN-S3-C1": "in_s3_train/1",
}
TABLE2A = ("jeep", "fish", "train", "table")
TABLE2B = ("IN-S1-C5", "IN-S3-C1")
K_SCRIPT = {"table": 0.15}  # --sparse_hw_info 32_15; every other script 32_5


def _script(dataset: str) -> str:
    repo = AUTHORS_REPO if dataset in TABLE2A else PRIOR_REPO
    return f"{repo}: {GAN}/scripts/{SCRIPT_OF[dataset]}/run.sh"


def _common(dataset: str) -> dict[str, Setting]:
    script = _script(dataset)
    return {
        "im_size": Setting(256, cite(script, "--im_size 256")),
        "iterations": Setting(100000, cite(script, "--iter 100000")),
        "batch_size": Setting(8, cite(script, "--batch_size 8")),
        "width": Setting(64, cite(AUTHORS_GAN_TRAIN, "ndf = 64, ngf = 64")),
        "lr": Setting(0.0002, cite(AUTHORS_GAN_TRAIN, "nlr = 0.0002, nbeta1 = 0.5")),
        "ema_decay": Setting(0.999, cite(AUTHORS_GAN_TRAIN, "avg_p.mul_(0.999).add_(0.001 * p.data)")),
        "recon_loss": Setting(
            "lpips", cite(AUTHORS_GAN_TRAIN, "percept = lpips.PerceptualLoss(model='net-lin', net='vgg')")
        ),
        "fid_protocol": Setting(
            "authors",
            cite(script, "--fid_feature_extractor_name inception-v3-compat") + "; " + cite(AUTHORS_EVAL, "Evaler"),
        ),
        "fid_every": Setting(1000, cite(AUTHORS_GAN_TRAIN, "eval when iteration % 1000 == 0")),
        "fid_samples": Setting(3000, cite(AUTHORS_GAN_TRAIN, "n_sample = 3000")),
        "fid_dims": Setting(2048, cite(AUTHORS_EVAL, "torch_fidelity.calculate_metrics(fid=True): pool3 features")),
        "rollback_patience": Setting(10, cite(AUTHORS_GAN_OPTIONS, "--backup_scheduler_patience default 10")),
        "perturb_g": Setting(0.0001, cite(script, "--eps_G 1e-4")),
        "perturb_d": Setting(0.0, cite(AUTHORS_GAN_OPTIONS, "--eps_D default 0.")),
    }


def _variants(dataset: str) -> list[tuple[str, str, str, float | None, bool]]:
    """(name, title, sparsity, k, noise) of the dataset's rows."""
    if dataset in TABLE2A:
        k = K_SCRIPT.get(dataset, 0.05)
        return [
            ("baseline", "Baseline", "none", None, False),
            ("topk", "Top K", "topk", k, False),
            ("topk-noise", "Top K + Noise", "topk", k, True),
        ]
    return [
        ("baseline", "Baseline", "none", None, False),
        ("topk5", "Top K=5", "topk", 0.05, False),
        ("topk15", "Top K=15", "topk", 0.15, False),
        ("topk15-noise", "Top K=15 + Noise", "topk", 0.15, True),
    ]


def protocol(dataset: str, variant: str, title: str, sparsity: str, k: float | None, noise: bool) -> Protocol:
    script = _script(dataset)
    part = "2a" if dataset in TABLE2A else "2b"
    row = cite(PRIOR_REPORT, f"Table {part}, row {title!r}, column {dataset}")
    settings = {
        "dataset": Setting(dataset, row),
        "sparsity": Setting(sparsity, cite(script, "--sp_hw_policy_name TopKMaskHW") if sparsity != "none" else row),
    }
    if k is not None:
        flag = "32_15" if k == 0.15 else "32_5"
        source = cite(script, f"--sparse_hw_info {flag}") if K_SCRIPT.get(dataset, 0.05) == k else row
        settings["topk"] = Setting(k, source)
    settings["noise_injection"] = Setting(
        noise,
        cite(PRIOR_GAN_MODELS, "NoiseInjection applies w * noise, w from 0") if noise else cite(script, "--nonoise"),
    )
    settings.update(_common(dataset))
    return Protocol(
        name=f"{TABLE}.{dataset}.{variant}",
        task="train_fastgan",
        table=TABLE,
        title=f"FastGAN {title} on {dataset}",
        settings=settings,
        implied=IMPLIED,
        deviations=DEVIATIONS,
    )


IMPLIED = {
    "architecture": Setting(
        "generator 29,127,846 and discriminator 11,526,160 parameters at 256 px; outputs without tanh",
        AUTHORS_GAN_MODELS,
    ),
    "topk_rule": Setting(
        "keep the max(1, int(k * 1024)) largest |x| per channel of the 32x32 feature map",
        cite(f"{AUTHORS_REPO}: {GAN}/TopkLoss/topk_loss_module.py", "sparse_hw"),
    ),
    "recon_reduction": Setting(
        "LPIPS summed over the batch; targets nearest-resized",
        cite(AUTHORS_GAN_TRAIN, "percept(rec, F.interpolate(data, ...)).sum()"),
    ),
    "fid": Setting("3,000 samples, best of 3, uint8 [127, 255] pixels; the best evaluation of the run", AUTHORS_EVAL),
}
DEVIATIONS = (
    "FID is computed on pytorch-fid's Inception network with the authors' pipeline rebuilt around it "
    "(shapebias/metrics/fid_authors.py), not through torch-fidelity; the weights are the same TensorFlow graph.",
    "The authors' loop trains iterations 0..100,000 inclusive (100,001 steps); the job trains 100,000.",
    "Batches are drawn with replacement; the authors draw epochs of a random permutation. Random streams differ.",
    "Only jeep and fish ship as few-shot folders; 'train' (the authors' railway), 'table' and the prior "
    "reproduction's IN-S1-C5 / IN-S3-C1 folders must be supplied (--data-root).",
)


def protocols() -> list[Protocol]:
    return [protocol(ds, *variant) for ds in (*TABLE2A, *TABLE2B) for variant in _variants(ds)]
