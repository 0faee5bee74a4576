"""The ``shapebias`` command: one entry point that dispatches to the jobs and tools.

The jobs come from the task registry (:mod:`shapebias.tasks`; ``shapebias train-resnet`` runs the
MLproject entry point ``train_resnet``), the tools from :data:`TOOLS`. Each subcommand's module
exposes ``main(argv) -> int``; this file imports nothing heavy until a command runs, so that
``shapebias --help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys

from shapebias import __version__
from shapebias.tasks import TASKS

TOOLS: dict[str, tuple[str, str]] = {
    "protocols": ("shapebias.protocols.listing", "list the published experiments (protocols) and their settings"),
    "data": ("shapebias.data.fetch", "list, download and check the public data sets (cue-conflict)"),
    "submit": ("shapebias.cluster", "submit a job to Kubernetes as a KubeRay RayJob"),
}

COMMANDS: dict[str, tuple[str, str]] = {
    **{t.command: (t.module, t.description) for t in TASKS.values()},
    **TOOLS,
}


def usage() -> str:
    lines = ["usage: shapebias [--version] COMMAND [ARGS...]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`shapebias COMMAND --help` describes a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"shapebias {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; known commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if COMMANDS[name][0].startswith("training."):  # the jobs run from the checkout; only the library is installed
        from shapebias.settings import REPO_ROOT

        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
