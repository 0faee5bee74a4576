"""Fault injection on the local stack: the ResNet job, submitted through the Ray Jobs API (the
path a KubeRay RayJob takes), survives a killed Ray worker, a restarted MLflow server and a
killed driver; an artifact upload survives a 20 s S3 outage. Each test first shows that its
fault hit (the process is gone, a request failed) before it asserts the recovery.

Every fault is bounded in time and stays on loopback. Sizes are tiny (2 classes x 5 images of
16 px, 3 epochs); `SHAPEBIAS_EPOCH_SLEEP` spaces the epochs out so that a fault lands mid-run.
The tests of a terminated driver, of a resume with changed settings and of a PostgreSQL restart
are in test_lifecycle.py.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
import stackjobs as sj
from stackjobs import EPOCHS, TRAIN_ARGS, proc_gone

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(2400)]

CURVES = ("train_loss", "train_acc", "test_acc", "stylized_acc", "shape_bias")


def _new_run(client, experiment_id: str, name: str) -> str:
    return client.create_run(experiment_id, run_name=name).info.run_id


def _one_point_per_epoch(client, run_id: str) -> None:
    for key in CURVES:
        assert sj.steps(client, run_id, key) == list(range(EPOCHS)), f"{key}: {sj.steps(client, run_id, key)}"


def _wait_second_epoch(stack, client, jobs, run_id: str, sub: str) -> None:
    """Wait until epoch 2's metrics are logged: the worker is then past Ray Train's report of
    epoch 1, so that checkpoint is registered (a checkpoint merely visible in S3 may still be
    uploading, and a fault then rightly starts over). The epoch sleep that follows is when the
    fault lands."""
    sj.wait_until(
        lambda: len(sj.steps(client, run_id, "train_loss")) >= 2 or sj.status(jobs, sub) in sj.TERMINAL,
        sj.JOB_TIMEOUT,
        "epoch 2's metrics",
    )
    sj.wait_until(
        lambda: sj.checkpoint_recorded(stack, run_id) or sj.status(jobs, sub) in sj.TERMINAL,
        120,
        "Ray Train to record a checkpoint",
    )
    sj.assert_running(jobs, sub)


def _succeeded(jobs, sub: str) -> str:
    st = sj.wait_job(jobs, sub)
    out = sj.logs(jobs, sub)
    assert st == "SUCCEEDED", f"job {sub} ended {st}:\n{sj.tail(out, 80)}"
    return out


def test_worker_killed_mid_training_resumes_from_checkpoint(stack, client, experiment_id, jobs, fault_report):
    """The platform's own failure policy (no setting of the test's) recovers a killed worker."""
    run_id = _new_run(client, experiment_id, "fault-worker-killed")
    sub = sj.submit_train(stack, run_id, TRAIN_ARGS, EPOCHS, tag="worker-kill", env={"SHAPEBIAS_EPOCH_SLEEP": "8"})
    _wait_second_epoch(stack, client, jobs, run_id, sub)
    assert sj.checkpoints(stack, run_id), "no checkpoint in S3"
    pids = sj.wait_until(lambda: sj.train_worker_pids(stack, jobs, sub), 60, "the Ray Train worker's pid")
    logged = len(sj.steps(client, run_id, "train_loss"))
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # The fault hit: the workers are gone, and a new worker group took over.
    sj.wait_until(lambda: all(proc_gone(p) for p in pids), 30, "the killed workers to be gone")
    new = sj.wait_until(
        lambda: (
            [p for p in sj.train_worker_pids(stack, jobs, sub) if p not in pids] or sj.status(jobs, sub) in sj.TERMINAL
        ),
        sj.JOB_TIMEOUT,
        "a new Ray Train worker",
    )
    assert new is not True, f"no new worker started:\n{sj.tail(sj.logs(jobs, sub))}"

    out = _succeeded(jobs, sub)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    resumed = int(run.data.tags.get("shapebias.resumed_from_epoch", "0"))
    assert resumed >= 1, f"the job did not resume from a checkpoint:\n{sj.tail(out)}"
    assert "resuming from the checkpoint of epoch" in out
    _one_point_per_epoch(client, run_id)
    # Ray Train's checkpoints and the run's artifacts are in the S3 bucket.
    assert len(sj.checkpoints(stack, run_id)) >= 1
    figures = f"mlartifacts/{experiment_id}/{run_id}/artifacts/figures/"
    assert sj.s3_keys(stack, figures), "the run's figures are not in S3"
    sj.record(
        fault_report,
        fault="Ray Train worker process killed (SIGKILL) mid-training",
        injected=f"after epoch {logged} of {EPOCHS} was logged; worker pids {pids} gone, new {new}",
        survived=f"default failure policy restarted the workers; resumed from epoch {resumed}; "
        f"run FINISHED, {EPOCHS} points per curve",
        job=sub,
    )


def test_mlflow_server_restarted_mid_run(stack, client, experiment_id, jobs, fault_report):
    run_id = _new_run(client, experiment_id, "fault-mlflow-restart")
    sub = sj.submit_train(stack, run_id, TRAIN_ARGS, EPOCHS, tag="mlflow-restart", env={"SHAPEBIAS_EPOCH_SLEEP": "6"})
    sj.wait_until(
        lambda: sj.steps(client, run_id, "train_loss") or sj.status(jobs, sub) in sj.TERMINAL,
        sj.JOB_TIMEOUT,
        "the first epoch's metrics",
    )
    sj.assert_running(jobs, sub)
    before = sj.steps(client, run_id, "train_loss")
    assert len(before) < EPOCHS
    t_down = time.time() * 1000
    t0 = time.monotonic()
    stack.stop("mlflow")
    # The fault hit: the tracking server refuses connections.
    assert sj.raw_status(stack.tracking_uri + "/health") == 0
    stack.start("mlflow")
    outage = time.monotonic() - t0

    _succeeded(jobs, sub)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    _one_point_per_epoch(client, run_id)
    later = sorted({m.step for key in CURVES for m in sj.history(client, run_id, key) if m.timestamp >= t_down})
    assert later, "no metric point was logged after the restart began"
    assert set(later) | set(before) == set(range(EPOCHS))
    sj.record(
        fault_report,
        fault="MLflow tracking server restarted mid-run",
        injected=f"after epoch {len(before)} of {EPOCHS}; server down {outage:.0f} s",
        survived=f"epochs {[s + 1 for s in later]} logged after the restart; run FINISHED",
        job=sub,
    )


def test_driver_killed_then_resubmitted_continues_from_checkpoint(stack, client, experiment_id, jobs, fault_report):
    run_id = _new_run(client, experiment_id, "fault-driver-killed")
    sub1 = sj.submit_train(stack, run_id, TRAIN_ARGS, EPOCHS, tag="driver-kill", env={"SHAPEBIAS_EPOCH_SLEEP": "8"})
    _wait_second_epoch(stack, client, jobs, run_id, sub1)
    info = sj.wait_until(lambda: (i := jobs.get_job_info(sub1)).driver_info and i, 60, "the driver's pid")
    done_before = len(sj.steps(client, run_id, "train_loss"))
    os.kill(int(info.driver_info.pid), signal.SIGKILL)
    st1 = sj.wait_job(jobs, sub1)
    assert st1 in ("FAILED", "STOPPED"), st1
    assert done_before < EPOCHS
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody closed it: the driver is gone
    # The dead driver's Train controller and workers go with it (Ray's fate sharing).
    sj.wait_until(lambda: not sj.train_worker_pids(stack, jobs, sub1), 120, "the old job's workers to exit")

    sub2 = sj.submit_train(stack, run_id, TRAIN_ARGS, EPOCHS, tag="driver-resubmit")
    out = _succeeded(jobs, sub2)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    resumed = int(run.data.tags.get("shapebias.resumed_from_epoch", "0"))
    assert resumed >= 1 and "resuming from the checkpoint of epoch" in out, sj.tail(out)
    assert f"epoch 1/{EPOCHS}:" not in out, "the resubmitted job trained epoch 1 again"
    _one_point_per_epoch(client, run_id)
    sj.record(
        fault_report,
        fault="driver killed (SIGKILL), job submitted again with the same run",
        injected=f"after epoch {done_before} of {EPOCHS} was logged",
        survived=f"second job resumed from epoch {resumed} (did not retrain epoch 1); run FINISHED, "
        f"{EPOCHS} points per curve",
        job=f"{sub1} -> {sub2}",
    )


def test_artifact_upload_survives_s3_outage(stack, client, experiment_id, fault_report, tmp_path):
    run_id = _new_run(client, experiment_id, "fault-s3-outage")
    payload = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    outcome: dict[str, object] = {}

    def upload() -> None:
        try:
            client.log_artifact(run_id, str(path), "outage")
            outcome["done"] = time.monotonic()
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    stack.stop("s3", sig=signal.SIGKILL)  # the endpoint dies: connections refused and reset
    t0 = time.monotonic()
    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    time.sleep(20)
    assert worker.is_alive(), f"the upload ended during the outage: {outcome}"
    # The fault hit: the S3 endpoint refuses connections, and the upload has not reached the bucket.
    assert sj.raw_status(stack.s3_endpoint) == 0
    assert not sj.s3_keys_direct(stack, f"mlartifacts/{experiment_id}/{run_id}/")
    stack.start("s3")
    back = time.monotonic() - t0
    worker.join(300)
    assert not worker.is_alive(), "the upload did not finish within 5 minutes of S3 coming back"
    assert "error" not in outcome, f"the upload failed: {outcome.get('error')!r}"
    got = client.download_artifacts(run_id, "outage/blob.bin", str(tmp_path / "dl"))
    assert open(got, "rb").read() == payload
    key = f"mlartifacts/{experiment_id}/{run_id}/artifacts/outage/blob.bin"
    assert sj.s3_keys(stack, key) == [key]
    log = (stack.logs / "mlflow.log").read_text(errors="replace")
    puts = len(
        re.findall(rf'"PUT /api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/outage/blob.bin', log)
    )
    sj.record(
        fault_report,
        fault="S3 endpoint stopped (SIGKILL) for ~20 s during an artifact upload",
        injected=f"S3 down {back:.0f} s",
        survived=f"upload finished {float(outcome['done']) - t0:.0f} s after "
        f"it began; "
        + (
            f"the MLflow client re-sent it {puts - 1} time(s) after server errors"
            if puts > 1
            else "the server's S3 client retried"
        )
        + "; bytes identical",
    )
