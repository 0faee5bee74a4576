"""The chart's values documentation, from one source: the ``# --`` comments of values.yaml.

A comment line ``# -- text`` (and the comment lines after it, up to the key) documents the key
on the next line, as helm-docs reads it. :func:`render` turns them into the chart's README.md
(a table of keys, types, defaults and descriptions) and into the ``description`` of each key in
values.schema.json; ``check`` reports what is stale or undocumented.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
MORE = re.compile(r"^ *#(?: (?P<text>.*))?$")


def descriptions(values_text: str) -> dict[str, str]:
    """``{"dotted.key.path": description}`` for every key with a ``# --`` comment above it."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] | None = None
    for line in values_text.splitlines():
        if (m := DOC.match(line)) is not None:
            pending = [m.group("text").strip()]
            continue
        if pending is not None and (m := MORE.match(line)) is not None:
            pending.append((m.group("text") or "").strip())
            continue
        m = KEY.match(line)
        if m is None:
            if line.strip() and not line.lstrip().startswith(("#", "-")):
                pending = None
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group("key")))
        if pending is not None:
            out[".".join(k for _, k in stack)] = " ".join(t for t in pending if t)
        pending = None
    return out


def lookup(values: dict, path: str):
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def undocumented(values: dict, docs: dict[str, str], prefix: str = "") -> list[str]:
    """Leaf keys of values.yaml with no description on themselves or on a mapping above them."""
    missing = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in docs:
            continue
        if isinstance(value, dict) and value:
            missing += undocumented(value, docs, path + ".")
        else:
            missing.append(path)
    return missing


def readme(chart: dict, values: dict, docs: dict[str, str]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [
        f"| `{path}` | {type_name(lookup(values, path))} | `{cell(json.dumps(lookup(values, path)))}` | {cell(text)} |"
        for path, text in docs.items()
    ]
    return "\n".join(
        [
            f"# {chart['name']}",
            "",
            " ".join(chart["description"].split()),
            "",
            f"Chart version {chart['version']}, app version {chart['appVersion']}, "
            f"Kubernetes `{chart['kubeVersion']}`. "
            "How to install it, the Secrets it reads, Pod Security and image pinning: "
            "[docs/deploy.md](../../../docs/deploy.md).",
            "",
            "This file is generated from the `# --` comments of values.yaml by `make chart-docs` "
            "(`python -m tools.devtools chart-docs`); do not edit it.",
            "",
            "## Values",
            "",
            "| Key | Type | Default | Description |",
            "|-----|------|---------|-------------|",
            *rows,
            "",
        ]
    )


def schema_node(schema: dict, path: str) -> dict | None:
    node = schema
    for part in path.split("."):
        props = node.get("properties") or {}
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def with_descriptions(schema: dict, docs: dict[str, str]) -> tuple[dict, list[str]]:
    """The schema with each documented key's description; the documented keys it lacks."""
    out = json.loads(json.dumps(schema))
    missing = []
    for path, text in docs.items():
        node = schema_node(out, path)
        if node is None:
            missing.append(path)
        else:
            node["description"] = text
    return out, missing


def render(chart_dir: Path) -> tuple[dict[Path, str], list[str]]:
    """(the generated files by path, problems: undocumented keys or keys missing from the schema)."""
    values_text = (chart_dir / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    docs = descriptions(values_text)
    schema, not_in_schema = with_descriptions(schema, docs)
    problems = [f"values.yaml: {p} has no `# --` description" for p in undocumented(values, docs)]
    problems += [f"values.schema.json: no property for {p}" for p in not_in_schema]
    files = {
        chart_dir / "README.md": readme(chart, values, docs),
        chart_dir / "values.schema.json": json.dumps(schema, indent=2) + "\n",
    }
    return files, problems
