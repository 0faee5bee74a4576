"""Ends and restarts on the local stack: a driver terminated with SIGTERM (as `kubectl delete`
does) leaves its run KILLED or FAILED, not RUNNING; a resume with settings that differ from the
run's logged params is refused with one `error:` line and changes nothing; MLflow keeps working
after PostgreSQL restarts. Each test first shows that its fault hit."""

from __future__ import annotations

import os
import signal
import time

import pytest
import stackjobs as sj
from stackjobs import EPOCHS, TRAIN_ARGS

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_driver_terminated_leaves_the_run_ended(stack, client, experiment_id, jobs, fault_report):
    run_id = client.create_run(experiment_id, run_name="fault-driver-sigterm").info.run_id
    sub = sj.submit_train(stack, run_id, TRAIN_ARGS, EPOCHS, tag="driver-sigterm", env={"SHAPEBIAS_EPOCH_SLEEP": "8"})
    sj.wait_until(
        lambda: sj.steps(client, run_id, "train_loss") or sj.status(jobs, sub) in sj.TERMINAL,
        sj.JOB_TIMEOUT,
        "the first epoch's metrics",
    )
    sj.assert_running(jobs, sub)
    assert client.get_run(run_id).info.status == "RUNNING"
    info = sj.wait_until(lambda: (i := jobs.get_job_info(sub)).driver_info and i, 60, "the driver's pid")
    pid = int(info.driver_info.pid)
    os.kill(pid, signal.SIGTERM)
    # The fault hit: the driver exits and the job ends.
    sj.wait_until(lambda: sj.proc_gone(pid), 120, "the terminated driver to exit")
    st = sj.wait_job(jobs, sub)
    assert st in ("FAILED", "STOPPED"), f"job {sub} ended {st}:\n{sj.tail(sj.logs(jobs, sub))}"
    status = client.get_run(run_id).info.status
    assert status in ("KILLED", "FAILED"), f"run left {status} after SIGTERM:\n{sj.tail(sj.logs(jobs, sub))}"
    sj.wait_until(lambda: not sj.train_worker_pids(stack, jobs, sub), 120, "the job's workers to exit")
    sj.record(
        fault_report,
        fault="driver terminated (SIGTERM, as kubectl delete does)",
        injected=f"after epoch {len(sj.steps(client, run_id, 'train_loss'))} of {EPOCHS} was logged",
        survived=f"driver exited, job {st}, run {status}",
        job=sub,
    )


def test_resume_with_changed_settings_is_refused(stack, client, jobs, finished_job_run, fault_report):
    before = client.get_run(finished_job_run)
    assert before.info.status == "FINISHED"
    epochs = int(before.data.params.get("epochs", EPOCHS))
    points = {k: len(client.get_metric_history(finished_job_run, k)) for k in before.data.metrics}
    sub = sj.submit_train(stack, finished_job_run, f"{TRAIN_ARGS} --lr 0.5", epochs, tag="resume-changed")
    st = sj.wait_job(jobs, sub)
    out = sj.logs(jobs, sub)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert st == "FAILED", f"the changed resume ran ({st}):\n{sj.tail(out)}"
    assert len(errors) == 1 and "lr" in errors[0], sj.tail(out)
    assert "Traceback" not in out, sj.tail(out)
    after = client.get_run(finished_job_run)
    assert after.data.params == before.data.params
    assert {k: len(client.get_metric_history(finished_job_run, k)) for k in before.data.metrics} == points
    sj.record(
        fault_report,
        fault="resume of a FINISHED run with --lr 0.5 (logged: another lr)",
        injected="job submitted with the run's id",
        survived=f"job FAILED with `{errors[0]}`; params and metrics unchanged",
        job=sub,
    )


def test_mlflow_keeps_working_after_postgres_restarts(stack, client, experiment_id, fault_report):
    run_id = client.create_run(experiment_id, run_name="fault-postgres-restart").info.run_id
    client.log_metric(run_id, "before", 1.0)
    server = stack.pid("mlflow")
    get_run = f"{stack.tracking_uri}/api/2.0/mlflow/runs/get?run_id={run_id}"
    admin = stack.admin_auth()
    t0 = time.monotonic()
    stack.stop("postgres")
    # The fault hit: the server answers, but a request that needs the database fails.
    failed = sj.raw_status(get_run, timeout=60, auth=admin)
    assert failed not in (0, 200), failed
    stack.start("postgres")
    outage = time.monotonic() - t0
    t1 = time.monotonic()
    sj.wait_until(lambda: sj.raw_status(get_run, timeout=60, auth=admin) == 200, 120, "MLflow to answer again")
    recovered = time.monotonic() - t1
    assert stack.pid("mlflow") == server, "the tracking server was restarted"
    client.log_metric(run_id, "after", 2.0)
    client.set_terminated(run_id)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"before": 1.0, "after": 2.0}
    sj.record(
        fault_report,
        fault="PostgreSQL stopped and started under a running MLflow server",
        injected=f"database down {outage:.0f} s; a run lookup failed with HTTP {failed}",
        survived=f"same MLflow server answered {recovered:.0f} s after the database was back; "
        "run written before and after",
        job="-",
    )
