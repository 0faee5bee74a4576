"""Texture synthesis / feature inversion through Top-K masks (Li et al. 2023, Sec. 3.1), measured.

    mlflow run . -e texture_synthesis --env-manager local -P image=skimage:chelsea
    mlflow run . -e texture_synthesis --env-manager local -P image_size=64 -P steps=5 -P weights=random

Optimisation as the authors' ``texture-synthesis-visualization``: L-BFGS with the strong-Wolfe
line search, ``steps`` outer steps (100) of ``iterations_per_step`` iterations (20), learning
rate 1. The logged ``optimizer``, ``steps``, ``iterations_per_step``, ``lr`` and ``layers`` are
checked against the settings the optimiser actually ran with after every synthesis.

For every image and every mask (``all``, ``topk``, ``complement``; :mod:`shapebias.synthesis`)
the job synthesises a texture from the masked Gram matrices (``method=texture``, Gatys et al.
2015) or reconstructs the image from the masked feature maps (``method=inversion``), then scores
how much of the original's structure survived:

* metrics ``ssim_<mask>`` and ``edge_corr_<mask>`` (mean over the images; per image also
  ``ssim_<mask>.<image>`` when there are several), and ``ssim_noise`` / ``edge_corr_noise``, the
  same scores of the white-noise start (after histogram matching): the chance level;
* curves ``loss_<mask>`` (``loss_<mask>.<image>`` with several images) over L-BFGS steps;
* artifacts ``grids/<image>.png`` (original | all | Top-K | complement), ``images/<image>_<mask>.png``,
  ``losses.png``, ``structure_metrics.csv``, ``losses.csv``.

``weights=random`` (random VGG-19 filters, itself a known texture-synthesis baseline) is allowed
only by name: such runs are tagged ``shapebias.weights=random`` and named ``RANDOM-WEIGHTS ...``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shapebias import synthesis_spec, tracking
from shapebias.errors import ConfigError, check_choice, check_fraction
from training.cliargs import parser_from_config, setting, to_int
from training.cliargs import unquote as _unquote

if TYPE_CHECKING:  # numpy and torch are imported where they are used: --help answers without them
    import numpy as np

TASK = "texture_synthesis"
RANDOM_PREFIX = "RANDOM-WEIGHTS"
MASK_TITLES = {"all": "all", "topk": "Top-K", "complement": "complement (non-Top-K)"}


@dataclasses.dataclass
class Config:
    """The job's settings as given (numbers are checked inside the run, so a bad one fails the run)."""

    image: str = setting(
        "skimage:chelsea", "an image file, a folder of images, or skimage:NAME (chelsea is the cat photo)"
    )
    image_size: str = setting("256", "side of the square working image, px")
    steps: str = setting(str(synthesis_spec.STEPS), "outer L-BFGS steps per image and mask (authors: 100)")
    iterations_per_step: str = setting(
        str(synthesis_spec.ITERATIONS_PER_STEP), "L-BFGS iterations per step, strong-Wolfe line search (authors: 20)"
    )
    weights: str = setting("pretrained", "pretrained | random | /path/to/vgg19-dcbb9e9d.pth")
    topk: str = setting("0.05", "fraction of positions kept per channel, (0, 1]")
    method: str = setting("texture", "texture synthesis or feature inversion", synthesis_spec.METHODS)
    layers: str = setting(
        ",".join(synthesis_spec.DEFAULT_LAYERS), "VGG-19 layers, comma-separated (conv/relu<b>_<i>, pool<b>)"
    )
    seed: str = setting("0", "seed of the noise start (and of random weights)")
    device: str = setting("auto", "where to run", ("auto", "cpu", "cuda"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser_from_config(Config, "shapebias texture-synthesis", __doc__.split("\n\n")[0]).parse_args(argv)


def _safe(name: str) -> str:
    """An image name usable in metric keys and file names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"


def _files(image: str) -> list[Path]:
    if image.startswith("skimage:"):
        return []
    path = Path(image).expanduser()
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def _layers(text: str) -> str:
    """The layers as the network will use them (network order, no duplicates), or the text if invalid."""
    from shapebias import synthesis

    try:
        return ",".join(synthesis.check_layers(text))
    except ConfigError:
        return text


def _whole(text: str) -> str:
    """``"100.0"`` (as MLflow passes numbers) -> ``"100"``; anything else unchanged (validated later)."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text
    return str(int(number)) if number.is_integer() else text


def config_from_args(args: argparse.Namespace) -> dict:
    """The run's configuration as plain data (also what is logged as params)."""
    from shapebias import synthesis

    return {
        "image": _unquote(args.image),
        "image_size": _unquote(args.image_size),
        "steps": _whole(_unquote(args.steps)),
        "iterations_per_step": _whole(_unquote(args.iterations_per_step)),
        "weights": _unquote(args.weights) or "pretrained",
        "topk": _unquote(args.topk),
        "method": _unquote(args.method),
        "layers": _layers(_unquote(args.layers)),
        "masks": ",".join(synthesis.MASKS),
        "seed": _unquote(args.seed),
        "device": _unquote(args.device),
        "optimizer": synthesis.OPTIMIZER,
        "lr": 1.0,
        "histogram_matching": True,
    }


def validate(cfg: dict) -> dict:
    """Typed values, or ConfigError naming the bad value and what is accepted."""
    import torch

    from shapebias import synthesis

    check_choice("method", cfg["method"], synthesis.METHODS)
    check_choice("device", cfg["device"], ("auto", "cpu", "cuda"))
    layers = synthesis.check_layers(cfg["layers"])
    size = to_int("image_size", cfg["image_size"], 1)
    need = synthesis.min_image_size(layers)
    if size < need:
        raise ConfigError(f"image_size={size} is too small for layers {','.join(layers)}: they need at least {need} px")
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=auto or cpu")
    return {
        "size": size,
        "steps": to_int("steps", cfg["steps"], 1),
        "iterations_per_step": to_int("iterations_per_step", cfg["iterations_per_step"], 1),
        "k": check_fraction("topk", cfg["topk"]),
        "seed": to_int("seed", cfg["seed"], 0),
        "layers": layers,
        "device": device,
    }


LOGGED_SETTINGS = ("optimizer", "steps", "iterations_per_step", "lr", "layers")


def check_ran_as_logged(cfg: dict, settings: dict) -> None:
    """RuntimeError if the optimiser ran with settings other than the logged parameters."""
    differ = {k: (cfg[k], settings[k]) for k in LOGGED_SETTINGS if str(cfg[k]) != str(settings[k])}
    if differ:
        raise RuntimeError(f"the synthesis ran with other settings than logged (logged, ran): {differ}")


def log_targets(image: str, targets: list, fingerprint: str) -> None:
    """The target images as the run's input (one row per image: name and size)."""
    import pandas as pd

    # text columns only: MLflow's schema inference warns about integer columns
    rows = [{"image": n, "size": f"{t.shape[1]}x{t.shape[0]} px"} for n, t in targets]
    frame = pd.DataFrame(rows, columns=["image", "size"])
    source = image if Path(image).exists() else None  # a built-in picture (skimage:NAME) has no resolvable source
    tracking.log_dataset(frame, name=f"targets:{image}", digest=fingerprint, context="synthesis", source=source)


def save_png(path: Path, image: np.ndarray) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)


def figure_grid(path: Path, original: np.ndarray, results: dict, scores: dict, title: str) -> None:
    """original | all | Top-K | complement, each result titled with its structure scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(results), figsize=(3 * (1 + len(results)), 3.9))
    axes[0].imshow(original, interpolation="nearest")
    axes[0].set_title("original", fontsize=9)
    for ax, (mask, res) in zip(axes[1:], results.items(), strict=True):
        ax.imshow(res.image, interpolation="nearest")
        s = scores[mask]
        ax.set_title(f"{MASK_TITLES[mask]}\nSSIM {s['ssim']:.3f}  edge r {s['edge_corr']:.3f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_losses(path: Path, curves: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, losses in curves.items():
        ax.plot(range(len(losses)), losses, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("L-BFGS step")
    ax.set_ylabel("loss (sum over layers, relative)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@tracking.cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mlflow
    import numpy as np

    from shapebias import synthesis

    cfg = config_from_args(args)
    is_random = cfg["weights"] == "random"
    name = f"texture_synthesis {cfg['method']} k={cfg['topk']} {cfg['image']}"
    run_name = f"{RANDOM_PREFIX} {name}" if is_random else name
    tags = {tracking.WEIGHTS_TAG: "random" if is_random else "pretrained", "shapebias.method": cfg["method"]}
    started = time.time()
    with tracking.tracked_run(TASK, cfg, run_name=run_name, tags=tags) as run:
        mlflow.set_tag("mlflow.runName", run_name)  # also when resuming the run `mlflow run` made
        v = validate(cfg)
        images = synthesis.load_images(cfg["image"])
        targets = [(_safe(n), synthesis.prepare_image(im, v["size"], v["layers"], name=n)) for n, im in images]
        if len({n for n, _ in targets}) != len(targets):
            targets = [(f"{i:03d}_{n}", im) for i, (n, im) in enumerate(targets)]
        model = synthesis.build_vgg19(cfg["weights"], v["layers"], seed=v["seed"]).to(v["device"])
        fingerprint = tracking.fingerprint_files(_files(cfg["image"]), extra=cfg["image"])
        mlflow.set_tag("shapebias.data_fingerprint", fingerprint)
        label = "RANDOM VGG-19 weights (baseline, not the paper's network)" if is_random else "ImageNet VGG-19"
        tracking.describe_run(
            f"{'Texture synthesis' if cfg['method'] == 'texture' else 'Feature inversion'} ({cfg['method']}) of "
            f"{len(targets)} image(s) from {cfg['image']} at {v['size']} px with {label}, layers {v['layers']}, "
            f"each with all features, the Top-K features (k = {v['k']:g}) and their complement; L-BFGS "
            f"{v['steps']} x {v['iterations_per_step']} iterations, seed {v['seed']}."
        )
        log_targets(cfg["image"], targets, fingerprint)
        several = len(targets) > 1
        rows, loss_rows, means = [], [], {}
        tmp = tempfile.TemporaryDirectory(prefix="texture_synthesis-")
        out = Path(tmp.name)
        (out / "grids").mkdir()
        (out / "images").mkdir()
        for img_name, target in targets:
            suffix = f".{img_name}" if several else ""
            noise = synthesis.match_histograms(synthesis.noise_image(v["size"], v["size"], v["seed"]), target)
            scores = {"noise": synthesis.structure_metrics(target, noise)}
            results, curves = {}, {}
            for mask in synthesis.MASKS:
                key = f"loss_{mask}{suffix}"

                def on_step(step: int, loss: float, key: str = key) -> None:
                    mlflow.log_metric(key, loss, step=step)

                res = synthesis.synthesize(
                    model,
                    target,
                    mask=mask,
                    method=cfg["method"],
                    k=v["k"],
                    steps=v["steps"],
                    iterations_per_step=v["iterations_per_step"],
                    seed=v["seed"],
                    on_step=on_step,
                    progress=True,
                    desc=f"{img_name} {cfg['method']} {mask}",
                )
                check_ran_as_logged(cfg, res.settings)
                results[mask], curves[mask] = res, res.losses
                scores[mask] = synthesis.structure_metrics(target, res.image)
                save_png(out / "images" / f"{img_name}_{mask}.png", res.image)
                loss_rows += [(img_name, mask, i, loss) for i, loss in enumerate(res.losses)]
            save_png(out / "images" / f"{img_name}_original.png", target)
            figure_grid(
                out / "grids" / f"{img_name}.png",
                target,
                results,
                scores,
                f"{img_name}: {cfg['method']}, Top-K k={v['k']}, "
                f"L-BFGS {v['steps']}x{v['iterations_per_step']}, {label}",
            )
            for which, s in scores.items():
                rows.append(
                    {
                        "image": img_name,
                        "mask": which,
                        **s,
                        "final_loss": curves[which][-1] if which in curves else "",
                        "steps": len(curves[which]) - 1 if which in curves else "",
                    }
                )
                for metric, value in s.items():
                    means.setdefault(f"{metric}_{which}", []).append(value)
                    if several:
                        mlflow.log_metric(f"{metric}_{which}{suffix}", value)
            figure_losses(
                out / f"losses_{img_name}.png" if several else out / "losses.png",
                curves,
                f"{img_name}: {cfg['method']} loss, {label}",
            )
        summary = {key: float(np.mean(values)) for key, values in means.items()}
        mlflow.log_metrics(summary)
        with open(out / "structure_metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["image", "mask", "ssim", "edge_corr", "final_loss", "steps"])
            writer.writeheader()
            writer.writerows(rows)
        with open(out / "losses.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "mask", "iteration", "loss"])
            writer.writerows(loss_rows)
        mlflow.log_artifacts(str(out))
        tmp.cleanup()

    elapsed = time.time() - started
    print(f"\nrun {run.info.run_id} ({run_name}): {len(targets)} image(s), {elapsed:.0f} s")
    print(f"  {'mask':<11} {'ssim':>7} {'edge_corr':>10}")
    for which in ("noise", *synthesis.MASKS):
        print(f"  {which:<11} {summary[f'ssim_{which}']:>7.3f} {summary[f'edge_corr_{which}']:>10.3f}")
    if is_random:
        print("  (random VGG-19 weights: a baseline, not the paper's measurement)")
    print(f"  view: {tracking.ui_command()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
