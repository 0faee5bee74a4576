"""The local platform stack, started once for the whole `tests/stack` session.

The stack runs in a fresh folder under /tmp with free ports, so a developer's own stack (in
`.stack/`, on the default ports) is left alone. Tests that need PostgreSQL skip, with the reason,
where it is missing and cannot be installed (no root, no apt-get).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_ROOT / "platform" / "local" / "stack.py"

EXPERIMENT = "stack-faults"


def load_stack_module():
    """platform/ is not a package (no __init__.py): load the script by path."""
    name = "shapebias_local_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, STACK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _skip_reason(mod) -> str | None:
    if not sys.platform.startswith("linux"):
        return "the local stack runs on Linux only"
    try:
        mod.postgres_bindir(install=os.environ.get("SHAPEBIAS_STACK_NO_INSTALL") != "1")
    except mod.StackError as exc:
        return f"PostgreSQL is not available: {exc}"
    return None


@pytest.fixture(scope="session")
def stack_mod():
    return load_stack_module()


@pytest.fixture(scope="session")
def stack(stack_mod):
    """A running stack (started here, stopped at the end with a check that nothing is left)."""
    reason = _skip_reason(stack_mod)
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="sbstack-", dir="/tmp"))  # short: Ray's socket paths
    st = stack_mod.Stack(root, auto_ports=True)
    env = pytest.MonkeyPatch()
    try:
        t0 = time.monotonic()
        st.started_at = time.time()
        st.up()
        st.timings = {"first up": time.monotonic() - t0}
        for key, value in st.client_env().items():  # this process acts as a client (the jobs' account)
            env.setenv(key, value)
        env.delenv("RAY_ADDRESS", raising=False)
        yield st
    finally:
        env.undo()
        left = st.down() if st.config_file.exists() else []
        if left:
            pytest.fail(f"processes left behind by the stack: {left}")
        if os.environ.get("SHAPEBIAS_STACK_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"\nstack folder kept: {root}")


@pytest.fixture(scope="session")
def client(stack):
    from mlflow import MlflowClient

    return MlflowClient(stack.tracking_uri)


@pytest.fixture(scope="session")
def experiment_id(client):
    exp = client.get_experiment_by_name(EXPERIMENT)
    return exp.experiment_id if exp else client.create_experiment(EXPERIMENT)


@pytest.fixture(scope="session")
def jobs(stack):
    return stack.job_client()


@pytest.fixture(scope="session")
def fault_report():
    """Rows for the README's fault table: printed at the end, and written to
    $SHAPEBIAS_STACK_REPORT (JSON lines) when that is set."""
    import json

    rows: list[dict] = []
    yield rows
    out = os.environ.get("SHAPEBIAS_STACK_REPORT")
    if out and rows:
        with open(out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="session")
def finished_job_run(stack, client, experiment_id, jobs):
    """A FINISHED train_resnet run made through the Ray Jobs API (the fault tests leave several;
    run one tiny job when a test runs without them)."""
    import stackjobs as sj

    runs = client.search_runs(
        [experiment_id], "tags.`shapebias.task` = 'train_resnet' and attributes.status = 'FINISHED'"
    )
    if runs:
        return runs[0].info.run_id
    run_id = client.create_run(experiment_id, run_name="security-probe").info.run_id
    sub = sj.submit_train(stack, run_id, sj.TRAIN_ARGS, 1, tag="security")
    st = sj.wait_job(jobs, sub)
    assert st == "SUCCEEDED", sj.tail(sj.logs(jobs, sub))
    return run_id
