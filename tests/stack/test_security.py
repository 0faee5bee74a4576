"""Security of the local stack: the tracking server wants credentials, and no credential of the
stack ends up in a run (params, tags, logged configuration) or in a job's command line:
credentials reach jobs only through the job's environment."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

import pytest
import stackjobs as sj

pytestmark = [pytest.mark.stack]

TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".md", ".csv", ".cfg", ".ini", ".log", ".py", "MLmodel", ".toml")


def _get(url: str, auth: tuple[str, str] | None = None, method: str = "GET", body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers, method=method), timeout=60) as r:
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


def test_credentials_work_and_jobs_are_not_admin(stack):
    runner = (stack.job_env()["MLFLOW_TRACKING_USERNAME"], stack.job_env()["MLFLOW_TRACKING_PASSWORD"])
    assert _get(stack.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1", auth=runner) == 200
    # The account that jobs get cannot manage users; the admin can.
    assert _get(stack.tracking_uri + "/api/2.0/mlflow/users/get?username=admin", auth=runner) == 403
    assert _get(stack.tracking_uri + "/api/2.0/mlflow/users/get?username=shapebias", auth=stack.admin_auth()) == 200


@pytest.fixture(scope="module")
def finished_job_run(stack, client, experiment_id, jobs):
    """A train_resnet run made through the Ray Jobs API (the fault tests leave several; run one
    tiny job when this file runs alone)."""
    runs = client.search_runs([experiment_id], "tags.`shapebias.task` = 'train_resnet'")
    if runs:
        return runs[0].info.run_id
    run_id = client.create_run(experiment_id, run_name="security-probe").info.run_id
    sub = sj.submit_train(stack, run_id, sj.TRAIN_ARGS, 1, tag="security")
    st = sj.wait_job(jobs, sub)
    assert st == "SUCCEEDED", sj.tail(sj.logs(jobs, sub))
    return run_id


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
        fields = {"run name": run.info.run_name or "", **{f"param {k}": v for k, v in run.data.params.items()},
                  **{f"tag {k}": v for k, v in run.data.tags.items()}}
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


def test_credentials_reach_jobs_only_through_the_environment(stack, jobs, finished_job_run):
    secrets = stack.secret_values()
    submitted = [j for j in jobs.list_jobs() if j.submission_id]
    assert submitted
    for job in submitted:
        assert not any(s in job.entrypoint for s in secrets), f"credential in the command line of {job.submission_id}"
        assert not any(s in json.dumps(job.metadata or {}) for s in secrets)
        env = (job.runtime_env or {}).get("env_vars", {})
        assert env.get("MLFLOW_TRACKING_PASSWORD") == stack.job_env()["MLFLOW_TRACKING_PASSWORD"]
        assert env.get("AWS_SECRET_ACCESS_KEY") == stack.job_env()["AWS_SECRET_ACCESS_KEY"]
    # The Ray nodes themselves hold no credential: each job brings its own.
    for name in ("ray-head", "ray-worker"):
        environ = open(f"/proc/{stack.pid(name)}/environ", "rb").read().decode(errors="replace")
        assert not any(s in environ for s in secrets), f"{name}'s environment holds a credential"
    # No command line of the stack's processes spells a secret out (PostgreSQL's password goes to
    # MLflow as PGPASSWORD, the admin's as MLFLOW_AUTH_ADMIN_PASSWORD).
    stack_mod = __import__("shapebias_local_stack")
    for pid in stack_mod.marked_pids(stack.root):
        assert not any(s in stack_mod._cmdline(pid) for s in secrets), f"credential in the command line of pid {pid}"
    # No config file of the stack spells a secret out, except the 0600 secrets file itself.
    assert oct(stack.secrets_file.stat().st_mode & 0o777) == "0o600"
    ini = (stack.root / "mlflow" / "basic_auth.ini").read_text()
    assert not any(s in ini for s in secrets)
    with pytest.raises(Exception, match="credential"):
        stack.submit(f"echo {stack.job_env()['MLFLOW_TRACKING_PASSWORD']}")
