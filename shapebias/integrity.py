"""Run integrity: a tracking store checked before MLflow touches it, resumes that cannot corrupt a
run, runs that end KILLED when their process is terminated, and the owner record that tells
``reproduce`` whether a RUNNING run still has a live process (docs/run-integrity.md).

MLflow glue, like :mod:`shapebias.tracking` (which calls these helpers from ``tracked_run``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path

from shapebias.errors import ConfigError

HOST_TAG = "shapebias.host"
PID_TAG = "shapebias.pid"
HEARTBEAT_TAG = "shapebias.heartbeat"  # unix seconds, renewed every heartbeat_interval()
TERMINATED_TAG = "shapebias.terminated"  # the signal that ended the run (KILLED)
RUN_ID_RE = re.compile(r"[0-9a-f]{32}")
CONNECT_TIMEOUT_S = 3.0
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
ACCEPTED_URIS = (
    "a folder, file:///PATH, sqlite:///PATH, http(s)://HOST[:PORT], "
    "postgresql://USER@HOST[:PORT]/DB, mysql://..., mssql://..., databricks"
)


# ------------------------------------------------------------------------------- tracking store


def _local_parent(path: str, uri: str) -> None:
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"tracking URI {uri!r}: folder {str(parent)!r} does not exist; accepted: {ACCEPTED_URIS}")


def _reachable(uri: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"tracking URI {uri!r}: {host}:{port} is unreachable ({exc.strerror or exc}); "
            "start the tracking server or fix the address"
        ) from None


def check_tracking_uri(uri: str) -> str:
    """ConfigError unless ``uri`` is a tracking store MLflow can open; servers must answer a TCP
    connection within :data:`CONNECT_TIMEOUT_S`. Nothing is created."""
    text = str(uri).strip()
    parsed = urllib.parse.urlparse(text)
    scheme = parsed.scheme.lower().split("+")[0]
    if not text:
        raise ConfigError(f"tracking URI is empty; accepted: {ACCEPTED_URIS}")
    if scheme in ("", "file") or re.fullmatch(r"[a-z]", scheme):  # a path (C:\... counts as one)
        _local_parent(parsed.path if scheme == "file" else text, text)
    elif scheme == "sqlite":
        if parsed.netloc or not parsed.path.strip("/"):
            raise ConfigError(
                f"tracking URI {text!r} is not accepted; a SQLite store is sqlite:///PATH (three slashes)"
            )
        _local_parent(parsed.path[1:] if parsed.path.startswith("//") else parsed.path, text)
    elif scheme in ("http", "https", *DB_PORTS):
        try:
            host, port = parsed.hostname, parsed.port
        except ValueError:  # a port that is not a number
            host = port = None
        if not host:
            raise ConfigError(f"tracking URI {text!r} has no valid host[:port]; accepted: {ACCEPTED_URIS}")
        default = {"http": 80, "https": 443, **DB_PORTS}[scheme]
        _reachable(text, host, port or default)
    elif scheme != "databricks":
        raise ConfigError(f"tracking URI {text!r}: scheme {parsed.scheme!r} is not accepted; accepted: {ACCEPTED_URIS}")
    return text


def sqlite_path(uri: str) -> Path | None:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme.lower() != "sqlite" or parsed.netloc:
        return None
    return Path(parsed.path[1:] if parsed.path.startswith("//") else parsed.path)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` beside a SQLite store (nothing for other stores).

    MLflow creates the schema of a fresh SQLite store on first use; processes that do it at the
    same moment collide in the migration. Holding this lock around first use serialises them.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_opened: set[str] = set()


def open_store(uri: str) -> str:
    """Check ``uri`` (nothing is created for a bad one), then open the store once per process:
    a fresh SQLite store's schema is created under :func:`store_lock`."""
    if uri in _opened:
        return uri
    check_tracking_uri(uri)
    from mlflow.tracking._tracking_service.utils import _get_store

    with store_lock(uri):
        _get_store(uri)
    _opened.add(uri)
    return uri


# ------------------------------------------------------------------------------ owner, liveness


def heartbeat_interval() -> float:
    return float(os.environ.get("SHAPEBIAS_HEARTBEAT_S", "30") or 30)


def owner_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: str(int(time.time()))}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live(status: str, tags: Mapping[str, str], now: float | None = None) -> bool:
    """Whether a RUNNING run still has a process: a heartbeat younger than four intervals and,
    on this host, its pid alive. A RUNNING run without an owner record has no live process."""
    if status != "RUNNING" or HEARTBEAT_TAG not in tags:
        return False
    try:
        age = (time.time() if now is None else now) - float(tags[HEARTBEAT_TAG])
        pid = int(tags.get(PID_TAG, "0"))
    except ValueError:
        return False
    if not math.isfinite(age) or age > 4 * heartbeat_interval():
        return False
    return tags.get(HOST_TAG) != socket.gethostname() or _pid_alive(pid)


def describe_owner(tags: Mapping[str, str]) -> str:
    try:
        age = f", heartbeat {time.time() - float(tags[HEARTBEAT_TAG]):.0f} s ago"
    except (KeyError, ValueError):
        age = ""
    return f"pid {tags.get(PID_TAG, '?')} on host {tags.get(HOST_TAG, '?')}{age}"


@contextlib.contextmanager
def heartbeat(tracking_uri: str, run_id: str) -> Iterator[None]:
    """Renew the run's heartbeat tag from a daemon thread while the block runs."""
    from mlflow.tracking import MlflowClient

    stop = threading.Event()
    client = MlflowClient(tracking_uri)

    def beat() -> None:
        while not stop.wait(heartbeat_interval()):
            with contextlib.suppress(Exception):  # a store hiccup must not end the job
                client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))

    thread = threading.Thread(target=beat, name="shapebias-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


# ------------------------------------------------------------------------------------ resuming


def _norm(value) -> str:
    text = str(value).strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    try:
        return repr(float(text))
    except ValueError:
        return text.lower() if text.lower() in ("true", "false") else text


def check_resume(
    client, run_id: str, task: str, task_tag: str, params: Mapping[str, str], override_prefix: str = ""
) -> None:
    """Refuse, changing nothing, to resume a run that does not exist, belongs to another task,
    already finished, still has a live process, or was started with other settings.

    A run without ``task_tag`` is one that ``mlflow run`` created for this job: nothing to compare.
    A tag ``<override_prefix><name>`` holds the value a job ran with where ``mlflow run`` had
    logged the param first with another one; it counts over the param.
    """
    from mlflow.exceptions import MlflowException

    if not RUN_ID_RE.fullmatch(run_id):
        raise ConfigError(f"run id {run_id!r} is malformed; expected the 32-character hex id of an MLflow run")
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(
            f"run id {run_id!r} does not exist in {client.tracking_uri}; "
            "pass the id of an existing run, or leave --run-id out to start a new one"
        ) from None
    tags, status = run.data.tags, run.info.status
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(f"run {run_id} is deleted; restore it in the MLflow UI or start a new run")
    if task_tag not in tags:
        return
    if tags[task_tag] != task:
        raise ConfigError(f"run {run_id} is a {tags[task_tag]} run, not {task}; resume it with its own job")
    logged = dict(run.data.params)
    if override_prefix:
        logged.update({k[len(override_prefix) :]: v for k, v in tags.items() if k.startswith(override_prefix)})
    changed = [k for k in sorted(params) if k in logged and _norm(logged[k]) != _norm(params[k])]
    if changed:
        diff = ", ".join(f"{k}={params[k]!r} (logged {logged[k]!r})" for k in changed)
        raise ConfigError(
            f"run {run_id} was started with other settings: {diff}; "
            "resume with the logged settings, or start a new run for new ones"
        )
    if status == "FINISHED":
        raise ConfigError(f"run {run_id} already finished; start a new run (leave out --run-id and MLFLOW_RUN_ID)")
    if is_live(status, tags):
        raise ConfigError(
            f"run {run_id} is still running ({describe_owner(tags)}); "
            "wait for it to end, or stop that process before resuming"
        )


# --------------------------------------------------------------------------------- termination


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM/SIGHUP (``kubectl delete``, a scheduler, a closed terminal).

    A KeyboardInterrupt because Ray's blocking calls (``ray.get`` inside ``trainer.fit()``) pass
    on only KeyboardInterrupt and SystemExit raised by a signal handler; any other exception is
    printed and dropped. Ray re-raises a plain KeyboardInterrupt: :func:`terminated_by` still
    names the signal.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


TERM_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_state: dict = {"handler": None, "signum": None}


def terminated_by() -> int | None:
    """The signal that :func:`terminate_on_signals` caught in this process, if any."""
    return _state["signum"]


def reinstall_signal_handlers() -> None:
    """Put :func:`terminate_on_signals`' handler back after ``ray.init``, which installs its own
    (``sys.exit``, and a fatal-signal handler that aborts): without this, SIGTERM would end the
    driver without marking its run."""
    if _state["handler"] is not None and threading.current_thread() is threading.main_thread():
        for signum in TERM_SIGNALS:
            signal.signal(signum, _state["handler"])


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` in the main thread while the block runs,
    so that the run's cleanup (marking it KILLED) happens; :func:`terminated_by` remembers the
    signal even if a library wraps the exception. Further signals during the cleanup are
    ignored; the previous handlers come back at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _state["signum"] = signum
        for s in TERM_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERM_SIGNALS}
    _state["handler"] = handler
    try:
        yield
    finally:
        _state["handler"] = None
        for s, old in previous.items():
            signal.signal(s, old)
