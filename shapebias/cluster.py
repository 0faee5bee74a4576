"""``shapebias submit``: run an experiment on Kubernetes as a KubeRay RayJob.

    shapebias submit EXPERIMENT [-P key=value ...] [--namespace NS] [--context CTX]
                     [--release NAME] [--template FILE] [--name NAME] [--dry-run] [--wait]

The RayJob comes from the chart (``deploy/helm/shapebias``): its ConfigMap ``<release>-rayjobs``
holds one RayJob template per experiment, rendered with the cluster's values (image, GPU node
pool, Secrets, S3). ``submit`` reads that template in the current kube context and namespace,
gives the RayJob a fresh name, puts the parameters into its entry point and creates it with the
kubernetes client (``CustomObjectsApi``); ``--dry-run`` prints it instead, and ``--wait``
follows its status to the end and prints the MLflow run's address.

Parameters are MLproject's: ``-P`` takes the same names as ``mlflow run . -e EXPERIMENT -P ...``
and the job gets the same flags, because the command line is built from MLproject's command.

In the cluster the RayJob's entry point is ``python -m shapebias.cluster driver EXPERIMENT
--job-name NAME -P ...`` (see :func:`driver_main`): it finds or creates the MLflow run of this
RayJob (tag ``shapebias.rayjob``), so that a retried RayJob (``backoffLimit``) resumes the same
run, and passes ``--storage-path $SHAPEBIAS_RAY_STORAGE`` (``s3://<bucket>/ray``); the jobs use
the MLflow run id as the Ray Train run name (``RunConfig(name=run_id, storage_path=...)``), so
checkpoints live in ``s3://<bucket>/ray/<run id>`` and the retry resumes from the last one.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import string
import subprocess
import sys
import time
from pathlib import Path

import yaml

from shapebias import tasks
from shapebias.errors import ConfigError, ShapebiasError
from shapebias.settings import REPO_ROOT

EXPERIMENTS = tasks.CLUSTER  # the tasks with a RayJob template (shapebias/tasks.py)
GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
RAYJOB_TAG = "shapebias.rayjob"
STORAGE_ENV = "SHAPEBIAS_RAY_STORAGE"
DEFAULT_RELEASE = "shapebias"
MAX_NAME = 47  # KubeRay derives RayCluster/Job names from the RayJob's; it rejects longer names
TERMINAL = ("Complete", "Failed", "ValidationFailed")
KUBERAY_INSTALL = (
    "install the KubeRay operator from its own chart: helm repo add kuberay "
    "https://ray-project.github.io/kuberay-helm/ && helm install kuberay-operator "
    "kuberay/kuberay-operator --namespace kuberay-system --create-namespace"
)


class KubeError(ShapebiasError):
    """The cluster refused or could not be reached; the message says what to do."""


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
    prefix = ["python", "-m", f"training.{experiment}"]
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


# ----------------------------------------------------------------------------- the cluster


def kube_client(context: str | None):
    """(ApiClient, namespace of the context) for the current (or named) kube context."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    # read $KUBECONFIG now: the client reads it once, at import
    where = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=where)
        if context is not None:
            chosen = next((c for c in contexts if c["name"] == context), None)
            if chosen is None:
                names = ", ".join(c["name"] for c in contexts) or "none"
                raise ConfigError(f"kube context {context!r} is not in {where}; contexts: {names}")
        else:
            chosen = active
        if not chosen:
            raise ConfigError(
                f"no current kube context in {where}: run `kubectl config use-context NAME` or pass --context"
            )
        api = config.new_client_from_config(config_file=where, context=chosen["name"])
    except (ConfigException, OSError) as exc:
        raise ConfigError(
            f"no Kubernetes context ({where}: {exc}); set KUBECONFIG or run `kubectl config use-context NAME`"
        ) from None
    namespace = chosen.get("context", {}).get("namespace") or "default"
    client.Configuration.set_default(api.configuration)
    return api, namespace


def _api_message(exc) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except Exception:  # noqa: BLE001 - any body that is not Status JSON
        return str(exc.reason)


def _call(what: str, fn, *args, **kwargs):
    """Run a kubernetes client call; connection failures become a KubeError."""
    import urllib3

    try:
        return fn(*args, **kwargs)
    except urllib3.exceptions.HTTPError as exc:
        raise KubeError(f"cannot reach the Kubernetes API to {what}: {exc}") from None


def configmap_names(release: str) -> list[str]:
    """The chart's ConfigMap of templates: ``<fullname>-rayjobs`` (fullname is the release name
    when it contains "shapebias", else ``<release>-shapebias``)."""
    names = [f"{release}-rayjobs"]
    if "shapebias" not in release:
        names.append(f"{release}-shapebias-rayjobs")
    return names


def fetch_template(api, namespace: str, release: str, experiment: str) -> dict:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    cm = None
    for name in configmap_names(release):
        try:
            cm = _call(f"read ConfigMap {name}", core.read_namespaced_config_map, name, namespace)
            break
        except ApiException as exc:
            if exc.status == 404:
                continue
            if exc.status == 403:
                raise KubeError(
                    f"forbidden to read ConfigMap {name} in namespace {namespace} (RBAC): ask the admin to bind "
                    f"Role {name.removesuffix('-rayjobs')}-submitter to you ({_api_message(exc)})"
                ) from None
            raise KubeError(f"reading ConfigMap {name} failed: {exc.status} {_api_message(exc)}") from None
    if cm is None:
        raise KubeError(
            f"ConfigMap {' or '.join(configmap_names(release))} not found in namespace {namespace}: the shapebias "
            f"chart is not installed there (helm install {release} deploy/helm/shapebias -n {namespace}), "
            "or pass --release/--namespace"
        )
    text = (cm.data or {}).get(f"{experiment}.yaml")
    if not text:
        raise KubeError(
            f"ConfigMap {cm.metadata.name} has no template for {experiment} (keys: {', '.join(cm.data or {})})"
        )
    return yaml.safe_load(text)


def create_rayjob(api, namespace: str, body: dict) -> dict:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = body["metadata"]["name"]
    objects = client.CustomObjectsApi(api)
    try:
        return _call(
            f"create RayJob {name}", objects.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body
        )
    except ApiException as exc:
        message = _api_message(exc)
        if exc.status == 404:
            if "namespaces" in message and namespace in message:
                raise KubeError(f"namespace {namespace} does not exist ({message})") from None
            raise KubeError(
                f"the cluster does not serve {PLURAL}.{GROUP}/{VERSION} (no KubeRay CRDs for namespace {namespace}): "
                f"{KUBERAY_INSTALL}"
            ) from None
        if exc.status == 409:
            raise KubeError(
                f"RayJob {name} already exists in namespace {namespace}: pick another --name, or delete it "
                f"(kubectl -n {namespace} delete rayjob {name})"
            ) from None
        if exc.status == 403:
            raise KubeError(
                f"forbidden to create RayJobs in namespace {namespace} (RBAC): ask the admin to bind the chart's "
                f"Role <release>-submitter to you ({message})"
            ) from None
        if exc.status == 422:
            raise KubeError(f"the cluster rejected RayJob {name} as invalid: {message}") from None
        raise KubeError(f"creating RayJob {name} failed: {exc.status} {message}") from None


def wait_rayjob(api, namespace: str, name: str, poll: float, timeout: float) -> dict:
    """Follow a RayJob's status until KubeRay reports a terminal deployment status."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    objects = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = None
    while True:
        try:
            obj = _call(
                f"read RayJob {name}", objects.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise KubeError(f"RayJob {name} disappeared from namespace {namespace}") from None
            raise KubeError(f"reading RayJob {name} failed: {exc.status} {_api_message(exc)}") from None
        status = obj.get("status") or {}
        state = (status.get("jobDeploymentStatus") or "New", status.get("jobStatus") or "-")
        if state != last:
            extra = f" ({status['message']})" if status.get("message") else ""
            print(f"{time.strftime('%H:%M:%S')}  {name}: {state[0]}, job {state[1]}{extra}", flush=True)
            last = state
        if state[0] in TERMINAL:
            return obj
        if deadline is not None and time.monotonic() > deadline:
            raise KubeError(f"gave up waiting for RayJob {name} after {timeout:.0f} s (it goes on running)")
        time.sleep(poll)


def mlflow_run_address(job: str, tracking_uri: str | None, experiment_name: str) -> str:
    """The MLflow UI address of the run that a RayJob's driver created (tag shapebias.rayjob)."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        try:
            from mlflow.tracking import MlflowClient

            mlc = MlflowClient(tracking_uri)
            exp = mlc.get_experiment_by_name(experiment_name)
            if exp is not None:
                runs = mlc.search_runs([exp.experiment_id], f"tags.`{RAYJOB_TAG}` = '{job}'", max_results=1)
                if runs:
                    run = runs[0].info
                    return f"{tracking_uri.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
        except Exception as exc:  # noqa: BLE001 - the job's outcome matters more than this look-up
            return f"(could not query MLflow at {tracking_uri}: {exc}); find the run with tag {RAYJOB_TAG}={job}"
        return f"no MLflow run tagged {RAYJOB_TAG}={job} in experiment {experiment_name} at {tracking_uri}"
    return (
        f"the run tagged {RAYJOB_TAG}={job} in MLflow experiment {experiment_name}: set MLFLOW_TRACKING_URI "
        "(e.g. kubectl port-forward svc/<release>-mlflow 5000:5000, then http://localhost:5000) to get its address"
    )


# ----------------------------------------------------------------------------- commands


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shapebias submit",
        description="Submit an experiment to Kubernetes as a KubeRay RayJob (MLproject parameters with -P).",
    )
    p.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    p.add_argument(
        "-P",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an MLproject parameter of the experiment (repeatable)",
    )
    p.add_argument("--namespace", "-n", default=None, help="namespace (default: the kube context's, else default)")
    p.add_argument("--context", default=None, help="kube context (default: the current one)")
    p.add_argument("--release", default=DEFAULT_RELEASE, help="the chart's release name (default: %(default)s)")
    p.add_argument(
        "--template",
        type=Path,
        default=None,
        help="a RayJob YAML to start from instead of the chart's ConfigMap (e.g. manifests/rayjob-*.yaml)",
    )
    p.add_argument("--name", default=None, help="RayJob name (default: <release>-<experiment>-<random>)")
    p.add_argument("--dry-run", action="store_true", help="print the RayJob as YAML and create nothing")
    p.add_argument("--wait", action="store_true", help="follow the RayJob to the end; print the MLflow run's address")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between status checks with --wait")
    p.add_argument("--timeout", type=float, default=0.0, help="give up waiting after this many seconds (0: never)")
    p.add_argument(
        "--mlflow-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow address reachable from here, to look the run up after --wait",
    )
    return p


def submit_main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_experiment(args.experiment)
    params = parse_params(args.param)
    # With MLproject at hand (a checkout, the image, SHAPEBIAS_MLPROJECT) unknown or bad parameters
    # fail before the cluster is touched; an installed shapebias without it leaves the check to the
    # RayJob's driver, which runs in the training image.
    check = mlproject_path().is_file()
    if check:
        job_args(args.experiment, params, require_all=False)
    else:
        print(
            f"note: no MLproject at {mlproject_path()}: the parameters are checked by the RayJob's driver "
            "in the cluster (set SHAPEBIAS_MLPROJECT to check them here)",
            file=sys.stderr,
        )
    name = check_name(args.name) if args.name else job_name(args.release, args.experiment)

    api = None
    namespace = args.namespace
    if args.template is not None:
        template = load_template_file(args.template, args.experiment)
        if not args.dry_run:
            api, ctx_ns = kube_client(args.context)
            namespace = namespace or ctx_ns
    else:
        try:
            api, ctx_ns = kube_client(args.context)
        except ConfigError as exc:
            if not args.dry_run:
                raise
            raise ConfigError(
                f"{exc}; a dry run without a cluster needs --template FILE (e.g. a checkout's "
                f"manifests/rayjob-{args.experiment.replace('_', '-')}.yaml)"
            ) from None
        namespace = namespace or ctx_ns
        template = fetch_template(api, namespace, args.release, args.experiment)
    namespace = namespace or template.get("metadata", {}).get("namespace") or "default"
    body = render(template, args.experiment, params, name, namespace, check=check)

    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
        return 0
    create_rayjob(api, namespace, body)
    print(f"created RayJob {name} in namespace {namespace}")
    print(f"  follow it:  kubectl -n {namespace} get rayjob {name} -w")
    if not args.wait:
        return 0
    final = wait_rayjob(api, namespace, name, args.poll, args.timeout)
    status = final.get("status") or {}
    ok = status.get("jobStatus") == "SUCCEEDED"
    print(f"RayJob {name}: {status.get('jobDeploymentStatus')}, job {status.get('jobStatus')}")
    env = {
        e.get("name"): e.get("value")
        for e in body["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    print("MLflow run:", mlflow_run_address(name, args.mlflow_uri, env.get("MLFLOW_EXPERIMENT_NAME") or "shapebias"))
    return 0 if ok else 1


def find_or_create_run(job: str, experiment: str) -> str:
    """The MLflow run of RayJob ``job``: the one tagged with its name, else a new one."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from shapebias.tracking import TASK_TAG

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "shapebias")
    exp = mlflow.set_experiment(name)
    mlc = MlflowClient()
    runs = mlc.search_runs(
        [exp.experiment_id], f"tags.`{RAYJOB_TAG}` = '{job}'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if runs:
        return runs[0].info.run_id
    run = mlc.create_run(exp.experiment_id, run_name=job, tags={RAYJOB_TAG: job, TASK_TAG: experiment})
    return run.info.run_id


def driver_main(argv: list[str] | None) -> int:
    """In the RayJob: resolve the MLflow run and Ray Train storage, then run the job module."""
    p = argparse.ArgumentParser(prog="python -m shapebias.cluster driver")
    p.add_argument("experiment")
    p.add_argument("--job-name", required=True)
    p.add_argument("-P", "--param", action="append", default=[])
    args = p.parse_args(argv)
    argv_job = job_args(args.experiment, parse_params(args.param))
    run_id = find_or_create_run(args.job_name, args.experiment)
    env = dict(os.environ, MLFLOW_RUN_ID=run_id)
    storage_root = os.environ.get(STORAGE_ENV, "").rstrip("/")
    if "--storage-path" in argv_job and storage_root:
        at = argv_job.index("--storage-path") + 1
        if not argv_job[at]:  # an explicit -P storage_path=... wins
            # the jobs name the Ray Train run after the MLflow run: checkpoints land in <root>/<run id>
            argv_job[at] = storage_root
    command = [sys.executable, "-m", f"training.{args.experiment}", *argv_job]
    print(f"shapebias driver: RayJob {args.job_name} -> MLflow run {run_id}", flush=True)
    print("shapebias driver:", shlex.join(command), flush=True)
    return subprocess.run(command, env=env, cwd=REPO_ROOT).returncode


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "driver":
        return driver_main(argv[1:])
    return submit_main(argv)


def main(argv: list[str] | None = None) -> int:
    from shapebias.tracking import cli_main

    return cli_main(_main)(argv)


if __name__ == "__main__":
    sys.exit(main())
