"""The command line: one task registry that MLproject, the CLI and the chart agree with (MLproject
and the chart's experiments are generated from it), and help that answers without importing the
heavy libraries."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from shapebias import cli, tasks
from shapebias.errors import ConfigError
from shapebias.settings import REPO_ROOT
from tools import chartdocs, projectgen
from training import cliargs

MLPROJECT = yaml.safe_load((REPO_ROOT / "MLproject").read_text())
VALUES = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "shapebias" / "values.yaml").read_text())


def test_mlproject_cli_and_chart_agree_with_the_task_registry():
    entries = MLPROJECT["entry_points"]
    assert sorted(entries) == sorted(tasks.TASKS)
    for name, task in tasks.TASKS.items():
        assert entries[name]["command"].split()[:3] == ["python", "-m", task.module], name
        assert cli.COMMANDS[task.command][0] == task.module
        assert importlib.util.find_spec(task.module) is not None, task.module
    assert sorted(cli.COMMANDS) == sorted([t.command for t in tasks.TASKS.values()] + list(cli.TOOLS))
    assert sorted(VALUES["rayjobs"]["experiments"]) == sorted(tasks.CLUSTER)
    rendered = sorted(p.name for p in (REPO_ROOT / "manifests").glob("rayjob-*.yaml"))
    assert rendered == sorted(f"rayjob-{tasks.command_name(name)}.yaml" for name in tasks.CLUSTER)


def test_registry_flags_match_what_the_code_does():
    from shapebias import cluster, tracking

    assert tracking.TASKS == tasks.TRACKED and cluster.EXPERIMENTS == tasks.CLUSTER
    assert set(tasks.RESUMABLE) <= set(tasks.TRACKED)
    assert "reproduce" not in tasks.TRACKED  # it launches tracked jobs, it logs no run itself


def test_subcommands_and_entry_points_share_one_name():
    assert tasks.command_name("train_resnet") == "train-resnet"
    assert {t.command.replace("-", "_") for t in tasks.TASKS.values()} == set(tasks.TASKS)


def _run_cli(*argv: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    heavy = ("torch", "torchvision", "mlflow", "ray", "numpy")
    code = (
        "import sys; from shapebias import cli; rc = cli.main(sys.argv[1:]); "
        f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules)); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    loaded = eval(proc.stdout.rsplit("LOADED", 1)[1])
    return proc, loaded


def test_help_and_version_import_nothing_heavy():
    proc, loaded = _run_cli("--help")
    assert proc.returncode == 0 and loaded == []
    for task in tasks.TASKS.values():
        assert task.command in proc.stdout and task.description in proc.stdout
    proc, loaded = _run_cli("--version")
    assert proc.returncode == 0 and loaded == []
    from shapebias import __version__

    assert proc.stdout.splitlines()[0] == f"shapebias {__version__}"


HEAVY = (
    "torch",
    "torchvision",
    "mlflow",
    "ray",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "PIL",
    "kubernetes",
    "skimage",
)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_command_help_shows_defaults_and_imports_nothing_heavy(command):
    """Every job and tool answers ``--help`` from its own module without the heavy libraries."""
    module = cli.COMMANDS[command][0]
    code = (
        "import importlib, sys\n"
        f"module = importlib.import_module({module!r})\n"
        "try:\n"
        "    rc = module.main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    help_text, _, loaded = proc.stdout.rpartition("LOADED")
    assert f"usage: shapebias {command}" in help_text
    assert "(default:" in help_text
    assert eval(loaded) == [], f"{module} imports {eval(loaded)} before --help answers"


def test_unknown_command_is_one_error_line():
    proc, _ = _run_cli("train_resnet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown command 'train_resnet'; known commands: {', '.join(cli.COMMANDS)}"
    ]


CONFIG_JOBS = tuple(name for name, t in tasks.TASKS.items() if t.params is None)  # settings: the module's Config
HAND_PARSED = tuple(name for name, t in tasks.TASKS.items() if t.params is not None)


def _config(task: str):
    return importlib.import_module(tasks.TASKS[task].module).Config


@pytest.mark.parametrize("task", CONFIG_JOBS)
def test_mlproject_parameters_are_the_config_fields(task):
    """Each job's Config is the only definition of its settings: MLproject passes every field as its flag,
    with the field's default (empty where a protocol sets it: the protocol's value, else the default)."""
    from shapebias import protocols

    spec = MLPROJECT["entry_points"][task]
    config = _config(task)
    defaults = dataclasses.asdict(config())
    assert sorted(spec["parameters"]) == sorted(defaults)
    set_by_protocols = {k for p in protocols.for_task(task) for k in p.settings}
    command = " ".join(spec["command"].split())
    for name, param in spec["parameters"].items():
        assert f"{cliargs.flag_name(name)} {{{name}}}" in command, name
        if "default" not in param:  # MLproject requires it (e.g. train_fastgan's data_dir)
            assert defaults[name] == "", name
        elif name in set_by_protocols or (name == "protocol" and set_by_protocols):
            assert param["default"] == "", name
        else:
            assert protocols.canonical(param["default"]) == protocols.canonical(defaults[name]), name


def test_mlproject_and_the_chart_experiments_are_generated_from_the_registry():
    files = projectgen.render()
    stale = [str(p.relative_to(REPO_ROOT)) for p, text in files.items() if p.read_text() != text]
    assert stale == [], f"{stale} differ from the task registry: run `make manifests`"


@pytest.mark.parametrize("task", HAND_PARSED)
def test_parameters_of_a_task_without_config_reach_its_parser(task):
    """Each registry Param is passed the way the module's hand-written parser reads it."""
    spec = MLPROJECT["entry_points"][task]
    values = {name: f"v_{name}" for name in spec["parameters"]}
    argv = shlex.split(spec["command"].format(**values))
    assert argv[:3] == ["python", "-m", tasks.TASKS[task].module]
    parsed = vars(importlib.import_module(tasks.TASKS[task].module).parse_args(argv[3:]))
    assert sorted(v for v in parsed.values() if str(v).startswith("v_")) == sorted(values.values())


@dataclasses.dataclass
class NewConfig:
    data: str = cliargs.setting("", "input folder")
    steps: int = cliargs.setting(100, "optimiser steps")
    rate: float = cliargs.setting(1e-4, "learning rate")
    mode: str = cliargs.setting("a", "which variant", ("a", "b"))
    size: str = cliargs.setting("64", "image size, checked inside the run")
    loud: bool = cliargs.setting(False, "say more")


def test_a_new_experiment_is_its_module_config_and_registry_entry():
    """A task added to the registry with a Config gets an entry point and a RayJob entry, and
    nothing else needs writing by hand: the generator is called on an in-memory registry."""
    new = tasks.Task(
        "new_job",
        "training.new_job",
        "a new experiment",
        cluster=tasks.ClusterJob(workers=2, entrypoint_gpus=0.5, params={"mode": "b", "data": "/data/x"}),
        required=("data",),
    )
    registry = {"new_job": new, "compare": tasks.TASKS["compare"]}
    values_path = projectgen.VALUES
    files = projectgen.render(registry, {"new_job": NewConfig}, values_text=values_path.read_text())
    entry = yaml.safe_load(files[projectgen.MLPROJECT])["entry_points"]["new_job"]
    assert entry["parameters"] == {
        "data": {"type": "string"},
        "steps": {"type": "float", "default": 100},
        "rate": {"type": "float", "default": 0.0001},
        "mode": {"type": "string", "default": "a"},
        "size": {"type": "float", "default": 64},
        "loud": {"type": "string", "default": "false"},
    }
    filled = {name: shlex.quote(str(p.get("default", "/in"))) for name, p in entry["parameters"].items()}
    argv = shlex.split(entry["command"].format(**filled))
    assert argv[:3] == ["python", "-m", "training.new_job"]
    args = cliargs.parser_from_config(NewConfig, "new-job", "").parse_args(argv[3:])
    assert vars(args) == {"data": "/in", "steps": 100, "rate": 0.0001, "mode": "a", "size": "64", "loud": "false"}

    text = files[values_path]
    values = yaml.safe_load(text)
    assert values["rayjobs"]["experiments"] == {
        "new_job": {"workers": 2, "entrypointNumGpus": 0.5, "params": {"mode": "b", "data": "/data/x"}},
        "compare": VALUES["rayjobs"]["experiments"]["compare"],
    }
    values["rayjobs"]["experiments"] = VALUES["rayjobs"]["experiments"]
    assert values == VALUES  # nothing else in values.yaml moves
    assert "rayjobs.experiments" in chartdocs.descriptions(text)  # still documented for the chart's README


@pytest.mark.parametrize(
    "change, message",
    [
        ({"required": ("nope",)}, "required=('nope',) names nope, which is not a parameter; accepted: experiment"),
        ({"cluster": tasks.ClusterJob(params={"nope": "1"})}, "ClusterJob params name nope, which is not a parameter"),
        ({"cluster": tasks.ClusterJob(workers=-1)}, "workers=-1 is not accepted; expected an integer >= 0"),
        ({"params": None}, "training.compare has no Config dataclass"),
        ({"params": (tasks.Param("Bad-name"),), "required": ()}, "parameter name 'Bad-name' is not accepted"),
    ],
)
def test_the_generator_names_what_is_wrong_in_the_registry(change, message):
    task = dataclasses.replace(tasks.TASKS["compare"], **change)
    with pytest.raises(projectgen.GenerationError, match=re.escape(message)):
        projectgen.render({"compare": task}, values_text=projectgen.VALUES.read_text())


def test_the_generator_needs_the_markers_and_known_param_forms():
    with pytest.raises(projectgen.GenerationError, match="exactly one `# BEGIN generated"):
        projectgen.render({"compare": tasks.TASKS["compare"]}, values_text="rayjobs:\n  experiments: {}\n")
    with pytest.raises(ValueError, match="form='option' is not one of flag, joined, positional"):
        tasks.Param("x", form="option")


@pytest.mark.parametrize("task", CONFIG_JOBS)
def test_job_help_shows_every_setting_with_its_default_and_choices(task):
    job = importlib.import_module(tasks.TASKS[task].module)
    parser = job.parser() if hasattr(job, "parser") else cliargs.parser_from_config(job.Config, task, "")
    text = " ".join(parser.format_help().split())
    for f in dataclasses.fields(_config(task)):
        assert cliargs.flag_name(f.name) in text, f.name
        choices = f.metadata.get("choices")
        if choices:
            assert "{" + ",".join(map(str, choices)) + "}" in text, f.name
    assert text.count("(default: ") >= len(dataclasses.fields(_config(task)))


@dataclasses.dataclass
class Example:
    count: int = cliargs.setting(3, "how many")
    rate: float = cliargs.setting(0.5, "a fraction")
    mode: str = cliargs.setting("a", "which", ("a", "b"))
    loud: bool = cliargs.setting(False, "say it")


def test_parser_from_config_reads_flags_numbers_and_booleans(capsys):
    p = cliargs.parser_from_config(Example, "example", "")
    args = p.parse_args([])
    assert (args.count, args.rate, args.mode, args.loud) == (3, 0.5, "a", False)
    args = p.parse_args(["--count", "6.0", "--rate", "0.25", "--loud"])
    assert (args.count, args.rate, args.loud) == (6, 0.25, True)
    assert p.parse_args(["--no-loud"]).loud is False
    assert p.parse_args(["--loud", "false"]).loud == "false"  # MLproject's string, read by the job
    assert p.parse_args(["--count", "2.5"]).count == "2.5"  # left for the job to name in its error
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["--colour", "red"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: unrecognized arguments: --colour red (see example --help)"
    ]
    help_text = " ".join(p.format_help().split())
    assert "--count INT how many (default: 3)" in help_text and "--mode {a,b} which (default: 'a')" in help_text
    assert "--loud, --no-loud say it (default: False)" in help_text


def test_one_strict_number_reading():
    assert cliargs.to_int("n", "6") == 6 and cliargs.to_int("n", "6.0") == 6 and cliargs.to_int("n", 7) == 7
    assert cliargs.to_float("x", "0.2") == 0.2
    for bad, message in (
        ("2.5", "n='2.5' is not accepted; expected an integer"),
        ("six", "n='six' is not a number; expected an integer"),
        (True, "n=True is not accepted"),
        ("0", "n='0' is not accepted; expected an integer of at least 1"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            cliargs.to_int("n", bad, minimum=1)
    with pytest.raises(ConfigError, match="expected a finite number"):
        cliargs.to_float("x", "nan")
    example = Example(count="4.0", rate="1")
    cliargs.check_numbers(example)
    assert (example.count, example.rate) == (4, 1.0)
    with pytest.raises(ConfigError, match="count='2.5'"):
        cliargs.check_numbers(Example(count="2.5"))
