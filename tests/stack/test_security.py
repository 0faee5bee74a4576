"""Security of the local stack: the tracking server and the Jobs API want credentials, the jobs'
account cannot touch the admin's runs, and no credential of the stack ends up in a run (params,
tags, logged configuration, artifacts, logged models) or in a submission."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

import pytest

pytestmark = [pytest.mark.stack]

TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".md", ".csv", ".cfg", ".ini", ".log", ".py", "MLmodel", ".toml")


def _get(url: str, auth: tuple[str, str] | None = None, method: str = "GET", body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, headers=headers, method=method), timeout=60
        ) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


REQUESTS = [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=5", None),
    ("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": ["0"]}),
    ("POST", "/api/2.0/mlflow/experiments/create", {"name": "not-allowed"}),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts", None),
    ("GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=5", None),
]


@pytest.mark.parametrize("method,path,body", REQUESTS, ids=[r[1].split("?")[0] for r in REQUESTS])
def test_requests_without_credentials_get_401(stack, method, path, body):
    url = stack.tracking_uri + path
    assert _get(url, method=method, body=body) == 401
    assert _get(url, auth=("shapebias", "wrong-password"), method=method, body=body) == 401


def test_ray_jobs_api_wants_the_token(stack):
    url = stack.jobs_address + "/api/jobs/"
    assert _get(url) == 401
    token = stack.secrets["RAY_AUTH_TOKEN"]
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


def _runner(stack) -> tuple[str, str]:
    env = stack.client_env()
    return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


def test_credentials_work_and_jobs_are_not_admin(stack):
    runner = _runner(stack)
    assert _get(stack.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1", auth=runner) == 200
    # The account that jobs get cannot manage users; the admin can.
    assert _get(stack.tracking_uri + "/api/2.0/mlflow/users/get?username=admin", auth=runner) == 403
    assert _get(stack.tracking_uri + "/api/2.0/mlflow/users/get?username=shapebias", auth=stack.admin_auth()) == 200


def test_job_account_cannot_change_the_admins_runs(stack):
    """Accounts read what they are not granted more on: the jobs' account reads the admin's run
    but can neither rename it, nor finish it, nor log to it; it writes to the Default experiment
    and to experiments it creates."""
    api = stack.tracking_uri + "/api/2.0/mlflow"
    admin, runner = stack.admin_auth(), _runner(stack)

    def call(auth, method, path, body=None):
        return _get(api + path, auth=auth, method=method, body=body)

    exp = f"admin-only-{os.getpid()}"
    code = call(admin, "POST", "/experiments/create", {"name": exp})
    assert code == 200
    exp_id = _json(stack, admin, f"/experiments/get-by-name?experiment_name={exp}")["experiment"]["experiment_id"]
    run_id = _json(stack, admin, "/runs/create", {"experiment_id": exp_id, "run_name": "admins"})["run"]["info"][
        "run_id"
    ]
    assert call(runner, "GET", f"/runs/get?run_id={run_id}") == 200
    refused = {
        "rename": call(runner, "POST", "/runs/update", {"run_id": run_id, "run_name": "taken-over"}),
        "finish": call(runner, "POST", "/runs/update", {"run_id": run_id, "status": "FINISHED"}),
        "log": call(runner, "POST", "/runs/log-metric", {"run_id": run_id, "key": "x", "value": 1, "timestamp": 0}),
        "new run": call(runner, "POST", "/runs/create", {"experiment_id": exp_id}),
    }
    assert refused == dict.fromkeys(refused, 403)
    run = _json(stack, admin, f"/runs/get?run_id={run_id}")["run"]
    assert run["info"]["run_name"] == "admins" and run["info"]["status"] == "RUNNING" and not run["data"].get("metrics")
    assert call(runner, "POST", "/runs/create", {"experiment_id": "0"}) == 200
    own = f"runner-own-{os.getpid()}"
    assert call(runner, "POST", "/experiments/create", {"name": own}) == 200
    own_id = _json(stack, runner, f"/experiments/get-by-name?experiment_name={own}")["experiment"]["experiment_id"]
    assert call(runner, "POST", "/runs/create", {"experiment_id": own_id}) == 200


def _json(stack, auth, path: str, body: dict | None = None) -> dict:
    headers = {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    req = urllib.request.Request(stack.tracking_uri + "/api/2.0/mlflow" + path, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _artifact_texts(client, run_id: str, tmp_path, path: str | None = None):
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _artifact_texts(client, run_id, tmp_path, info.path)
        elif info.path.endswith(TEXT_SUFFIXES) and (info.file_size or 0) < 2_000_000:
            local = client.download_artifacts(run_id, info.path, str(tmp_path))
            yield info.path, open(local, encoding="utf-8", errors="replace").read()


def test_no_secret_in_any_run(stack, finished_job_run, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    secrets = stack.secret_values()
    assert all(len(s) >= 16 for s in secrets)
    # The admin sees every experiment and run on the server.
    user, password = stack.admin_auth()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    admin = MlflowClient(stack.tracking_uri)
    experiments = admin.search_experiments()
    runs = admin.search_runs([e.experiment_id for e in experiments], max_results=1000)
    assert any(r.info.run_id == finished_job_run for r in runs)
    checked = 0
    for run in runs:
        fields = {
            "run name": run.info.run_name or "",
            **{f"param {k}": v for k, v in run.data.params.items()},
            **{f"tag {k}": v for k, v in run.data.tags.items()},
        }
        for path, text in _artifact_texts(admin, run.info.run_id, tmp_path / run.info.run_id):
            fields[f"artifact {path}"] = text
        for where, text in fields.items():
            for secret in secrets:
                assert secret not in text, f"a credential appears in run {run.info.run_id}, {where}"
        checked += len(fields)
    for model in admin.search_logged_models([e.experiment_id for e in experiments]):
        for where, text in {**model.params, **model.tags}.items():
            assert not any(s in str(text) for s in secrets), f"a credential in logged model {model.model_id}: {where}"
    assert checked > 0


def test_submit_refuses_a_credential(stack):
    password = stack.client_env()["MLFLOW_TRACKING_PASSWORD"]
    for kwargs in (
        {"entrypoint": f"echo {password}"},
        {"entrypoint": "true", "extra_env": {"X": password}},
        {"entrypoint": "true", "metadata": {"note": password}},
    ):
        with pytest.raises(Exception, match="credential"):
            stack.submit(**kwargs)
