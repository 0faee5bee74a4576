"""manifests/: plain YAML for kubectl users, generated from the chart and kept in sync with it."""

from __future__ import annotations

import os

import pytest
import yaml

from shapebias.cluster import EXPERIMENTS
from tools import devtools

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(name: str) -> list[dict]:
    return [d for d in yaml.load_all((devtools.MANIFESTS_DIR / name).read_text(), Loader=LOADER) if d]


def test_manifests_match_the_chart():
    if not os.access(devtools.helm_path(), os.X_OK):
        pytest.skip("helm is missing: run `make tools`")
    expected = devtools.expected_manifests()
    present = {p.name: p.read_text() for p in devtools.MANIFESTS_DIR.glob("*.yaml")}
    assert sorted(present) == sorted(expected), "run `make manifests`"
    stale = [name for name in expected if expected[name] != present[name]]
    assert stale == [], f"manifests/ is out of date ({stale}): run `make manifests`"


def test_chart_docs_match_the_values():
    """The chart's README.md and the schema's descriptions come from the `# --` comments of
    values.yaml, and every value is documented."""
    from tools import chartdocs

    files, problems = chartdocs.render(devtools.CHART_DIR)
    assert problems == []
    stale = [p.name for p, text in files.items() if p.read_text() != text]
    assert stale == [], f"{stale} out of date: run `make chart-docs`"


def test_chart_docs_find_undocumented_values():
    from tools import chartdocs

    text = "# -- documented\na: 1\nb:\n  # -- nested\n  c: x\n  d: [1]\n"
    docs = chartdocs.descriptions(text)
    assert docs == {"a": "documented", "b.c": "nested"}
    assert chartdocs.undocumented(yaml.safe_load(text), docs) == ["b.d"]


def test_one_rayjob_per_experiment(kuberay_dir):
    validator = devtools.kuberay_validator(kuberay_dir)
    for experiment in EXPERIMENTS:
        docs = load(f"rayjob-{experiment.replace('_', '-')}.yaml")
        assert [d["kind"] for d in docs] == ["RayJob"]
        job = docs[0]
        assert job["metadata"]["labels"]["shapebias.io/experiment"] == experiment
        assert devtools.rayjob_errors(job, validator) == []


def test_platform_objects_validate_strict(kuberay_dir):
    docs = load("platform.yaml")
    assert {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "ConfigMap"} <= {d["kind"] for d in docs}
    errors = [e for d in docs for e in devtools.builtin_errors(d, "1.35.0")]
    assert errors == []
    validator = devtools.kuberay_validator(kuberay_dir)
    templates = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "shapebias-rayjobs")
    assert sorted(templates["data"]) == sorted(f"{e}.yaml" for e in EXPERIMENTS)
    for text in templates["data"].values():
        assert devtools.rayjob_errors(yaml.load(text, Loader=LOADER), validator) == []
