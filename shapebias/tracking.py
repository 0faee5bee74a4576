"""The MLflow run schema, and the helpers every job uses to follow it.

Schema (the contract that the compare step, the MLflow UI and users' notebooks read):

* experiment: the task's own (:func:`default_experiment`, ``shapebias-<task>``) unless one is
  chosen (``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID``, a job's ``--experiment``, or
  ``mlflow run --experiment-name``, which creates the run before the job starts);
* tag ``shapebias.task``: one of :data:`TASKS`; ``mlflow.note.content``: what ran on what;
* params: the whole configuration, flat (see :func:`flatten`), a setting left empty not logged;
* dataset inputs (:func:`log_dataset`): name, digest = the data fingerprint, context;
* provenance tags: ``shapebias.git_commit``, ``shapebias.data_fingerprint``,
  ``shapebias.versions.<package>``, ``shapebias.device``;
* tag ``shapebias.param.<name>``: the value a param had in the run where MLflow had already
  logged another (``mlflow run`` logs an empty MLproject parameter as ``''``);
* protocol tags (:data:`shapebias.protocols.TAGS`): ``shapebias.protocol`` (the published
  experiment a run claims, or ``none``), ``shapebias.settings_fingerprint``,
  ``shapebias.on_protocol``, ``shapebias.protocol_check``;
* metrics: fractions in [0, 1] (``test_acc``, ``stylized_acc``, ``shape_bias``) and ``fid``;
  per-epoch curves under the same names with ``step``.

The whole schema is described in ``docs/run-schema.md``.

Ray workers do not inherit the driver's environment: the driver hands them a :class:`RunRef`
(tracking URI + run id) and rank 0 logs through :class:`MetricLogger`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shapebias import integrity, tasks
from shapebias.errors import ShapebiasError
from shapebias.settings import REPO_ROOT

if TYPE_CHECKING:  # mlflow is imported where it is used: the jobs' --help must not wait for it
    import mlflow

TASK_TAG = "shapebias.task"
TASKS = tasks.TRACKED  # the tasks that log an MLflow run (shapebias/tasks.py)
ERROR_TAG = "shapebias.error"
WEIGHTS_TAG = "shapebias.weights"  # "pretrained" or "random": random-weight runs never pass as real
# A param that was already logged with another value (``mlflow run`` logs MLproject's parameters
# first, an empty one as ''; MLflow never changes a param) gets its value as run in this tag.
PARAM_TAG_PREFIX = "shapebias.param."
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
PACKAGES = ("torch", "torchvision", "mlflow", "ray", "numpy", "shapebias")

# Environment variables forwarded to Ray workers (credentials travel only this way, never as params).
# What a job passes to its Ray workers and to jobs it submits. Ray writes a runtime environment
# into its (world-readable) agent logs, so no secret is forwarded: workers of a local Ray instance
# inherit the driver's environment anyway, Ray pods in the cluster read their credentials from
# Secrets, and the local stack gives jobs credential files (~/.mlflow/credentials, ~/.aws/).
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "SHAPEBIAS_SHARED_DIR",
    "SHAPEBIAS_CUE_CONFLICT_DIR",
    "SHAPEBIAS_FEW_SHOT_DIR",
)
SECRET_WORDS = ("password", "secret", "token", "access_key", "credential")


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested configuration into MLflow params (``a.b=...``); lists become CSV."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = "" if value is None else str(value)
    for name in out:
        if any(word in name.lower() for word in SECRET_WORDS):
            raise ValueError(f"refusing to log parameter {name!r}: credentials travel only through the environment")
    return out


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SHAPEBIAS_GIT_COMMIT", "unknown")


def package_versions() -> dict[str, str]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "absent"
    versions["python"] = sys.version.split()[0]
    return versions


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu x{os.cpu_count()}"


def fingerprint_files(paths: list[Path] | list[str], extra: str = "") -> str:
    """A short hash of file names and sizes (cheap; content hashing is for downloads)."""
    h = hashlib.sha256(extra.encode())
    for p in sorted(map(str, paths)):
        h.update(p.encode())
        with contextlib.suppress(OSError):
            h.update(str(os.path.getsize(p)).encode())
    return h.hexdigest()[:16]


def provenance_tags(data_fingerprint: str | None = None) -> dict[str, str]:
    tags = {"shapebias.git_commit": git_commit(), "shapebias.device": device_description()}
    tags.update({f"shapebias.versions.{k}": v for k, v in package_versions().items()})
    if data_fingerprint:
        tags["shapebias.data_fingerprint"] = data_fingerprint
    return tags


def default_experiment(task: str) -> str:
    """The experiment a task's runs go to unless another is chosen: ``shapebias-<task>``."""
    return f"shapebias-{task}"


def _choose_experiment(task: str, experiment: str | None) -> None:
    """Before a new run: the experiment asked for, else the environment's, else the task's own."""
    import mlflow

    if experiment:
        mlflow.set_experiment(experiment)
    elif not (os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID")):
        mlflow.set_experiment(default_experiment(task))


def describe_run(text: str) -> None:
    """The active run's description (the MLflow UI's "Description")."""
    import mlflow

    mlflow.set_tag(NOTE_TAG, text)


def log_dataset(frame, *, name: str, digest: str, context: str, source: str | None = None) -> None:
    """A dataset input of the active run: one row per sample (``pandas.DataFrame``), named, with the
    data fingerprint as its digest and ``context`` ``training`` or ``evaluation``."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    with warnings.catch_warnings():  # a local folder matches MLflow's two local resolvers; it picks one, rightly
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        # from_pandas defaults source to None (the run's code location) but annotates it without None.
        dataset = from_pandas(frame, source=source, name=name, digest=digest)  # type: ignore[arg-type]
    mlflow.log_input(dataset, context=context)


@dataclasses.dataclass(frozen=True)
class RunRef:
    """What a Ray worker needs to log to the driver's run (no credentials in here)."""

    tracking_uri: str
    run_id: str
    experiment_id: str


def current_ref() -> RunRef:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run")
    return RunRef(mlflow.get_tracking_uri(), run.info.run_id, run.info.experiment_id)


def worker_env() -> dict[str, str]:
    """Environment variables to hand to Ray workers through ``runtime_env``."""
    import mlflow

    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    return env


class MetricLogger:
    """Logs metrics to one run from anywhere (a Ray worker), at most one point per (key, step).

    A resumed job re-runs the epoch that was interrupted; points already logged for a step are
    not logged again, so every curve keeps exactly one point per epoch.

    With ``background=True`` the client is made and every :meth:`log` runs in a thread of its own,
    one after the other, so that the caller (a training loop) does not wait for the tracking
    store; :meth:`flush` waits for what is queued and raises the first error of a queued log.
    """

    def __init__(self, ref: RunRef, background: bool = False) -> None:
        import threading

        self.ref = ref
        self._client: mlflow.MlflowClient | None = None
        self._client_lock = threading.Lock()
        self._seen: dict[str, set[int]] = {}
        self._pool = None
        self._pending: list = []
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metric-logger")
            self._pending.append(self._pool.submit(lambda: self.client))  # connect while the caller works

    @property
    def client(self) -> mlflow.MlflowClient:
        from mlflow.tracking import MlflowClient

        with self._client_lock:
            if self._client is None:
                self._client = MlflowClient(self.ref.tracking_uri)
            return self._client

    def _steps(self, key: str) -> set[int]:
        if key not in self._seen:
            self._seen[key] = {m.step for m in self.client.get_metric_history(self.ref.run_id, key)}
        return self._seen[key]

    def _log(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items() if step not in self._steps(key)]
        if batch:
            self.client.log_batch(self.ref.run_id, metrics=batch)
            for m in batch:
                self._seen[m.key].add(step)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._pool is None:
            self._log(metrics, step)
        else:
            self._pending.append(self._pool.submit(self._log, dict(metrics), step))

    def flush(self) -> None:
        """Wait until every queued :meth:`log` is done; raise the first error of one."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """:meth:`flush`, then end the logging thread."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, ShapebiasError) else str(exc)


@contextlib.contextmanager
def tracked_run(
    task: str,
    params: Mapping[str, Any],
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    data_fingerprint: str | None = None,
    experiment: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) the run of one job and keep the schema.

    A new top-level run goes to ``experiment``, else to the environment's experiment, else to the
    task's own (:func:`default_experiment`). Under ``mlflow run`` the run that MLflow created
    (``MLFLOW_RUN_ID``) is resumed where it is (``mlflow run --experiment-name`` chose its
    experiment). A setting left empty (an unset path) is not logged as a param. The tracking
    URI is checked and a resume that could corrupt a run is refused before anything is written
    (:mod:`shapebias.integrity`). Params, provenance and the owner record (host, pid, heartbeat)
    are logged first, so that a run that fails on bad input still shows what it was given. An
    exception marks the run FAILED (message in tag ``shapebias.error``); SIGTERM, SIGHUP and
    Ctrl-C mark it KILLED (tag ``shapebias.terminated``). Nothing already logged is lost.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    uri = integrity.open_store(mlflow.get_tracking_uri())
    flat = flatten(params)
    resume_id = run_id or (None if nested else os.environ.get("MLFLOW_RUN_ID"))
    if resume_id:
        integrity.check_resume(MlflowClient(uri), resume_id, task, TASK_TAG, flat, override_prefix=PARAM_TAG_PREFIX)
    if not resume_id and not nested:
        _choose_experiment(task, experiment)
    owner = {} if nested else integrity.owner_tags()
    with contextlib.ExitStack() as stack:
        if not nested:
            stack.enter_context(integrity.terminate_on_signals())
        run = stack.enter_context(mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested))
        try:
            mlflow.set_tags({TASK_TAG: task, **provenance_tags(data_fingerprint), **owner, **(tags or {})})
            existing = run.data.params
            fresh = {k: v for k, v in flat.items() if k not in existing and v != ""}
            if fresh:
                mlflow.log_params(fresh)
            overridden = {f"{PARAM_TAG_PREFIX}{k}": v for k, v in flat.items() if k in existing and existing[k] != v}
            if overridden:
                mlflow.set_tags(overridden)
            if not nested:
                stack.enter_context(integrity.heartbeat(uri, run.info.run_id))
            yield run
        except BaseException as exc:
            _end_failed(exc)
            raise


def _end_failed(exc: BaseException) -> None:
    """Mark the active run KILLED (terminated by a signal or Ctrl-C) or FAILED, with the reason."""
    import mlflow
    from mlflow.entities import RunStatus

    signum = integrity.terminated_by()
    killed = signum is not None or isinstance(exc, KeyboardInterrupt)
    reason = str(integrity.Terminated(signum)) if signum is not None else "interrupted (KeyboardInterrupt)"
    with contextlib.suppress(Exception):
        if killed:
            mlflow.set_tags({ERROR_TAG: reason, integrity.TERMINATED_TAG: reason})
        else:
            mlflow.set_tag(ERROR_TAG, _describe(exc)[:4000])
    mlflow.end_run(RunStatus.to_string(RunStatus.KILLED if killed else RunStatus.FAILED))


def ui_command() -> str:
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def cli_main(fn: Callable[[list[str] | None], Any]) -> Callable[[list[str] | None], int]:
    """Wrap an entry point: bad input becomes ``error: <one line>`` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            result = fn(argv)
        except ShapebiasError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except BaseException as exc:
            signum = integrity.terminated_by()
            if signum is not None:
                print(f"{integrity.Terminated(signum)}: the run is marked KILLED", file=sys.stderr)
                return 128 + signum
            if isinstance(exc, KeyboardInterrupt):
                print("interrupted", file=sys.stderr)
                return 130
            if not isinstance(exc, Exception):
                raise
            traceback.print_exc()
            return 1
        return int(result or 0)

    return wrapper
