"""The registry of tasks: every experiment the project runs, in one place.

A task's name is its MLproject entry point, its MLflow ``shapebias.task`` tag and its RayJob
template (``rayjobs.experiments`` in the chart); its subcommand is the same name with hyphens
(``train_resnet`` <-> ``shapebias train-resnet``). ``tests/test_cli.py`` holds MLproject, the CLI,
the chart and this list to each other. This module imports nothing heavy: the CLI reads it to
answer ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    module: str  # ``python -m <module>`` runs it; the module has ``main(argv) -> int``
    description: str
    tracked: bool = True  # logs an MLflow run tagged ``shapebias.task=<name>``
    cluster: bool = True  # has a RayJob template (``shapebias submit <name>``)
    resumable: bool = False  # a failed run can be resumed from its checkpoint (``--run-id``)

    @property
    def command(self) -> str:
        """The ``shapebias`` subcommand."""
        return command_name(self.name)


def command_name(name: str) -> str:
    """``train_resnet`` -> ``train-resnet``: subcommands use hyphens, entry points underscores."""
    return name.replace("_", "-")


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "train_resnet",
            "training.train_resnet",
            "train ResNet-18 with Top-K sparsity (Ray Train + MLflow)",
            resumable=True,
        ),
        Task("shape_bias", "training.shape_bias", "score AlexNet/VGG-16 with Top-K at inference on cue-conflict"),
        Task("train_fastgan", "training.train_fastgan", "train FastGAN with Top-K, scored by FID", resumable=True),
        Task(
            "texture_synthesis", "training.texture_synthesis", "texture synthesis / feature inversion with Top-K masks"
        ),
        Task("compare", "training.compare", "build the reproduction tables from MLflow runs"),
        Task("reproduce", "training.reproduce", "launch the runs a table is missing", tracked=False, cluster=False),
        Task(
            "synthetic_study",
            "training.study",
            "the synthetic shape-bias study: variants x seeds as Ray tasks, one parent run",
            cluster=False,
        ),
    )
}

TRACKED = tuple(name for name, t in TASKS.items() if t.tracked)
CLUSTER = tuple(name for name, t in TASKS.items() if t.cluster)
RESUMABLE = tuple(name for name, t in TASKS.items() if t.resumable)
