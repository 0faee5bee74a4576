"""Run integrity: refused resumes change nothing, SIGTERM ends a run KILLED, `reproduce` tells a live
run from an abandoned one, a fresh SQLite store survives concurrent first use, compare's output
folder, and the cluster-size check."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_compare import log_runs, seed_table1_runs  # tests/ is on sys.path (no __init__.py)
from test_reproduce import resnet_run

from shapebias import integrity, tracking
from shapebias.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--epochs",
    "2",
    "--synthetic-classes",
    "2",
    "--synthetic-train-per-class",
    "4",
    "--synthetic-test-per-class",
    "2",
    "--image-size",
    "16",
    "--batch-size",
    "8",
]


def _resnet_run(uri: str, status: str, tags: dict | None = None) -> str:
    """A train_resnet run as the job logs it (task tag, the whole Config as params), ended with ``status``."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from training.train_resnet import config_from_args, parser

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("Default").experiment_id
    run_id = client.create_run(exp, tags={tracking.TASK_TAG: "train_resnet", **(tags or {})}).info.run_id
    params = tracking.flatten(dataclasses.asdict(config_from_args(parser().parse_args(TINY))))
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def _snapshot(uri: str, run_id: str):
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(run_id)
    return run.info.status, run.info.end_time, dict(run.data.params), dict(run.data.tags), dict(run.data.metrics)


def test_refused_resumes_change_nothing(mlflow_store, capsys):
    """Other settings on a KILLED or FINISHED run, or the same settings on a FINISHED run."""
    from training import train_resnet

    other = ["--sparsity", "none", "--lr", "0.5", "--epochs", "5"]
    for status, extra, message in (
        ("KILLED", other, "was started with other settings"),
        ("FINISHED", other, "was started with other settings"),
        ("FINISHED", [], "already finished"),
    ):
        run_id = _resnet_run(mlflow_store, status)
        before = _snapshot(mlflow_store, run_id)
        assert train_resnet.main([*TINY, "--run-id", run_id, *extra]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
        assert len(err) == 1 and err[0].startswith(f"error: run {run_id} {message}"), err
        if extra:
            assert all(name in err[0] for name in ("sparsity='none'", "lr='0.5'", "epochs='5'"))
        assert _snapshot(mlflow_store, run_id) == before


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_liveness_of_running_runs(mlflow_store, monkeypatch, capsys):
    """Live: RUNNING, fresh heartbeat, pid alive here. A dead pid or a stale heartbeat is abandoned."""
    from training import reproduce, train_resnet

    host, now = socket.gethostname(), time.time()
    live = {integrity.HOST_TAG: host, integrity.PID_TAG: str(os.getpid()), integrity.HEARTBEAT_TAG: str(int(now))}
    assert integrity.is_live("RUNNING", live)
    assert not integrity.is_live("KILLED", live)
    assert not integrity.is_live("RUNNING", {**live, integrity.PID_TAG: str(_dead_pid())})
    assert not integrity.is_live("RUNNING", {**live, integrity.HEARTBEAT_TAG: str(int(now - 3600))})
    assert integrity.is_live("RUNNING", {**live, integrity.HOST_TAG: "another-host", integrity.PID_TAG: "1"})
    assert not integrity.is_live("RUNNING", {})  # no owner record: a run of an older version, resumable

    run_id = _resnet_run(mlflow_store, "RUNNING", tags=live)
    assert train_resnet.main([*TINY, "--run-id", run_id]) == 2
    assert f"run {run_id} is still running (pid {os.getpid()} on host {host}" in capsys.readouterr().err

    cell = reproduce.grid("table1", seeds=["0"], datasets=["IN-S1"])[0]
    _, spec, sparsity, dataset = cell.protocol.split(".")

    def state(tags: dict) -> str:
        return reproduce.status([cell], [resnet_run(spec, sparsity, dataset, 0, status="RUNNING", tags=tags)])[0].state

    assert state({}) == "unfinished"

    assert state(live) == "running"
    assert state({**live, integrity.PID_TAG: str(_dead_pid())}) == "unfinished"
    assert state({**live, integrity.HEARTBEAT_TAG: str(int(now - 3600))}) == "unfinished"


@pytest.mark.slow
def test_sigterm_ends_the_run_killed(tmp_path):
    """A real driver (tiny synthetic run, Ray local) is sent SIGTERM once its first epoch is
    logged: the run ends KILLED, exit status 143, no traceback from the driver."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SHAPEBIAS_EPOCH_SLEEP": "300", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.train_resnet", *TINY, "--storage-path", str(tmp_path / "ray")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client, run = None, None
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            time.sleep(2)
            if client is None and (tmp_path / "mlflow.db").exists():
                client = MlflowClient(integrity.open_store(uri))  # the job may still be creating it
            experiment = client.get_experiment_by_name("shapebias-train_resnet") if client else None
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            # epoch 0 is logged, and the job then sleeps: the signal arrives in the middle of a job
            if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
                run = runs[0]
                break
        assert run is not None, "the first epoch was never logged"
        assert run.info.status == "RUNNING" and run.data.tags[integrity.PID_TAG] == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[err.find("Traceback") :][:4000] or err[-2000:]
    driver = [line for line in err.splitlines() if " pid=" not in line]  # not Ray's actor/worker logs
    assert not any("Traceback" in line for line in driver), "\n".join(driver)[-3000:]
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags[integrity.TERMINATED_TAG] == "terminated by SIGTERM"
    assert not integrity.is_live(ended.info.status, ended.data.tags)


def test_three_processes_open_a_fresh_sqlite_store_at_once(tmp_path):
    """Without the lock, MLflow's schema migration of a fresh store fails in some of them."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import mlflow\nfrom shapebias.integrity import open_store\n"
        "open_store(mlflow.get_tracking_uri())\n"
        "with mlflow.start_run():\n    mlflow.log_param('p', 1)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_RUN_ID", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)[-3000:]
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs(["0"])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}


def test_compare_writes_its_own_folder_and_uploads_only_it(mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    from training import compare

    log_runs(mlflow_store, "t1", seed_table1_runs()[:3])
    out = tmp_path / "reports"
    out.mkdir()
    (out / "private.txt").write_text("not a report")
    assert compare.main(["--experiment", "t1", "--output-dir", str(out)]) == 0
    client = MlflowClient(mlflow_store)
    run = client.search_runs([client.get_experiment_by_name("shapebias-compare").experiment_id])[0]
    folder = out / f"compare-{run.info.run_id}"
    assert folder.is_dir() and (folder / "report.html").exists()
    assert sorted(p.name for p in out.iterdir()) == [folder.name, "private.txt"]
    uploaded = {a.path for a in client.list_artifacts(run.info.run_id, "compare")}
    assert "compare/private.txt" not in uploaded and "compare/report.html" in uploaded
    assert compare.main(["--experiment", "t1", "--output-dir", str(out), "--no-log"]) == 0
    assert len([p for p in out.iterdir() if p.name.startswith("compare-")]) == 2  # a second, fresh folder


def test_cluster_too_small_for_the_workers():
    from training.raytools import check_workers

    check_workers(4, {"CPU": 4.0, "GPU": 0.0})
    with pytest.raises(ConfigError, match=r"num_workers=1000 is more than this Ray cluster can place \(4 CPUs"):
        check_workers(1000, {"CPU": 4.0})


def test_store_checks_create_nothing(tmp_path):
    for uri in (
        "htp://x",
        "sqlite://relative.db",
        f"sqlite:///{tmp_path}/missing/mlflow.db",
        "http://",
        "http://h:port",
    ):
        with pytest.raises(ConfigError, match="tracking URI"):
            integrity.open_store(uri)
    with pytest.raises(ConfigError, match="unreachable"):
        integrity.open_store(f"http://127.0.0.1:{_free_port()}")
    assert list(tmp_path.iterdir()) == []
    integrity.check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    integrity.check_tracking_uri(str(tmp_path / "mlruns"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_secret_reaches_the_ray_runtime_environment(monkeypatch):
    """Ray logs a runtime environment in clear: what jobs forward to workers and to submitted jobs
    carries addresses and credential-file paths, never a password or a secret key."""
    import mlflow

    from shapebias import tracking
    from training import reproduce

    secrets = {"MLFLOW_TRACKING_PASSWORD": "pw-123", "AWS_SECRET_ACCESS_KEY": "sk-456", "AWS_SESSION_TOKEN": "tk-789"}
    for name, value in {
        **secrets,
        "MLFLOW_TRACKING_USERNAME": "job",
        "AWS_SHARED_CREDENTIALS_FILE": "/h/.aws/c",
    }.items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri("http://127.0.0.1:1")  # never contacted
    forwarded = [tracking.worker_env(), reproduce.job_env("1", reproduce.Job("training.train_resnet", [], []))]
    for env in forwarded:
        assert env["MLFLOW_TRACKING_USERNAME"] == "job"
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/h/.aws/c"
        assert not set(secrets) & set(env)
        assert not {"pw-123", "sk-456", "tk-789"} & set(env.values())
