"""RayJobs of the shapebias experiments, as plain data: MLproject parameters in, the job's argv and a
RayJob body to create out (no Kubernetes client, no MLflow).

A RayJob's entry point is ``python -m shapebias.cluster driver EXPERIMENT --job-name NAME -P ...``
(:func:`entrypoint`); :func:`job_args` turns the parameters into the job module's command line
the way ``mlflow run . -e EXPERIMENT -P ...`` does, from MLproject's command; :func:`render`
gives a template (the chart's or a file's) a fresh name, namespace and parameters.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import string
from pathlib import Path

import yaml

from shapebias import tasks
from shapebias.errors import ConfigError
from shapebias.settings import REPO_ROOT

EXPERIMENTS = tasks.CLUSTER  # the tasks with a RayJob template (shapebias/tasks.py)
GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
RAYJOB_TAG = "shapebias.rayjob"
STORAGE_ENV = "SHAPEBIAS_RAY_STORAGE"
DEFAULT_RELEASE = "shapebias"
MAX_NAME = 47  # KubeRay derives RayCluster/Job names from the RayJob's; it rejects longer names


# ----------------------------------------------------------------------------- parameters


def mlproject_path() -> Path:
    return Path(os.environ.get("SHAPEBIAS_MLPROJECT", REPO_ROOT / "MLproject"))


def load_entry_points() -> dict[str, dict]:
    path = mlproject_path()
    if not path.is_file():
        raise ConfigError(f"MLproject not found at {path}; set SHAPEBIAS_MLPROJECT to the project's MLproject file")
    return yaml.safe_load(path.read_text())["entry_points"]


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; later values win."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"-P {pair!r} is not key=value (e.g. -P topk=0.2)")
        out[key.strip()] = value
    return out


def check_experiment(experiment: str) -> None:
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {experiment!r}; choose one of: {', '.join(EXPERIMENTS)}")


def job_args(experiment: str, params: dict[str, str], require_all: bool = True) -> list[str]:
    """The job module's argv for these MLproject parameters (defaults filled in, checked).

    ``require_all=False`` checks names and numbers only (a template may still supply a
    parameter that has no default) and returns an empty list.
    """
    check_experiment(experiment)
    entry = load_entry_points().get(experiment)
    if entry is None:
        raise ConfigError(f"MLproject has no entry point {experiment!r}")
    declared: dict[str, dict] = entry.get("parameters") or {}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for {experiment}; accepted: {', '.join(declared)}"
        )
    values: dict[str, str] = {}
    for name, spec in declared.items():
        spec = spec or {}
        if name in params:
            value = params[name]
        elif "default" in spec:
            value = spec["default"]
        elif not require_all:
            continue
        else:
            raise ConfigError(f"parameter {name} of {experiment} has no default: pass -P {name}=VALUE")
        value = "" if value is None else str(value)
        if spec.get("type") == "float" and name in params:
            try:
                float(value)
            except ValueError:
                raise ConfigError(f"-P {name}={value!r} is not a number") from None
        values[name] = value
    if not require_all:
        return []
    command = " ".join(entry["command"].split())

    def fill(match: re.Match) -> str:
        return shlex.quote(values[match.group(1) or match.group(2)])

    argv = shlex.split(re.sub(r'"\{(\w+)\}"|\{(\w+)\}', fill, command))
    prefix = ["python", "-m", tasks.TASKS[experiment].module]
    if argv[:3] != prefix:
        raise ConfigError(f"MLproject's {experiment} command does not start with {' '.join(prefix)}")
    return argv[3:]


def entrypoint(experiment: str, name: str, params: dict[str, str]) -> str:
    parts = ["python", "-m", "shapebias.cluster", "driver", experiment, "--job-name", name]
    for key, value in params.items():
        parts += ["-P", f"{key}={value}"]
    return shlex.join(parts)


def entrypoint_params(command: str) -> dict[str, str]:
    """The ``-P`` parameters baked into a template's entry point."""
    tokens = shlex.split(command)
    pairs = [tokens[i + 1] for i, tok in enumerate(tokens[:-1]) if tok == "-P"]
    return parse_params(pairs)


# ----------------------------------------------------------------------------- rendering


def job_name(release: str, experiment: str) -> str:
    base = f"{release}-{experiment.replace('_', '-')}"[: MAX_NAME - 6].rstrip("-")
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{base}-{suffix}"


def check_name(name: str) -> str:
    if len(name) > MAX_NAME or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        raise ConfigError(
            f"--name {name!r} is not accepted: lower-case letters, digits and '-', at most {MAX_NAME} characters"
        )
    return name


def render(
    template: dict, experiment: str, params: dict[str, str], name: str, namespace: str, check: bool = True
) -> dict:
    """A RayJob to create: the template with a new name, namespace and parameters (checked
    against MLproject unless ``check`` is false)."""
    if template.get("kind") != "RayJob" or template.get("apiVersion") != f"{GROUP}/{VERSION}":
        raise ConfigError(f"the template for {experiment} is not a {GROUP}/{VERSION} RayJob")
    body = yaml.safe_load(yaml.safe_dump(template))  # deep copy
    merged = {**entrypoint_params(body["spec"].get("entrypoint", "")), **params}
    if check:
        job_args(experiment, merged)  # every parameter checked against MLproject before anything is sent
    meta = body.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "generateName"):
        meta.pop(key, None)
    meta["name"] = name
    meta["namespace"] = namespace
    labels = meta.setdefault("labels", {})
    labels.pop("helm.sh/chart", None)
    labels["app.kubernetes.io/managed-by"] = "shapebias-submit"
    labels["shapebias.io/experiment"] = experiment
    body["spec"]["entrypoint"] = entrypoint(experiment, name, merged)
    body.pop("status", None)
    return body


def load_template_file(path: Path, experiment: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"--template {path} does not exist")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    if len(jobs) != 1:
        raise ConfigError(f"{path} must hold exactly one RayJob (found {len(jobs)})")
    return jobs[0]
