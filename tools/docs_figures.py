"""Draw the figures the README and docs show, from data that anyone can check.

    python -m tools.docs_figures [--reference-dir DIR] [--out docs/img]

* ``published-shape-bias.png``: the authors' published per-image decisions on the 1,280
  cue-conflict images (Li et al. 2023, Fig. 1), re-scored with this project's implementation of
  model-vs-human's shape-bias rule: shape bias against the fraction of positions Top-K keeps.
* ``synthetic-splits.png``: the splits of the synthetic cue-conflict benchmark (seed 0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shapebias import plots, settings


def splits_figure(path: Path, per_split: int = 6, image_size: int = 48) -> None:
    """One row per split of the synthetic benchmark, each image titled with its shape and texture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shapebias.data import synthetic

    splits = synthetic.make_benchmark(num_classes=10, train_per_class=1, test_per_class=1, image_size=image_size)
    fig, axes = plt.subplots(len(splits), per_split, figsize=(1.6 * per_split, 1.9 * len(splits)))
    for row, (name, split) in enumerate(splits.items()):
        for col in range(per_split):
            ax = axes[row][col]
            ax.imshow(split.images[col].permute(1, 2, 0).numpy())
            shape = split.class_names[int(split.shape[col])]
            tex = int(split.texture[col])
            texture = "no class" if tex < 0 else split.class_names[tex]
            ax.set_title(f"{shape} / {texture}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(name, fontsize=9)
    fig.suptitle("Synthetic cue-conflict benchmark (shape / texture class)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference-dir",
        default=str(settings.reference_decisions_dir()),
        help="the authors' raw decisions (default: %(default)s)",
    )
    parser.add_argument("--out", default="docs/img", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    reference = plots.reference_decision_makers(args.reference_dir)
    if reference is None:
        print(f"error: reference folder {args.reference_dir} not found", file=sys.stderr)
        return 2
    curves, refs = plots.figure_curves({}, reference)
    plots.plot_sparsity_curve(
        curves,
        out / "published-shape-bias.png",
        references=refs,
        title="Published decisions (Li et al. 2023), re-scored by shapebias",
    )
    splits_figure(out / "synthetic-splits.png")
    print(f"wrote {out}/published-shape-bias.png, {out}/synthetic-splits.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
