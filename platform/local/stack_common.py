"""Names, ports and process helpers shared by the local stack's modules."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent

DEFAULT_PORTS = {  # outside Ray's default worker port range (10002-19999)
    "postgres": 25432,
    "s3-store": 29001,
    "s3": 29000,
    "mlflow": 25000,
    "ray-gcs": 26379,
    "ray-dashboard": 28265,
    "ray-client": 20001,
    "ray-head-agent": 22365,
}
BUCKET = "shapebias"
ARTIFACTS_URI = f"s3://{BUCKET}/mlartifacts"
CHECKPOINTS_URI = f"s3://{BUCKET}/ray-results"
RUNNER_USER = "shapebias"  # the non-admin MLflow account that jobs use
ADMIN_USER = "admin"
SECRET_KEYS = (
    "PG_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_RUNNER_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "RAY_AUTH_TOKEN",
)
MARKER = "SHAPEBIAS_STACK"
# Variables from the caller's shell that never reach a service (each gets its own, explicitly).
SCRUBBED_PREFIXES = ("AWS_", "MLFLOW_", "PG", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH", MARKER)


class StackError(RuntimeError):
    """A service could not be set up, started or checked; the message says which and why."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


# ---------------------------------------------------------------------------------------------
# ports


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# processes


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (guards against pid reuse); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def marked_pids(root: Path) -> list[int]:
    """Every live process that carries this stack's marker in its environment."""
    needle = f"{MARKER}={root}".encode() + b"\0"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if needle in env and proc_start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def send_signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_gone(pids: Iterable[int], timeout: float, reap: Callable[[], None] = lambda: None) -> list[int]:
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        reap()
        left = [p for p in left if proc_start_time(p) is not None]
        if left:
            time.sleep(0.2)
    return left


def wait_for(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) if log.exists() else ""
            raise StackError(f"{what} exited during start-up; last lines of {log}:\n{tail}")
        time.sleep(0.5)
    raise StackError(f"{what} did not become healthy within {timeout:.0f} s; see {log}")
