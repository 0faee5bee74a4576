"""Shape bias of ImageNet-pretrained AlexNet / VGG-16 with Top-K at inference (Li et al. 2023, Fig. 1).

    mlflow run . -e shape_bias --env-manager local -P model=alexnet -P topk=0.1
    mlflow run . -e shape_bias --env-manager local -P model=vgg16 -P topk=1.0,0.05,0.1,0.2,0.3,0.4,0.5
    python -m training.shape_bias --protocol fig1.alexnet.topk.5,fig1.alexnet.topk.10   # published levels

One level of ``topk`` gives one run; several give a sweep: a parent run (param ``sweep=true``, the
curve plot and a summary CSV) with one nested child run per level. Every evaluated level logs
``shape_bias``, ``shape_bias.<category>``, ``shape_acc``, ``texture_acc`` and ``accuracy_16``
(model-vs-human's rules, :mod:`shapebias.metrics.shape_bias`), the decisions as a
model-vs-human result CSV and the two plots. ``weights=random`` runs are tagged
``shapebias.weights=random`` and named ``RANDOM-WEIGHTS ...``: they time the pipeline, they are
not results. ``--protocol`` names the published levels (``shapebias protocols fig1``) and sets
their settings; each level's run is tagged with its own protocol and whether it is on it.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shapebias import protocols, settings, tracking
from shapebias.errors import ConfigError, check_choice, check_fraction
from shapebias.metrics import shape_bias as sb
from shapebias.models.pretrained_spec import MODELS
from shapebias.plots import (
    DecisionMaker,
    figure_curves,
    plot_category_shape_bias,
    plot_sparsity_curve,
    reference_decision_makers,
)
from training.cliargs import parser_from_config, setting, to_int
from training.cliargs import unquote as _unquote

if TYPE_CHECKING:  # torch is imported where it is used: --help answers without it
    import torch

    from shapebias.data import cue_conflict

TASK = "shape_bias"
SPARSITIES = ("none", "topk", "complement")
RANDOM_PREFIX = "RANDOM-WEIGHTS"


@dataclasses.dataclass
class Config:
    """The job's settings as given (numbers are checked inside the run, so a bad one fails the run)."""

    protocol: str = setting(
        "", "published level(s) to repeat, comma-separated for a sweep (`shapebias protocols fig1`)"
    )
    model: str = setting("alexnet", "ImageNet model scored on cue-conflict", MODELS)
    sparsity: str = setting("topk", "Top-K at inference, or its complement", SPARSITIES)
    topk: str = setting(
        "0.05,0.1,0.2,0.3,0.4,0.5", "fraction kept per channel, or a comma-separated sweep (1.0 = dense)"
    )
    weights: str = setting("pretrained", "pretrained | random | /path/to/file.pth")
    data_dir: str = setting("", "cue-conflict folder (empty: from settings)")
    batch_size: str = setting("32", "images per forward pass")
    limit: str = setting("0", "evaluate only this many images (0 = all)")
    seed: str = setting("0", "seed of the random weights (weights=random only)")
    device: str = setting("auto", "where to run", ("auto", "cpu", "cuda"))


PROTOCOL_SET = {k for p in protocols.for_task(TASK) for k in p.settings}  # settings some protocol sets


def parse_args(argv: list[str] | None) -> Config:
    """Defaults, then the protocol's settings, then the flags given (non-empty): an explicit flag wins."""
    p = parser_from_config(
        Config,
        "shapebias shape-bias",
        __doc__.split("\n\n")[0],
        suppress=True,
        default_note=lambda name: ", or the protocol's" if name in PROTOCOL_SET else "",
    )
    given = {k: _unquote(v) for k, v in vars(p.parse_args(argv)).items() if _unquote(v) != ""}
    defaults = dataclasses.asdict(Config())
    try:
        values = protocols.resolve(TASK, defaults, given.get("protocol", ""), given)
    except ConfigError:  # reported inside the run
        values = {**defaults, **given}
    return Config(**{k: str(v) for k, v in values.items()})


def level_claim(claimed: str, sparsity: str, k: float) -> str:
    """The protocol one level of a sweep claims: the named one of that level, else the whole claim."""
    for name in protocols.names_of(claimed):
        p = protocols.REGISTRY.get(name)
        if (
            p is not None
            and p.values().get("sparsity") == sparsity
            and (sparsity == "none" or p.values().get("topk") == protocols.canonical(k))
        ):
            return name
    return claimed


def parse_levels(sparsity: str, topk: str) -> list[float]:
    """The sparsity levels to evaluate: fractions in (0, 1]; ``none`` is the single level 1.0."""
    if sparsity == "none":
        return [1.0]
    parts = [t.strip() for t in str(topk).split(",") if t.strip()]
    if not parts:
        raise ConfigError("topk is empty; expected a fraction in (0, 1] or a comma-separated list")
    levels = [check_fraction("topk", t) for t in parts]
    return sorted(set(levels), key=levels.index)


def level_label(model: str, sparsity: str, k: float) -> str:
    """Decision-maker name in model-vs-human style: ``alexnet_topk_10``, ``vgg16_normal``."""
    from shapebias.models import pretrained

    if pretrained.is_dense(sparsity, k):
        return f"{model}_normal"
    return f"{model}_{sparsity}_{k * 100:g}"


def description(model: str, weights: str, sparsity: str, levels: list[float], n: int, data_dir: Path, claim) -> str:
    """One paragraph for the run's description: model and weights, sparsity and k, images, protocol."""
    if sparsity == "none":
        what = "dense (no Top-K)"
    else:
        what = f"{sparsity} at k = {', '.join(f'{k:g}' for k in levels)} (Top-K at inference)"
    source = "random weights (pipeline check only)" if weights == "random" else f"{weights} weights"
    protocol = claim.describe() if claim.on_protocol else f"off-protocol: {claim.describe()}"
    return f"{model} with {source}, {what}, scored for shape bias on {n} cue-conflict images from {data_dir}. " + (
        f"{protocol}."
    )


def log_images(images: list, fingerprint: str, data_dir: Path) -> None:
    """The cue-conflict images as the run's evaluation input: one row per image (file, shape, texture)."""
    import pandas as pd

    rows = [{"file": im.imagename, "shape": im.shape, "texture": im.texture} for im in images]
    frame = pd.DataFrame(rows, columns=["file", "shape", "texture"])
    tracking.log_dataset(frame, name="cue-conflict", digest=fingerprint, context="evaluation", source=str(data_dir))


def select_device(name: str) -> torch.device:
    import torch

    check_choice("device", name, ("auto", "cpu", "cuda"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


def load_images(images: list[cue_conflict.CueConflictImage]) -> torch.Tensor:
    """All images as one uint8 tensor (1,280 x 3 x 224 x 224 is 193 MB): decoded once per job."""
    import torch
    from tqdm import tqdm

    from shapebias.data import cue_conflict

    loader = torch.utils.data.DataLoader(cue_conflict.CueConflictDataset(images), batch_size=64)
    batches = [x for x, _ in tqdm(loader, desc="loading cue-conflict images", unit="batch")]
    return torch.cat(batches)


def decide(model: torch.nn.Module, pixels: torch.Tensor, batch_size: int, device: torch.device, desc: str) -> list[str]:
    """Batched inference -> model-vs-human's 16-class decision per image."""
    import torch
    from tqdm import tqdm

    from shapebias.data import cue_conflict
    from shapebias.metrics.imagenet16 import decisions_from_logits

    with torch.inference_mode():
        model = model.to(device).eval()
        decisions: list[str] = []
        for start in tqdm(range(0, len(pixels), batch_size), desc=desc, unit="batch"):
            x = cue_conflict.normalize(pixels[start : start + batch_size].to(device))
            decisions += decisions_from_logits(model(x).float().cpu())
    return decisions


def evaluate_level(cfg: dict, dense: torch.nn.Module, pixels: torch.Tensor, images, reference, out: Path) -> dict:
    """Evaluate one level inside the active run: metrics, decisions CSV, plots."""
    import mlflow

    from shapebias.models import pretrained

    k, sparsity, model_name = cfg["topk"], cfg["sparsity"], cfg["model"]
    subj = level_label(model_name, sparsity, k) + ("_" + RANDOM_PREFIX if cfg["random"] else "")
    net = pretrained.with_sparsity(dense, model_name, sparsity, k)
    started = time.time()
    decisions = decide(net, pixels, cfg["batch_size"], cfg["device"], desc=subj)
    seconds = time.time() - started
    shape = [im.shape for im in images]
    texture = [im.texture for im in images]
    metrics = sb.analyse(decisions, shape, texture)
    logged = sb.finite(metrics)
    mlflow.log_metrics({**logged, "inference_seconds": seconds})

    out.mkdir(parents=True, exist_ok=True)
    csv_path = sb.write_results_csv(out, subj, decisions, shape, [im.imagename for im in images])
    label = subj  # carries the RANDOM-WEIGHTS suffix for random weights
    ours = DecisionMaker.from_cues(label, decisions, shape, texture, color="#1f77b4", marker="o")
    entries = [ours]
    if reference is not None:
        if reference.humans is not None:
            entries.insert(0, reference.humans)
        key = (model_name, "none" if pretrained.is_dense(sparsity, k) else sparsity, round(k, 4))
        published = reference.makers.get(key)
        if published is not None:
            entries.append(published)
    cat_png = plot_category_shape_bias(entries, out / "shape_bias_by_category.png", title=label)
    curves, refs = figure_curves({label: [(k, metrics["shape_bias"])]}, reference)
    curve_png = plot_sparsity_curve(curves, out / "shape_bias_curve.png", references=refs)
    mlflow.log_artifact(str(csv_path), "decisions")
    mlflow.log_artifact(str(cat_png), "plots")
    mlflow.log_artifact(str(curve_png), "plots")
    return {"k": k, "subj": subj, "metrics": metrics, "seconds": seconds, "run_id": mlflow.active_run().info.run_id}


@tracking.cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mlflow

    from shapebias.data import cue_conflict
    from shapebias.models import pretrained

    weights = args.weights
    is_random = weights == "random"
    levels_text = str(args.topk)
    sweep = args.sparsity != "none" and len([t for t in levels_text.split(",") if t.strip()]) > 1
    name = f"{args.model} {args.sparsity}" + ("" if args.sparsity == "none" else f" k={levels_text}")
    run_name = f"{RANDOM_PREFIX} {name}" if is_random else name
    params = {**dataclasses.asdict(args), "dataset": "cue-conflict", "sweep": str(sweep).lower()}
    tags = {tracking.WEIGHTS_TAG: "random" if is_random else "pretrained"}
    t0 = time.time()
    with tracking.tracked_run(TASK, params, run_name=run_name, tags=tags) as run:
        mlflow.set_tag("mlflow.runName", run_name)  # also when resuming the run `mlflow run` made
        claim = protocols.check(TASK, args.protocol, params)
        mlflow.set_tags(protocols.run_tags(claim))
        if args.protocol:
            protocols.settings_of(TASK, args.protocol)  # an unknown or mixed claim fails the run here
        model_name = args.model.strip().lower()
        pretrained.spec(model_name)
        check_choice("sparsity", args.sparsity, SPARSITIES)
        levels = parse_levels(args.sparsity, levels_text)
        batch_size = to_int("batch_size", args.batch_size, 1)
        limit = to_int("limit", args.limit, 0)
        seed = to_int("seed", args.seed, 0)
        device = select_device(args.device)
        data_dir = cue_conflict.resolve_dir(args.data_dir)
        images = cue_conflict.scan(data_dir, limit=limit)
        pretrained.resolve_weights(model_name, weights)  # a missing file fails before any work
        fingerprint = cue_conflict.fingerprint(images)
        mlflow.set_tag("shapebias.data_fingerprint", fingerprint)
        mlflow.set_tag("shapebias.data_dir", str(data_dir))
        tracking.describe_run(description(model_name, weights, args.sparsity, levels, len(images), data_dir, claim))
        log_images(images, fingerprint, data_dir)

        pixels = load_images(images)
        dense = pretrained.build(model_name, sparsity="none", weights=weights, seed=seed)
        reference = reference_decision_makers(settings.reference_decisions_dir())
        cfg = {
            "model": model_name,
            "sparsity": args.sparsity,
            "batch_size": batch_size,
            "device": device,
            "random": is_random,
        }
        with tempfile.TemporaryDirectory(prefix="shape_bias-") as tmp:
            results = []
            if not sweep:
                results.append(evaluate_level({**cfg, "topk": levels[0]}, dense, pixels, images, reference, Path(tmp)))
            else:
                for i, k in enumerate(levels):
                    child_sparsity = "none" if pretrained.is_dense(args.sparsity, k) else args.sparsity
                    child_name = f"{model_name} {child_sparsity}" + ("" if child_sparsity == "none" else f" k={k:g}")
                    child_params = {**params, "sparsity": child_sparsity, "topk": k, "sweep": "child"}
                    claim_k = protocols.check(TASK, level_claim(args.protocol, child_sparsity, k), child_params)
                    with tracking.tracked_run(
                        TASK,
                        child_params,
                        nested=True,
                        tags={**tags, **protocols.run_tags(claim_k)},
                        run_name=f"{RANDOM_PREFIX} {child_name}" if is_random else child_name,
                    ):
                        res = evaluate_level(
                            {**cfg, "topk": k}, dense, pixels, images, reference, Path(tmp) / f"level{i}"
                        )
                    results.append(res)
                    mlflow.log_metric("shape_bias_sweep", res["metrics"]["shape_bias"], step=int(round(k * 100)))
                summary = Path(tmp) / "sweep_summary.csv"
                with summary.open("w") as f:
                    f.write("topk,sparsity,shape_bias,shape_acc,texture_acc,run_id\n")
                    for r in results:
                        m = r["metrics"]
                        f.write(
                            f"{r['k']},{args.sparsity},{m['shape_bias']},{m['shape_acc']},{m['texture_acc']},{r['run_id']}\n"
                        )
                label = f"{'RANDOM WEIGHTS ' if is_random else ''}{model_name} {args.sparsity} (this run)"
                curves, refs = figure_curves(
                    {label: [(r["k"], r["metrics"]["shape_bias"]) for r in results]}, reference
                )
                curve_png = plot_sparsity_curve(curves, Path(tmp) / "shape_bias_curve.png", references=refs)
                mlflow.log_artifact(str(summary))
                mlflow.log_artifact(str(curve_png), "plots")
        elapsed = time.time() - t0
        mlflow.log_metric("job_seconds", elapsed)

    print(f"\nrun {run.info.run_id} ({run_name}): {len(images)} images, {len(levels)} level(s), {elapsed:.0f} s")
    for r in results:
        m = r["metrics"]
        print(
            f"  {r['subj']:<40} shape_bias={m['shape_bias']:.3f} shape_acc={m['shape_acc']:.3f} "
            f"texture_acc={m['texture_acc']:.3f} ({r['seconds']:.0f} s)"
        )
    if is_random:
        print(
            f"  RANDOM WEIGHTS: these numbers only time the pipeline. The real experiment: put "
            f"{pretrained.default_weights_path(model_name)} in place and run\n"
            f"  mlflow run . -e shape_bias --env-manager local -P model={model_name} "
            f"-P sparsity={args.sparsity} -P topk={levels_text}"
        )
    print(f"  view: {tracking.ui_command()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
