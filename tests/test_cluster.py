"""`shapebias submit` against a local stand-in of the Kubernetes API (an HTTP server on
127.0.0.1 with a kubeconfig pointing at it): what it sends, and how it handles 404/409/403."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from shapebias import cluster, rayjob, settings
from tools import devtools

NS = "research"
RAYJOBS = f"/apis/ray.io/v1/namespaces/{NS}/rayjobs"
CONFIGMAP = f"/api/v1/namespaces/{NS}/configmaps/shapebias-rayjobs"


def status_body(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


class StandIn:
    """A tiny Kubernetes API: canned answers per (method, path); records every request."""

    def __init__(self):
        self.answers: dict[tuple[str, str], list[tuple[int, dict]]] = {}
        self.requests: list[dict] = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                state.requests.append(
                    {
                        "method": self.command,
                        "path": path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": json.loads(raw) if raw else None,
                    }
                )
                queue = state.answers.get((self.command, path))
                if queue:
                    code, body = queue[0] if len(queue) == 1 else queue.pop(0)
                else:
                    code, body = 404, status_body(404, "NotFound", "the server could not find the requested resource")
                if body == "echo":
                    body = state.requests[-1]["body"]
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, method: str, path: str, *answers: tuple[int, dict]) -> None:
        self.answers[(method, path)] = list(answers)

    def sent(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def chart_configmap() -> dict:
    """The chart's RayJob templates as the cluster would hold them (from manifests/platform.yaml)."""
    docs = yaml.safe_load_all((devtools.MANIFESTS_DIR / "platform.yaml").read_text())
    cm = next(d for d in docs if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "shapebias-rayjobs")
    cm["metadata"]["namespace"] = NS
    return cm


@pytest.fixture
def api(tmp_path, monkeypatch):
    stand_in = StandIn()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "stand-in",
                "clusters": [{"name": "stand-in", "cluster": {"server": stand_in.url}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [
                    {"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester", "namespace": NS}}
                ],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stand_in.answer("GET", CONFIGMAP, (200, chart_configmap()))
    yield stand_in
    stand_in.close()


def submit(*argv: str) -> int:
    return cluster.main(list(argv))


def test_submit_creates_the_rayjob(api, capsys):
    api.answer("POST", RAYJOBS, (201, "echo"))
    assert submit("train_resnet", "-P", "topk=0.1", "-P", "sparsity=topk_mean") == 0
    posts = api.sent("POST", RAYJOBS)
    assert len(posts) == 1
    assert posts[0]["headers"].get("authorization") == "Bearer test-token"
    body = posts[0]["body"]
    assert body["apiVersion"] == "ray.io/v1" and body["kind"] == "RayJob"
    name = body["metadata"]["name"]
    assert name.startswith("shapebias-train-resnet-") and len(name) <= rayjob.MAX_NAME
    assert body["metadata"]["namespace"] == NS
    assert body["spec"]["entrypoint"] == (
        f"python -m shapebias.cluster driver train_resnet --job-name {name} -P topk=0.1 -P sparsity=topk_mean"
    )
    workers = body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert f"created RayJob {name} in namespace {NS}" in capsys.readouterr().out
    crds = settings.kuberay_crd_dir()
    if crds is not None:
        assert devtools.rayjob_errors(body, devtools.kuberay_validator(crds)) == []


def test_template_parameters_are_kept_and_overridden(api):
    api.answer("POST", RAYJOBS, (201, "echo"))
    assert submit("compare", "--name", "cmp-1") == 0  # the template supplies experiment=shapebias
    assert api.sent("POST", RAYJOBS)[-1]["body"]["spec"]["entrypoint"].endswith("-P experiment=shapebias")
    assert submit("compare", "--name", "cmp-2", "-P", "experiment=mine") == 0
    assert api.sent("POST", RAYJOBS)[-1]["body"]["spec"]["entrypoint"].endswith("-P experiment=mine")


@pytest.mark.parametrize(
    "code, reason, message, expected",
    [
        (404, "NotFound", "the server could not find the requested resource", "install the KubeRay operator"),
        (409, "AlreadyExists", 'rayjobs.ray.io "x" already exists', "already exists in namespace research"),
        (403, "Forbidden", 'rayjobs.ray.io is forbidden: User "tester" cannot create resource', "RBAC"),
        (404, "NotFound", f'namespaces "{NS}" not found', f"namespace {NS} does not exist"),
    ],
)
def test_api_errors_become_clear_messages(api, capsys, code, reason, message, expected):
    api.answer("POST", RAYJOBS, (code, status_body(code, reason, message)))
    assert submit("shape_bias", "-P", "model=vgg16") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err
    assert len(api.sent("POST", RAYJOBS)) == 1


def test_chart_not_installed(api, capsys):
    api.answer("GET", CONFIGMAP, (404, status_body(404, "NotFound", 'configmaps "shapebias-rayjobs" not found')))
    assert submit("train_resnet") == 2
    assert "the shapebias chart is not installed" in capsys.readouterr().err
    assert api.sent("POST", RAYJOBS) == []


def test_dry_run_prints_yaml_and_sends_nothing(api, capsys):
    assert submit("texture_synthesis", "-P", "steps=10", "--dry-run", "--name", "tex-dry") == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["kind"] == "RayJob" and job["metadata"] == {**job["metadata"], "name": "tex-dry", "namespace": NS}
    assert job["spec"]["entrypoint"].endswith("-P steps=10")
    assert [r["method"] for r in api.requests] == ["GET"]  # read the template, created nothing


def test_dry_run_without_a_cluster_takes_a_template_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert submit("train_fastgan", "-P", "data_dir=/data/jeep", "--dry-run") == 2
    assert "needs --template FILE (e.g. a checkout's manifests/rayjob-train-fastgan.yaml)" in capsys.readouterr().err
    template = devtools.MANIFESTS_DIR / "rayjob-train-fastgan.yaml"
    assert submit("train_fastgan", "-P", "data_dir=/data/jeep", "--dry-run", "--template", str(template)) == 0
    assert yaml.safe_load(capsys.readouterr().out)["spec"]["entrypoint"].endswith("-P data_dir=/data/jeep")


def test_installed_without_a_checkout(api, tmp_path, monkeypatch, capsys):
    """An installed shapebias without MLproject: the template still comes from the cluster and the
    parameters go to the RayJob's driver, which checks them in the training image."""
    monkeypatch.setenv("SHAPEBIAS_MLPROJECT", str(tmp_path / "absent" / "MLproject"))
    api.answer("POST", RAYJOBS, (201, "echo"))
    assert submit("shape_bias", "-P", "topk=0.3") == 0
    (post,) = api.sent("POST", RAYJOBS)
    assert post["body"]["spec"]["entrypoint"].endswith("-P topk=0.3")
    assert "checked by the RayJob's driver" in capsys.readouterr().err


def test_no_kube_context(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert submit("train_resnet") == 2
    assert "no Kubernetes context" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["alexnet"], "unknown experiment 'alexnet'"),
        (["train_resnet", "-P", "topkk=0.2"], "unknown parameter(s) topkk for train_resnet"),
        (["train_resnet", "-P", "topk"], "is not key=value"),
        (["train_resnet", "-P", "epochs=many"], "'many' is not a number"),
        (["train_resnet", "--name", "Bad_Name"], "is not accepted"),
        (["train_resnet", "--context", "elsewhere"], "kube context 'elsewhere' is not in"),
    ],
)
def test_bad_input(api, capsys, argv, expected):
    assert submit(*argv) == 2
    assert expected in capsys.readouterr().err
    assert api.sent("POST", RAYJOBS) == []


def rayjob_with(deployment: str, job: str | None) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "w"},
        "status": {"jobDeploymentStatus": deployment, **({"jobStatus": job} if job else {})},
    }


@pytest.mark.parametrize("final, code", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_wait_follows_the_status(api, capsys, final, code):
    api.answer("POST", RAYJOBS, (201, "echo"))
    api.answer(
        "GET",
        f"{RAYJOBS}/w-1",
        (200, rayjob_with("Initializing", None)),
        (200, rayjob_with("Running", "RUNNING")),
        (200, rayjob_with("Complete" if final == "SUCCEEDED" else "Failed", final)),
    )
    assert submit("train_resnet", "--name", "w-1", "--wait", "--poll", "0.01") == code
    out = capsys.readouterr().out
    assert "w-1: Initializing" in out and "w-1: Running, job RUNNING" in out
    assert f"RayJob w-1: {'Complete' if code == 0 else 'Failed'}, job {final}" in out
    assert "MLflow run: the run tagged shapebias.rayjob=w-1" in out
    assert len(api.sent("GET", f"{RAYJOBS}/w-1")) == 3


def test_job_args_follow_mlproject():
    args = cluster.job_args("train_resnet", {"topk": "0.1", "data_dir": "/a b"})
    assert args[args.index("--topk") + 1] == "0.1"
    assert args[args.index("--data-dir") + 1] == "/a b"
    assert args[args.index("--storage-path") + 1] == ""
    default_epochs = str(rayjob.load_entry_points()["train_resnet"]["parameters"]["epochs"]["default"])
    assert args[args.index("--epochs") + 1] == default_epochs
    with pytest.raises(cluster.ConfigError, match="data_dir of train_fastgan has no default"):
        cluster.job_args("train_fastgan", {})


def test_driver_resumes_the_same_run_on_retry(mlflow_store, monkeypatch):
    """A retried RayJob finds the MLflow run of its first attempt and the same checkpoint folder."""
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setenv("SHAPEBIAS_RAY_STORAGE", "s3://bucket/ray")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "shapebias-test")
    monkeypatch.setattr(cluster.subprocess, "run", lambda cmd, env, cwd: calls.append((cmd, env)) or Done())
    for _ in range(2):
        assert cluster.main(["driver", "train_resnet", "--job-name", "rj-1", "-P", "epochs=1"]) == 0
    assert cluster.main(["driver", "train_resnet", "--job-name", "rj-2"]) == 0
    (cmd1, env1), (cmd2, env2), (cmd3, env3) = calls
    assert env1["MLFLOW_RUN_ID"] == env2["MLFLOW_RUN_ID"] != env3["MLFLOW_RUN_ID"]
    run_id = env1["MLFLOW_RUN_ID"]
    assert cmd1[1:3] == ["-m", "training.train_resnet"]
    # the job appends the run id (Ray Train run name): checkpoints in s3://bucket/ray/<run id>
    assert cmd1[cmd1.index("--storage-path") + 1] == "s3://bucket/ray"
    assert cmd1[cmd1.index("--epochs") + 1] == "1"
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(run_id)
    assert run.data.tags["shapebias.rayjob"] == "rj-1" and run.data.tags["shapebias.task"] == "train_resnet"


def test_release_without_shapebias_in_its_name(api, capsys):
    """Release "lab" -> the chart's objects are lab-shapebias-*: submit finds lab-shapebias-rayjobs."""
    api.answer("GET", f"/api/v1/namespaces/{NS}/configmaps/lab-shapebias-rayjobs", (200, chart_configmap()))
    api.answer("POST", RAYJOBS, (201, "echo"))
    assert submit("shape_bias", "--release", "lab") == 0
    assert api.sent("GET", f"/api/v1/namespaces/{NS}/configmaps/lab-rayjobs")  # tried first, 404
    assert api.sent("POST", RAYJOBS)[0]["body"]["metadata"]["name"].startswith("lab-shape-bias-")


def test_forbidden_to_read_the_templates(api, capsys):
    api.answer("GET", CONFIGMAP, (403, status_body(403, "Forbidden", 'configmaps "shapebias-rayjobs" is forbidden')))
    assert submit("train_resnet") == 2
    err = capsys.readouterr().err
    assert "RBAC" in err and "Role shapebias-submitter" in err
