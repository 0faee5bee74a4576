"""The command line: one task registry that MLproject, the CLI and the chart agree with, and help
that answers without importing the heavy libraries."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import yaml

from shapebias import cli, tasks
from shapebias.settings import REPO_ROOT

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
