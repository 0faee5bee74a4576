"""The command line: one task registry that MLproject, the CLI and the chart agree with, and help
that answers without importing the heavy libraries."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import subprocess
import sys

import pytest
import yaml

from shapebias import cli, tasks
from shapebias.errors import ConfigError
from shapebias.settings import REPO_ROOT
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


def test_unknown_command_is_one_error_line():
    proc, _ = _run_cli("train_resnet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown command 'train_resnet'; known commands: {', '.join(cli.COMMANDS)}"
    ]


CONFIG_JOBS = ("train_resnet", "shape_bias", "train_fastgan", "texture_synthesis")


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
