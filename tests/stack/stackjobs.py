"""Helpers for the stack tests: submit the ResNet job through the Ray Jobs API, watch it, find
its processes, read what it left in MLflow and S3."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

# Tiny training jobs: 2 classes x 5 images of 16 px, 3 epochs.
EPOCHS = 3
TRAIN_ARGS = (
    "--sparsity topk --topk 0.2 --dataset synthetic --synthetic-classes 2 --synthetic-train-per-class 5 "
    "--synthetic-test-per-class 5 --image-size 16 --batch-size 8 --num-workers 1 --stem-stride 2"
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
JOB_TIMEOUT = float(os.environ.get("SHAPEBIAS_STACK_JOB_TIMEOUT", "900"))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def train_entrypoint(run_id: str, train_args: str, epochs: int) -> str:
    from shapebias_local_stack import CHECKPOINTS_URI

    # SHAPEBIAS_STACK_TRAIN_ENTRY runs the suite against another build of the job.
    entry = os.environ.get("SHAPEBIAS_STACK_TRAIN_ENTRY", "python -m training.train_resnet")
    return f"{entry} --run-id {run_id} --epochs {epochs} {train_args} --storage-path {CHECKPOINTS_URI}"


def submit_train(
    stack, run_id: str, train_args: str, epochs: int, env: Mapping[str, str] | None = None, tag: str = "job"
) -> str:
    return stack.submit(
        train_entrypoint(run_id, train_args, epochs),
        submission_id=f"sb-{tag}-{uuid.uuid4().hex[:8]}",
        extra_env=env,
        metadata={"shapebias.test": tag, "mlflow_run_id": run_id},
    )


def status(jobs, sub: str) -> str:
    return str(jobs.get_job_status(sub)).split(".")[-1]


def logs(jobs, sub: str) -> str:
    try:
        return jobs.get_job_logs(sub)
    except Exception as exc:  # the logs are for messages only
        return f"(logs unavailable: {exc})"


def wait_job(jobs, sub: str, timeout: float = JOB_TIMEOUT) -> str:
    return wait_until(lambda: (s := status(jobs, sub)) in TERMINAL and s, timeout, f"job {sub} to end", 2.0)


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def assert_running(jobs, sub: str) -> None:
    s = status(jobs, sub)
    assert s not in TERMINAL, f"job {sub} already {s} before the fault was injected:\n{tail(logs(jobs, sub))}"


def checkpoints(stack, run_id: str) -> list[str]:
    """Ray Train checkpoint folders of a run in the S3 bucket."""
    from shapebias_local_stack import BUCKET, CHECKPOINTS_URI

    prefix = CHECKPOINTS_URI.split(f"s3://{BUCKET}/", 1)[1] + f"/{run_id}/"
    s3 = stack.s3_client()
    found = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(prefix) :]
            if rest.startswith("checkpoint_") and "/" in rest:
                found.add(rest.split("/", 1)[0])
    return sorted(found)


def checkpoint_recorded(stack, run_id: str) -> bool:
    """Ray Train has recorded a checkpoint of the run: its controller wrote the snapshot that a
    restarted trainer reads (``checkpoint_manager_snapshot.json`` under the run's folder)."""
    from shapebias_local_stack import BUCKET, CHECKPOINTS_URI

    key = CHECKPOINTS_URI.split(f"s3://{BUCKET}/", 1)[1] + f"/{run_id}/checkpoint_manager_snapshot.json"
    return bool(s3_keys(stack, key))


def s3_keys(stack, prefix: str) -> list[str]:
    from shapebias_local_stack import BUCKET

    s3 = stack.s3_client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def train_worker_pids(stack, jobs, sub: str) -> list[int]:
    """Pids of the live Ray Train worker actors of a submitted job."""
    from ray.util.state import list_actors

    job_id = jobs.get_job_info(sub).job_id
    actors = list_actors(
        address=stack.jobs_address,
        filters=[("state", "=", "ALIVE")],
        detail=True,
        limit=1000,
        raise_on_missing_output=False,
    )
    return [int(a.pid) for a in actors if "RayTrainWorker" in (a.class_name or "") and a.job_id == job_id and a.pid]


def s3_keys_direct(stack, prefix: str) -> list[str]:
    """Keys under ``prefix``, asked of the S3 server itself (behind the endpoint that a fault stops)."""
    from shapebias_local_stack import BUCKET

    s3 = stack.s3_client("s3-store")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def raw_status(url: str, timeout: float = 10, auth: tuple[str, str] | None = None) -> int:
    """HTTP status of one GET, with no retry: 0 when the connection fails."""
    import base64
    import urllib.error
    import urllib.request

    headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def proc_gone(pid: int) -> bool:
    from shapebias_local_stack import proc_start_time

    return proc_start_time(pid) is None


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def history(client, run_id: str, key: str):
    return client.get_metric_history(run_id, key)


def record(report: list[dict[str, Any]], **row: Any) -> None:
    report.append(row)
    print("\nFAULT " + json.dumps(row))
