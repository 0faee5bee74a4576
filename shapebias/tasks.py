"""The registry of tasks: every experiment the project runs, in one place.

A task's name is its MLproject entry point, its MLflow ``shapebias.task`` tag and its RayJob
template (``rayjobs.experiments`` in the chart); its subcommand is the same name with hyphens
(``train_resnet`` <-> ``shapebias train-resnet``). This module imports nothing heavy: the CLI reads
it to answer ``--help``.

MLproject and the chart's ``rayjobs.experiments`` are generated from this list and the jobs'
``Config`` dataclasses by ``make manifests`` (``tools/projectgen.py``); ``tests/test_cli.py`` holds
them, the CLI and the rendered manifests to it. Adding an experiment: its job module with a
``Config``, one :class:`Task` here, ``make manifests`` (docs/cli.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PARAM_FORMS = ("flag", "joined", "positional")


@dataclass(frozen=True)
class Param:
    """An MLproject parameter of a task that has no ``Config`` dataclass (its module parses it by hand).

    ``form``: ``flag`` passes ``--name VALUE``; ``joined`` passes ``--name=VALUE`` (a value that may
    start with ``-``, e.g. extra flags); ``positional`` passes the value alone, in declaration order.
    """

    name: str
    default: str = ""
    help: str = ""
    form: str = "flag"

    def __post_init__(self) -> None:
        if self.form not in PARAM_FORMS:
            raise ValueError(f"Param {self.name}: form={self.form!r} is not one of {', '.join(PARAM_FORMS)}")


@dataclass(frozen=True)
class ClusterJob:
    """A task's RayJob template defaults: the chart's ``rayjobs.experiments.<name>`` is generated from them."""

    workers: int = 1  # GPU worker pods of the job's Ray cluster
    entrypoint_gpus: float = 0  # GPUs of the entry point itself (a job that works in the driver needs one)
    params: Mapping[str, str] = field(default_factory=dict, hash=False)  # MLproject parameters baked in


@dataclass(frozen=True)
class Task:
    name: str
    module: str  # ``python -m <module>`` runs it; the module has ``main(argv) -> int``
    description: str
    tracked: bool = True  # logs an MLflow run tagged ``shapebias.task=<name>``
    cluster: ClusterJob | None = ClusterJob()  # its RayJob template (``shapebias submit <name>``); None: none
    resumable: bool = False  # a failed run can be resumed from its checkpoint (``--run-id``)
    # MLproject's parameters: None for the fields of the module's ``Config`` dataclass (the usual
    # case), else the parameters of a module without one.
    params: tuple[Param, ...] | None = None
    required: tuple[str, ...] = ()  # parameters without a default: `mlflow run` refuses to start without them

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
        Task(
            "shape_bias",
            "training.shape_bias",
            "score AlexNet/VGG-16 with Top-K at inference on cue-conflict",
            cluster=ClusterJob(entrypoint_gpus=1),
        ),
        Task(
            "train_fastgan",
            "training.train_fastgan",
            "train FastGAN with Top-K, scored by FID",
            resumable=True,
            cluster=ClusterJob(params={"data_dir": "/data/data/few-shot/jeep"}),
            required=("data_dir",),
        ),
        Task(
            "texture_synthesis",
            "training.texture_synthesis",
            "texture synthesis / feature inversion with Top-K masks",
            cluster=ClusterJob(entrypoint_gpus=1),
        ),
        Task(
            "compare",
            "training.compare",
            "build the reproduction tables from MLflow runs",
            cluster=ClusterJob(workers=0, params={"experiment": "shapebias"}),
            params=(
                Param("experiment", help="one or more names, comma-separated"),
                Param("output_dir", help="also keep the report here (it is logged anyway)"),
            ),
            required=("experiment",),
        ),
        Task(
            "reproduce",
            "training.reproduce",
            "launch the runs a table is missing",
            tracked=False,
            cluster=None,
            params=(
                Param("table", "table1", "table1 | table2 | shape_bias | synthetic", form="positional"),
                Param("where", "local", "local | ray://host:port | http://host:8265"),
                Param("experiment", "reproduce", "MLflow experiment that holds the table's runs"),
                Param("dry_run", "false", "true: list what is missing and what would be launched"),
                Param("seeds", "", "e.g. 0,1,2 (default: the seed report's)"),
                Param("datasets", "", "e.g. IN-S1,IN-S2 (default: the seed report's)"),
                Param("scale", "full", "full (the protocols) | smoke (off-protocol pipeline check)"),
                Param("job_args", "", 'extra flags for every job, e.g. "--data-dir /data/imagenet"', form="joined"),
            ),
        ),
        Task(
            "synthetic_study",
            "training.study",
            "the synthetic shape-bias study: variants x seeds as Ray tasks, one parent run",
            cluster=None,
            params=(
                Param("experiment", "synthetic-study", "MLflow experiment of the study's runs"),
                Param("seeds", "", "default 0..7"),
                Param("variants", "", "synthetic.* protocols (default: all nine)"),
                Param("set", "", "KEY=VALUE,... replacing protocol settings (off-protocol)", form="joined"),
                Param("where", "local", "local | auto | ray://HEAD:10001"),
                Param("dry_run", "false", "true: say what is missing; launch nothing"),
            ),
        ),
    )
}

TRACKED = tuple(name for name, t in TASKS.items() if t.tracked)
CLUSTER = tuple(name for name, t in TASKS.items() if t.cluster is not None)
RESUMABLE = tuple(name for name, t in TASKS.items() if t.resumable)
