"""The ``shapebias`` command: one entry point that dispatches to the jobs and tools.

Each subcommand lives in its own module and exposes ``main(argv) -> int``; this file only maps
names to modules, so it stays readable and imports nothing heavy until a command runs.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train-resnet": ("training.train_resnet", "train ResNet-18 with Top-K sparsity (Ray Train + MLflow)"),
    "shape-bias": ("training.shape_bias", "score AlexNet/VGG-16 with Top-K at inference on cue-conflict"),
    "train-fastgan": ("training.train_fastgan", "train FastGAN with Top-K, scored by FID"),
    "texture-synthesis": ("training.texture_synthesis", "texture synthesis / feature inversion with Top-K masks"),
    "compare": ("training.compare", "build the reproduction tables from MLflow runs"),
    "reproduce": ("training.reproduce", "launch the runs a table is missing"),
    "protocols": ("shapebias.protocols.listing", "list the published experiments (protocols) and their settings"),
    "data": ("shapebias.data.fetch", "list, download and check the public data sets (cue-conflict)"),
    "submit": ("shapebias.cluster", "submit a job to Kubernetes as a KubeRay RayJob"),
}


def usage() -> str:
    lines = ["usage: shapebias COMMAND [ARGS...]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`shapebias COMMAND --help` describes a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; known commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
