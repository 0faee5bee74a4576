"""The Helm chart, checked offline with the real tools: helm lint/template, kubernetes-validate
--strict for every built-in object, the KubeRay v1 schema (unknown fields rejected) for every
RayJob, required values, no credential in the output, every pod non-root."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest
import yaml

from tools import devtools

KUBE_VERSIONS = ("1.31.0", "1.35.0", "1.37.0")  # kubernetes-validate 1.37 ships schemas up to 1.37
GPU_VALUES = devtools.REPO_ROOT / "deploy" / "helm" / "values-gpu.yaml"
VARIANTS = {
    "default": ([], {}),
    "gpu-pool": ([GPU_VALUES], {}),
    "in-cluster-s3": ([], {"s3.inCluster.enabled": True, "s3.endpoint": ""}),
    "external-db": (
        [],
        {
            "postgresql.enabled": False,
            "externalDatabase.host": "db.example.org",
            "externalDatabase.existingSecret": "mlflow-db",
        },
    ),
}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.fixture(scope="module", autouse=True)
def helm():
    path = devtools.helm_path()
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is missing: run `make tools` (python -m tools.devtools fetch-helm)")
    return path


@pytest.fixture(scope="module")
def renders(helm) -> dict[str, list[dict]]:
    out = {}
    for name, (files, sets) in VARIANTS.items():
        stream = devtools.render_chart(values_files=files, set_values={**sets, "rayjobs.render": True})
        out[name] = [d for d in yaml.load_all(stream, Loader=LOADER) if d]
    return out


rayjobs_of = devtools.rayjobs_of
pod_specs = devtools.pod_specs


@pytest.mark.parametrize("values", [None, GPU_VALUES], ids=["default", "gpu-pool"])
def test_helm_lint(values):
    args = ["lint", str(devtools.CHART_DIR), "--strict"] + (["--values", str(values)] if values else [])
    proc = devtools.run_helm(args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_builtin_objects_validate_strict(renders, variant):
    docs = [d for d in renders[variant] if d["kind"] != "RayJob"]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Role"} <= kinds
    errors = [e for version in KUBE_VERSIONS for d in docs for e in devtools.builtin_errors(d, version)]
    assert errors == []


def test_builtin_validation_catches_unknown_fields(renders):
    deployment = next(d for d in renders["default"] if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert devtools.builtin_errors(bad, "1.35.0")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rayjobs_validate_against_kuberay_v1(renders, variant, kuberay_dir):
    validator = devtools.kuberay_validator(kuberay_dir)  # cached
    jobs = rayjobs_of(renders[variant])
    assert sorted({j["metadata"]["labels"]["shapebias.io/experiment"] for j in jobs}) == sorted(
        ["train_resnet", "train_fastgan", "shape_bias", "texture_synthesis", "compare"]
    )
    assert len(jobs) == 10  # five rendered, five templates
    for job in jobs:
        assert devtools.rayjob_errors(job, validator) == [], job["metadata"]["name"]


def test_kuberay_schema_rejects_unknown_fields(renders, kuberay_dir):
    validator = devtools.kuberay_validator(kuberay_dir)
    job = copy.deepcopy(rayjobs_of(renders["default"])[0])
    job["spec"]["shutdownAfterJobFinish"] = True  # a typo of shutdownAfterJobFinishes
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["gpu"] = 1
    errors = devtools.rayjob_errors(job, validator)
    assert len(errors) == 2 and any("shutdownAfterJobFinish" in e for e in errors)


def test_rayjob_shape(renders):
    for job in rayjobs_of(renders["gpu-pool"]):
        spec = job["spec"]
        exp = job["metadata"]["labels"]["shapebias.io/experiment"]
        assert spec["entrypoint"].startswith(f"python -m shapebias.cluster driver {exp} --job-name ")
        assert spec["backoffLimit"] == 3 and spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0
        workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
        pod = workers["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert workers["replicas"] == {"train_resnet": 2, "compare": 0}.get(exp, 1)
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["SHAPEBIAS_RAY_STORAGE"]["value"] == "s3://shapebias-artifacts/ray"
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "shapebias-s3-job"
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "shapebias-mlflow-job",
            "key": "password",
        }
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://shapebias-mlflow.shapebias.svc.cluster.local:5000"


def test_mlflow_server(renders):
    docs = renders["default"]
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "shapebias-mlflow")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    hosts = env["ALLOWED_HOSTS"]["value"].split(",")
    for h in (
        "shapebias-mlflow",
        "shapebias-mlflow.shapebias",
        "shapebias-mlflow.shapebias.svc",
        "shapebias-mlflow.shapebias.svc.cluster.local",
    ):
        assert h in hosts and f"{h}:5000" in hosts
    for var, key in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key"),
        ("DB_PASSWORD", "password"),
    ):
        assert env[var]["valueFrom"]["secretKeyRef"]["key"] == key
    assert env["ARTIFACTS_DESTINATION"]["value"] == "s3://shapebias/mlartifacts"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["livenessProbe"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    script = next(d for d in docs if d["metadata"]["name"] == "shapebias-mlflow-start")["data"]["mlflow-start.py"]
    compile(script, "mlflow-start.py", "exec")
    assert "--serve-artifacts" in script and '"basic-auth"' in script and "--allowed-hosts" in script


def test_allowed_hosts_pass_mlflows_host_check(renders):
    """The Service's Host headers (with and without port) pass MLflow's own host validation."""
    from mlflow.server.security_utils import is_allowed_host_header

    dep = next(
        d for d in renders["default"] if d["metadata"]["name"] == "shapebias-mlflow" and d["kind"] == "Deployment"
    )
    hosts = next(
        e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "ALLOWED_HOSTS"
    )
    allowed = hosts.split(",")
    for host in (
        "shapebias-mlflow:5000",
        "shapebias-mlflow.shapebias.svc.cluster.local:5000",
        "shapebias-mlflow.shapebias.svc",
        "localhost:5000",
        "127.0.0.1:8080",
    ):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.org")


def test_no_credential_has_a_default(renders):
    for variant, docs in renders.items():
        assert not [d for d in docs if d["kind"] == "Secret"], variant  # the admin creates the Secrets
        text = yaml.safe_dump_all(docs)
        assert not re.search(r"://[^/\s:@{]+:[^/\s@{]+@", text), f"{variant}: a URL with a password"
        for d in docs:
            for path, value in _walk(d):
                key = path[-1] if path else ""
                if (
                    isinstance(key, str)
                    and key not in ("existingSecret", "secretKeyRef", "secretName")
                    and not isinstance(value, bool)
                    and re.search(r"password|secret|token|access.?key", key, re.I)
                ):
                    assert isinstance(value, dict) or value in ("", None), f"{variant}: {'/'.join(map(str, path))}"
                if (
                    isinstance(value, dict)
                    and "name" in value
                    and re.search(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", str(value.get("name")))
                ):
                    assert "value" not in value and "secretKeyRef" in value.get("valueFrom", {}), (
                        f"{variant}: {d['kind']}/{d['metadata']['name']} env {value['name']} is not from a Secret"
                    )


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*path, k), v
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*path, i), v
            yield from _walk(v, (*path, i))


def test_every_pod_runs_as_non_root(renders):
    seen = 0
    for docs in renders.values():
        for obj in [*docs, *rayjobs_of(docs)]:
            for name, pod in pod_specs(obj):
                seen += 1
                psc = pod.get("securityContext", {})
                assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0, name
                for c in [*pod.get("containers", []), *pod.get("initContainers", [])]:
                    sc = c.get("securityContext", {})
                    assert sc.get("allowPrivilegeEscalation") is False, (name, c["name"])
                    assert sc.get("runAsUser", psc["runAsUser"]) > 0
                    assert c.get("resources", {}).get("limits"), (name, c["name"])
                    image = c["image"]
                    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    assert seen >= 4 * (2 + 2 * 10)


@pytest.mark.parametrize(
    "sets, message",
    [
        ({"s3.endpoint": ""}, "s3.endpoint is required"),
        ({"s3.bucket": ""}, "s3.bucket is required"),
        ({"s3.existingSecret": ""}, "s3.existingSecret is required"),
        ({"mlflow.auth.existingSecret": ""}, "mlflow.auth.existingSecret is required"),
        ({"postgresql.existingSecret": ""}, "postgresql.existingSecret is required"),
        ({"postgresql.enabled": False}, "externalDatabase.host is required"),
        ({"postgresql.enabled": False, "externalDatabase.host": "db"}, "externalDatabase.existingSecret is required"),
        ({"podSecurityContext.runAsNonRoot": False}, "runAsNonRoot"),
        ({"mlflow.auth.defaultPermission": "ALL"}, "defaultPermission"),
        ({"mlflow.auth.jobSecret": ""}, "mlflow.auth.jobSecret is required"),
        ({"mlflow.auth.jobSecret": "shapebias-mlflow-auth"}, "mlflow.auth.jobSecret must differ"),
        ({"s3.jobSecret": ""}, "s3.jobSecret is required"),
        ({"s3.jobSecret": "shapebias-s3"}, "s3.jobSecret must differ"),
        ({"rayjobs.auth.existingSecret": ""}, "rayjobs.auth.existingSecret is required"),
        ({"postgresql.tls.existingSecret": ""}, "postgresql.tls.existingSecret is required"),
        ({"image.training.digest": "sha256:abc"}, "digest"),
        ({"securityContext.capabilities": {"drop": []}}, "capabilities"),
    ],
)
def test_missing_required_values_fail_with_a_message(sets, message):
    args = ["template", "t", str(devtools.CHART_DIR)]
    for k, v in sets.items():
        args += ["--set-json", f"{k}={json.dumps(v)}"]
    proc = devtools.run_helm(args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_images_match_the_project():
    """The chart's image tags follow the chart's appVersion; the Dockerfile's pins follow constraints.txt."""
    chart = yaml.safe_load((devtools.CHART_DIR / "Chart.yaml").read_text())
    values = yaml.safe_load((devtools.CHART_DIR / "values.yaml").read_text())
    assert values["image"]["training"]["tag"] == chart["appVersion"]
    assert values["image"]["server"]["tag"] == f"{chart['appVersion']}-server"
    dockerfile = (devtools.REPO_ROOT / "platform" / "Dockerfile").read_text()
    pins = dict(
        line.split("==")
        for line in (devtools.REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for pkg, text in (("mlflow", "mlflow[auth]=="), ("psycopg2-binary", "psycopg2-binary=="), ("boto3", "boto3==")):
        assert f"{text}{pins[pkg].strip()}" in dockerfile, pkg
    assert re.search(r"^ARG PYTHON_IMAGE=\S+:\d+\.\d+\.\d+-slim-\w+", dockerfile, re.M)
    assert "AS training" in dockerfile and "AS server" in dockerfile and "USER 1000:1000" in dockerfile


def test_fetch_helm_is_idempotent_and_real():
    import time

    if "SHAPEBIAS_HELM" in os.environ:
        pytest.skip("SHAPEBIAS_HELM points at another helm")
    start = time.monotonic()
    path = devtools.fetch_helm(quiet=True)  # already fetched by the helm fixture's `make tools`
    assert time.monotonic() - start < 5
    version = devtools.run_helm(["version", "--template", "{{.Version}}"]).stdout
    assert path == devtools.BIN_DIR / "helm" and version.startswith("v4.")


def start_script() -> dict:
    """The server's start script as a module namespace (its main() not run)."""
    namespace = {"__name__": "mlflow_start"}
    path = devtools.CHART_DIR / "files" / "mlflow-start.py"
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_mlflow_start_script(tmp_path, monkeypatch):
    """The server's start script: URL-quoted DB password, a private auth config, the bucket made
    on an S3 API (moto), the job account set up, and the `mlflow server` flags; credentials never
    in the arguments, the job account's password not left in the server's environment."""
    import configparser

    import moto

    password = "p@ss:w/rd%1"
    env = {
        "DB_USERNAME": "mlflow",
        "DB_PASSWORD": password,
        "DB_HOST": "db",
        "DB_PORT": "5432",
        "DB_NAME": "mlflow",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pw",
        "MLFLOW_JOB_USERNAME": "jobs",
        "MLFLOW_JOB_PASSWORD": "job-pw",
        "JOB_EXPERIMENT": "shapebias",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": "https://s3.us-east-1.amazonaws.com",
        "S3_BUCKET": "shapebias",
        "S3_CREATE_BUCKET": "true",
        "MLFLOW_PORT": "5000",
        "ARTIFACTS_DESTINATION": "s3://shapebias/mlartifacts",
        "ALLOWED_HOSTS": "a,a:5000",
        "AUTH_CONFIG_DIR": str(tmp_path / "auth"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_CONFIG_PATH"):  # the script sets them: undo afterwards
        monkeypatch.setenv(k, "")
    script = start_script()
    provisioned, execs = [], []
    script["provision_job_account"] = lambda *args: provisioned.append(args)
    monkeypatch.setattr(os, "execvp", lambda file, args: execs.append(args))
    with moto.mock_aws():
        script["main"]()
        import boto3

        assert [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]] == ["shapebias"]
    (args,) = execs
    assert args[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in args and args[args.index("--app-name") + 1] == "basic-auth"
    assert args[args.index("--allowed-hosts") + 1] == "a,a:5000"
    assert not any(password in a or "admin-pw" in a or "job-pw" in a for a in args)
    ini = tmp_path / "auth" / "basic_auth.ini"
    assert oct(ini.stat().st_mode & 0o777) == "0o600"
    parser = configparser.ConfigParser()
    parser.read(ini)
    from sqlalchemy.engine import make_url

    url = make_url(parser["mlflow"]["database_uri"])
    assert url.password == password and url.host == "db" and url.database == "mlflow"
    assert url.query["sslmode"] == "require"
    assert os.environ["MLFLOW_BACKEND_STORE_URI"] == parser["mlflow"]["database_uri"]
    ((db_uri, user, job_pw, experiment),) = provisioned
    assert (db_uri, user, job_pw, experiment) == (parser["mlflow"]["database_uri"], "jobs", "job-pw", "shapebias")
    assert "MLFLOW_JOB_PASSWORD" not in os.environ


def test_start_script_refuses_the_admin_as_job_account(monkeypatch):
    script = start_script()
    env = {var: "x" for var in script["REQUIRED"]}
    with pytest.raises(SystemExit, match="must not be the admin account"):
        script["check_env"](env)


def test_job_account_has_edit_on_its_experiment_only(tmp_path):
    """Provisioned twice (a restart, a second replica): one non-admin user with EDIT on the jobs'
    experiment, and no permission row anywhere else; the password follows the Secret."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    db_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    provision = start_script()["provision_job_account"]
    first = provision(db_uri, "jobs", "first-password", "shapebias")
    assert provision(db_uri, "jobs", "second-password", "shapebias") == first
    store = SqlAlchemyStore()
    store.init_db(db_uri)
    user = store.get_user("jobs")
    assert user.is_admin is False
    perms = store.list_experiment_permissions("jobs")
    assert [(p.experiment_id, p.permission) for p in perms] == [(first, "EDIT")]
    assert store.authenticate_user("jobs", "second-password")
    assert not store.authenticate_user("jobs", "first-password")
