"""MLproject and the chart's ``rayjobs.experiments``, generated from the task registry.

The registry (``shapebias/tasks.py``) lists the experiments; a task's settings are the fields of
its module's ``Config`` dataclass (``training.cliargs.setting``), or, for a module without one,
its :class:`~shapebias.tasks.Param` list; a task's RayJob defaults are its
:class:`~shapebias.tasks.ClusterJob`. From those this module writes

* ``MLproject``: one entry point per task. Its parameters are the settings in order: type
  ``float`` for a number (an ``int``/``float`` field, or a text field whose default is a number),
  else ``string``; the default is ``""`` where a protocol of the task sets the setting (the job
  then takes the protocol's value, else its own default), no default for the task's ``required``
  parameters, else the setting's default; the help text is the trailing comment. The command is
  ``python -m <module>`` with each parameter as its flag (``--batch-size {batch_size}``).
* the block of ``deploy/helm/shapebias/values.yaml`` between the ``# BEGIN generated`` and
  ``# END generated`` lines: ``rayjobs.experiments``, one entry per task with a ``ClusterJob``.

``make manifests`` (``python -m tools.devtools gen-project``) writes both before rendering
``manifests/``; ``tests/test_cli.py`` checks that the checked-in files are this module's output.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shapebias.tasks import TASKS, ClusterJob, Task

REPO_ROOT = Path(__file__).resolve().parent.parent
MLPROJECT = REPO_ROOT / "MLproject"
VALUES = REPO_ROOT / "deploy" / "helm" / "shapebias" / "values.yaml"

GENERATED_BY = "`make manifests` (python -m tools.devtools gen-project)"
BEGIN = "# BEGIN generated from shapebias/tasks.py"
END = "# END generated"
WIDTH = 110  # MLproject's command lines
COMMENT_COLUMN = 55  # where MLproject's trailing comments start (a longer line puts its comment two spaces on)

MLPROJECT_HEADER = f"""\
name: shapebias

# Generated from the task registry (shapebias/tasks.py) and the jobs' Config dataclasses by
# {GENERATED_BY}; do not edit.
# `mlflow run . -e ENTRY` builds a virtualenv from python_env.yaml (through pyenv) on first use;
# `--env-manager local` runs in the current environment (the .venv that `make setup` builds).
python_env: python_env.yaml

entry_points:
"""

EXPERIMENTS_DOC = (
    "One RayJob template per experiment: GPU workers (`workers`), GPUs of the entry point itself "
    "(`entrypointNumGpus`; jobs that work in the driver run it on a GPU worker), and MLproject parameters "
    "baked into the template (`params`; `shapebias submit -P key=value` overrides them)."
)

NAME = re.compile(r"[a-z][a-z0-9_]*")  # a task's or a parameter's name (MLflow substitutes {name})
NUMBER_TYPES = ("int", "float", int, float)
BOOL_TYPES = ("bool", bool)


class GenerationError(ValueError):
    """The registry cannot be turned into MLproject or the chart's values (one line naming what is wrong)."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One MLproject parameter as written: ``default`` None means required (no default)."""

    name: str
    type: str  # "string" | "float"
    default: str | None
    comment: str
    form: str = "flag"  # shapebias.tasks.PARAM_FORMS


# ----------------------------------------------------------------------------- parameters


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() != ""


def setting_text(value: Any) -> str:
    """A setting's default as MLflow passes it: ``True`` -> ``true``, ``1e-4`` -> ``0.0001``."""
    from shapebias.protocols import canonical

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return canonical(value)
    return "" if value is None else str(value)


def protocol_settings(task: str) -> set[str]:
    """The settings a protocol of ``task`` sets (with ``protocol`` itself when there are any)."""
    from shapebias import protocols

    keys = {k for p in protocols.for_task(task) for k in p.settings}
    return keys | {"protocol"} if keys else set()


def config_of(task: Task) -> type | None:
    """The ``Config`` dataclass of a task whose parameters are its fields (``task.params is None``)."""
    if task.params is not None:
        return None
    config = getattr(importlib.import_module(task.module), "Config", None)
    if not isinstance(config, type) or not dataclasses.is_dataclass(config):
        raise GenerationError(
            f"task {task.name}: {task.module} has no Config dataclass; give it one, or list its parameters "
            "in shapebias/tasks.py (Task(params=(Param(...), ...)))"
        )
    return config


def parameters(task: Task, config: type | None, set_by_protocols: set[str] | None = None) -> list[Parameter]:
    """The MLproject parameters of ``task`` (from ``config``'s fields, or from ``task.params``)."""
    protocol_set = protocol_settings(task.name) if set_by_protocols is None else set_by_protocols
    out: list[Parameter] = []
    if config is not None:
        for f in dataclasses.fields(config):
            default = setting_text(f.default)
            number = f.type in NUMBER_TYPES or (f.type not in BOOL_TYPES and is_number(default))
            choices = f.metadata.get("choices")
            notes = [" | ".join(map(setting_text, choices))] if choices else []
            if f.name in protocol_set:
                notes.append(f"default {default}" if default else "")
                default = ""
            out.append(Parameter(f.name, "float" if number else "string", default, _comment(f, notes)))
    else:
        for p in task.params or ():
            help_text = " ".join(p.help.split())
            out.append(Parameter(p.name, "float" if is_number(p.default) else "string", p.default, help_text, p.form))
    names = [p.name for p in out]
    bad = [n for n in names if not NAME.fullmatch(n)]
    if bad:
        raise GenerationError(f"task {task.name}: parameter name {bad[0]!r} is not accepted; expected [a-z][a-z0-9_]*")
    if len(set(names)) != len(names):
        raise GenerationError(f"task {task.name}: a parameter is declared twice ({', '.join(names)})")
    unknown = [n for n in task.required if n not in names]
    if unknown:
        raise GenerationError(
            f"task {task.name}: required={tuple(task.required)!r} names {', '.join(unknown)}, "
            f"which is not a parameter; accepted: {', '.join(names)}"
        )
    return [dataclasses.replace(p, default=None) if p.name in task.required else p for p in out]


def _comment(f: dataclasses.Field, notes: list[str]) -> str:
    text = " ".join(str(f.metadata.get("help", "")).split())
    notes = [n for n in notes if n]
    return f"{text} ({'; '.join(notes)})" if notes and text else text or "; ".join(notes)


# ----------------------------------------------------------------------------- YAML text


PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]*")


def scalar(value: str, number: bool = False) -> str:
    """``value`` as a YAML flow scalar that reads back as itself (a number plain where ``number``)."""
    if number and is_number(value) and isinstance(yaml.safe_load(value), int | float):
        return value
    if PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def _comment_lines(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    return textwrap.wrap(text, WIDTH - len(prefix), initial_indent=prefix, subsequent_indent=prefix)


def entry_point_text(task: Task, params: list[Parameter], has_config: bool, protocols: bool) -> str:
    """One entry point of MLproject (``  <name>:`` and its lines)."""
    notes = [task.description[:1].upper() + task.description[1:] + "."]
    if has_config:
        notes.append(f"Parameters: the fields of the Config of {task.module.replace('.', '/')}.py.")
    if protocols:
        notes.append(
            "An empty value takes the protocol's setting, else the job's default; a value given here "
            "that differs from the protocol's makes the run off-protocol."
        )
    lines = [f"  {task.name}:", *_comment_lines(" ".join(notes), 4), "    parameters:"]
    for p in params:
        spec = f"type: {p.type}" if p.default is None else f"type: {p.type}, default: {_default(p)}"
        line = f"      {p.name}: {{{spec}}}"
        if p.comment:
            line = f"{line.ljust(COMMENT_COLUMN - 2)}  # {p.comment}"
        lines.append(line)
    lines.append("    command: >-")
    lines += _wrap(command_parts(task.module, params), "      ")
    return "\n".join(lines) + "\n"


def _default(p: Parameter) -> str:
    assert p.default is not None
    return scalar(p.default, number=p.type == "float")


def command_parts(module: str, params: list[Parameter]) -> list[str]:
    """``python -m <module>`` and each parameter as it is passed, one part each (a flag with its value)."""
    parts = ["python -m " + module]
    for p in params:
        flag = "--" + p.name.replace("_", "-")
        parts.append({"flag": f"{flag} {{{p.name}}}", "joined": f"{flag}={{{p.name}}}"}.get(p.form, f"{{{p.name}}}"))
    return parts


def _wrap(parts: list[str], indent: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for part in parts:
        if current and len(indent) + len(current) + 1 + len(part) > WIDTH:
            lines.append(indent + current)
            current = part
        else:
            current = f"{current} {part}" if current else part
    return [*lines, indent + current]


def mlproject_text(tasks: Mapping[str, Task] = TASKS, configs: Mapping[str, type | None] | None = None) -> str:
    """The whole MLproject file. ``configs`` (task name -> Config) replaces importing the job modules."""
    entries = []
    for name, task in tasks.items():
        if name != task.name:
            raise GenerationError(f"the registry lists task {task.name!r} under the name {name!r}")
        if not NAME.fullmatch(name):
            raise GenerationError(f"task name {name!r} is not accepted; expected [a-z][a-z0-9_]* (e.g. train_resnet)")
        config = configs[name] if configs is not None and name in configs else config_of(task)
        if config is not None and task.params is not None:
            raise GenerationError(f"task {name}: both a Config and params=...; its parameters come from one of them")
        protocol_set = protocol_settings(name) if config is not None else set()
        params = parameters(task, config, protocol_set)
        entries.append(entry_point_text(task, params, config is not None, bool(protocol_set)))
    return MLPROJECT_HEADER + "\n".join(entries)


def _number(value: float) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise GenerationError(f"{value!r} is not accepted; expected a number >= 0")
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def experiment_line(task: Task, cluster: ClusterJob, known: list[str] | None = None) -> str:
    """``train_resnet: {workers: 1, entrypointNumGpus: 0, params: {}}`` (``known``: the task's parameters)."""
    if known is not None:
        unknown = [k for k in cluster.params if k not in known]
        if unknown:
            raise GenerationError(
                f"task {task.name}: ClusterJob params name {', '.join(unknown)}, which is not a parameter; "
                f"accepted: {', '.join(known)}"
            )
    if isinstance(cluster.workers, bool) or not isinstance(cluster.workers, int) or cluster.workers < 0:
        raise GenerationError(
            f"task {task.name}: workers={cluster.workers!r} is not accepted; expected an integer >= 0"
        )
    try:
        gpus = _number(cluster.entrypoint_gpus)
    except GenerationError as exc:
        raise GenerationError(f"task {task.name}: entrypoint_gpus={exc}") from None
    params = ", ".join(f"{k}: {scalar(str(v))}" for k, v in cluster.params.items())
    return f"{task.name}: {{workers: {cluster.workers}, entrypointNumGpus: {gpus}, params: {{{params}}}}}"


def experiments_block(
    tasks: Mapping[str, Task] = TASKS, known: Mapping[str, list[str]] | None = None, indent: int = 2
) -> str:
    """The generated lines of values.yaml: markers, the ``# --`` description and ``experiments:``."""
    pad = " " * indent
    lines = [f"{pad}{BEGIN} by {GENERATED_BY}; do not edit.", *_doc_lines(EXPERIMENTS_DOC, pad), f"{pad}experiments:"]
    for name, task in tasks.items():
        if task.cluster is not None:
            lines.append(f"{pad}  {experiment_line(task, task.cluster, known.get(name) if known else None)}")
    if lines[-1].endswith("experiments:"):
        raise GenerationError("no task has a ClusterJob; the chart needs at least one experiment")
    return "\n".join([*lines, f"{pad}{END}"]) + "\n"


def _doc_lines(text: str, pad: str) -> list[str]:
    return [f"{pad}# -- {text}"]  # one line: chartdocs reads a `# --` paragraph up to the key


def replace_block(values_text: str, block: str) -> str:
    """``values_text`` with the lines from the BEGIN marker through the END marker replaced by ``block``."""
    lines = values_text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise GenerationError(
            f"values.yaml needs exactly one `{BEGIN} ...` line and one `{END}` line after it around "
            f"rayjobs.experiments (found {len(begins)} and {len(ends)})"
        )
    return "".join(lines[: begins[0]]) + block + "".join(lines[ends[0] + 1 :])


def render(
    tasks: Mapping[str, Task] = TASKS,
    configs: Mapping[str, type | None] | None = None,
    values_text: str | None = None,
) -> dict[Path, str]:
    """{MLproject: its text, values.yaml: its text with the generated block} for ``tasks``."""
    text = mlproject_text(tasks, configs)
    entries = yaml.safe_load(text)["entry_points"]
    known = {name: list(entry["parameters"]) for name, entry in entries.items()}
    values = VALUES.read_text() if values_text is None else values_text
    return {MLPROJECT: text, VALUES: replace_block(values, experiments_block(tasks, known))}
