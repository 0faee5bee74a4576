#!/usr/bin/env python
"""The local platform stack: the cluster path of shapebias on one machine, on loopback.

    PostgreSQL  (Debian's package; installed with apt-get if missing)  MLflow's backend + users
    S3          moto's server behind a loopback TCP front              artifacts, Ray checkpoints
    MLflow      tracking server, basic auth, artifacts proxied to s3://shapebias/mlartifacts
    Ray         a head node (dashboard + Jobs API) and one more node process

usage:
    stack.py up        start what is not running, wait until every service is healthy
    stack.py down      stop everything (no process of the stack is left behind)
    stack.py status    what runs, with health checks (exit 0 only if all is healthy)
    stack.py env       `export` lines for a shell: tracking URI, credentials, Jobs API address
    stack.py submit -- python -m training.train_resnet ...   submit through the Ray Jobs API
    stack.py stop|start|restart SERVICE                       (fault injection)

Everything lives under one folder (``$SHAPEBIAS_STACK_DIR``, default ``.stack/`` in the
checkout): data, generated credentials (``secrets.env``, mode 600), and all logs (``logs/``).
Every process of the stack carries ``SHAPEBIAS_STACK=<folder>`` in its environment; ``down``
stops exactly those processes (it never runs ``ray stop``, which would stop every Ray on the
machine). Credentials reach jobs only through the job's ``runtime_env`` environment variables,
never through command lines, parameters or tags.

This is a script, not a package (``platform/`` has no ``__init__.py``); the tests load it by
path.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent

# Start order; ``down`` goes the other way.
SERVICES = ("postgres", "s3-store", "s3", "mlflow", "ray-head", "ray-worker")
DEFAULT_PORTS = {  # outside Ray's default worker port range (10002-19999)
    "postgres": 25432,
    "s3-store": 29001,
    "s3": 29000,
    "mlflow": 25000,
    "ray-gcs": 26379,
    "ray-dashboard": 28265,
    "ray-client": 20001,
    "ray-head-agent": 22365,
    "ray-worker-agent": 22366,
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
_SCRUBBED_PREFIXES = ("AWS_", "MLFLOW_", "PG", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH", MARKER)


class StackError(RuntimeError):
    """A service could not be set up, started or checked; the message says which and why."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int, timeout: float = 1.0) -> bool:
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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: Iterable[int], timeout: float, reap: Callable[[], None] = lambda: None) -> list[int]:
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        reap()
        left = [p for p in left if proc_start_time(p) is not None]
        if left:
            time.sleep(0.2)
    return left


def _wait_for(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) if log.exists() else ""
            raise StackError(f"{what} exited during start-up; last lines of {log}:\n{tail}")
        time.sleep(0.5)
    raise StackError(f"{what} did not become healthy within {timeout:.0f} s; see {log}")


# ---------------------------------------------------------------------------------------------
# PostgreSQL binaries


def postgres_bindir(install: bool = True) -> Path:
    """The folder with Debian's PostgreSQL server binaries; installs the package if missing."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for bindir in candidates:
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            return bindir
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and (Path(pg_ctl).resolve().parent / "postgres").exists():
        return Path(pg_ctl).resolve().parent
    if not install:
        raise StackError("PostgreSQL server binaries not found (Debian package `postgresql`)")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            "PostgreSQL server binaries not found and cannot be installed here "
            "(needs root and apt-get): run `sudo apt-get install -y postgresql`"
        )
    print("installing PostgreSQL (apt-get install -y postgresql) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise StackError(f"{shlex.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return postgres_bindir(install=False)


# ---------------------------------------------------------------------------------------------
# the stack


class Stack:
    """One local stack, rooted at a folder. All methods are safe to call repeatedly."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, quiet: bool = False,
                 auto_ports: bool | None = None) -> None:
        root = root or os.environ.get("SHAPEBIAS_STACK_DIR") or REPO_ROOT / ".stack"
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.quiet = quiet
        if auto_ports is None:
            auto_ports = os.environ.get("SHAPEBIAS_STACK_PORTS", "").lower() == "auto"
        self.auto_ports = auto_ports  # free ephemeral ports instead of the defaults (tests)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- configuration -------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.env"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def init(self) -> None:
        """Create the folder, choose ports and generate credentials (once)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # the postgres account must be able to reach pg/
        self.logs.mkdir(exist_ok=True)
        if not self.config_file.exists():
            ports: dict[str, int] = {}
            for name, default in DEFAULT_PORTS.items():
                port = default if not self.auto_ports and _port_free(default) else _free_port()
                while port in ports.values():
                    port = _free_port()
                ports[name] = port
            self.config_file.write_text(json.dumps({"ports": ports, "created": _now()}, indent=2) + "\n")
        if self.secrets_file.exists():  # a folder from an older version: add what is missing
            missing = [k for k in SECRET_KEYS if k not in self.secrets]
            if missing:
                with open(self.secrets_file, "a") as f:
                    f.writelines(f"{k}={secrets.token_hex(32)}\n" for k in missing)
        else:
            values = {
                "PG_PASSWORD": secrets.token_urlsafe(18),
                "MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
                "MLFLOW_RUNNER_PASSWORD": secrets.token_urlsafe(18),
                "AWS_ACCESS_KEY_ID": "SB" + secrets.token_hex(9).upper(),
                "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(24),
                "RAY_AUTH_TOKEN": secrets.token_hex(32),
            }
            fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("# generated by platform/local/stack.py; never commit, never log\n")
                f.writelines(f"{k}={v}\n" for k, v in values.items())
        if not self.ray_token_file.exists():
            fd = os.open(self.ray_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.secrets["RAY_AUTH_TOKEN"])

    @property
    def ray_token_file(self) -> Path:
        """Ray's token authentication (dashboard, Jobs API, gRPC): the token, mode 600."""
        return self.root / "ray-auth-token"

    def ray_auth_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.ray_token_file)}

    @property
    def ports(self) -> dict[str, int]:
        return json.loads(self.config_file.read_text())["ports"]

    @property
    def secrets(self) -> dict[str, str]:
        out = {}
        for line in self.secrets_file.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                out[key] = value
        return out

    def secret_values(self) -> list[str]:
        """Every credential of the stack (what must never appear in a run)."""
        return [self.secrets[k] for k in SECRET_KEYS]

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.ports['ray-dashboard']}"

    def job_env(self) -> dict[str, str]:
        """What a job needs to reach the stack: the only way credentials travel to jobs."""
        s = self.secrets
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": RUNNER_USER,
            "MLFLOW_TRACKING_PASSWORD": s["MLFLOW_RUNNER_PASSWORD"],
            "AWS_ACCESS_KEY_ID": s["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.s3_endpoint,  # boto3 and pyarrow (Ray Train storage) read it
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            # Ride out a restart of the tracking server: up to 10 retries with exponential
            # backoff (2, 4, 8, ... s, at most 120 s each) before a call gives up.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",
        }

    def admin_auth(self) -> tuple[str, str]:
        return ADMIN_USER, self.secrets["MLFLOW_ADMIN_PASSWORD"]

    # -- state ---------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"services": {}}

    def _save_state(self, state: Mapping[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def pid(self, name: str) -> int | None:
        """The pid of a running service (None when it is not running)."""
        if not self.state_file.exists():
            return None
        info = self._state()["services"].get(name)
        if not info or proc_start_time(info["pid"]) != info["start"]:
            return None
        return info["pid"]

    def _reap(self) -> None:
        for p in self._children.values():
            p.poll()

    # -- environment ---------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env[MARKER] = str(self.root)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _pg_account(self) -> str | None:
        """postgres refuses to run as root: as root, run it as the `postgres` account."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackError("running as root but there is no `postgres` account (apt-get install postgresql makes it)") from exc
        return "postgres"

    # -- services ------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str], cwd: Path, user: str | None = None) -> int:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as log:
            log.write(f"\n=== {_now()} start {name}: {shlex.join(argv)}\n".encode())
            log.flush()
            kwargs: dict[str, Any] = {}
            if user:
                kwargs.update(user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[])
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                env=dict(env), start_new_session=True, close_fds=True, **kwargs,
            )
        self._children[name] = proc
        start = None
        for _ in range(50):
            start = proc_start_time(proc.pid)
            if start is not None:
                break
            time.sleep(0.02)
        state = self._state()
        state["services"][name] = {"pid": proc.pid, "start": start, "since": _now(), "argv": argv}
        self._save_state(state)
        return proc.pid

    def _argv_and_env(self, name: str) -> tuple[list[str], dict[str, str], Path, str | None]:
        p, s, env = self.ports, self.secrets, self._base_env()
        if name == "postgres":
            pg = self.root / "pg"
            argv = [
                str(postgres_bindir() / "postgres"), "-D", str(pg / "data"), "-p", str(p["postgres"]),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={pg / 'run'}",
                "-c", "max_connections=60", "-c", "shared_buffers=32MB", "-c", "logging_collector=off",
            ]
            return argv, env, pg, self._pg_account()
        if name == "s3-store":
            argv = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(p["s3-store"])]
            return argv, env, self.root, None
        if name == "s3":
            argv = [sys.executable, str(HERE / "tcpfront.py"), "--listen", f"127.0.0.1:{p['s3']}",
                    "--target", f"127.0.0.1:{p['s3-store']}"]
            return argv, env, self.root, None
        if name == "mlflow":
            env.update(
                PGPASSWORD=s["PG_PASSWORD"],  # libpq reads it: no password in the store URIs or argv
                MLFLOW_AUTH_CONFIG_PATH=str(self.root / "mlflow" / "basic_auth.ini"),
                MLFLOW_AUTH_ADMIN_PASSWORD=s["MLFLOW_ADMIN_PASSWORD"],
                MLFLOW_FLASK_SERVER_SECRET_KEY=s["MLFLOW_FLASK_SERVER_SECRET_KEY"],
                AWS_ACCESS_KEY_ID=s["AWS_ACCESS_KEY_ID"],
                AWS_SECRET_ACCESS_KEY=s["AWS_SECRET_ACCESS_KEY"],
                AWS_DEFAULT_REGION="us-east-1",
                MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint,
            )
            port = p["mlflow"]
            argv = [
                str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"postgresql+psycopg2://mlflow@127.0.0.1:{p['postgres']}/mlflow",
                "--serve-artifacts", "--artifacts-destination", ARTIFACTS_URI,
                "--app-name", "basic-auth",
                "--allowed-hosts", f"127.0.0.1:{port},localhost:{port},127.0.0.1,localhost",
            ]
            return argv, env, self.root / "mlflow", None
        common = [
            "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.root / "ray"),
            "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats",
        ]
        env.update(self.ray_auth_env())  # Ray nodes: token authentication on
        if name == "ray-head":
            argv = [
                str(VENV_BIN / "ray"), "start", "--head", *common, "--port", str(p["ray-gcs"]),
                "--num-cpus", "1", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(p["ray-dashboard"]), "--ray-client-server-port", str(p["ray-client"]),
                "--dashboard-agent-listen-port", str(p["ray-head-agent"]),
            ]
            return argv, env, REPO_ROOT, None
        if name == "ray-worker":
            argv = [
                str(VENV_BIN / "ray"), "start", *common, "--address", f"127.0.0.1:{p['ray-gcs']}",
                "--num-cpus", "2", "--dashboard-agent-listen-port", str(p["ray-worker-agent"]),
            ]
            return argv, env, REPO_ROOT, None
        raise StackError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")

    # -- set-up that runs once per folder --------------------------------------------------

    def _prepare_postgres(self) -> None:
        pg = self.root / "pg"
        data = pg / "data"
        account = self._pg_account()
        ids = (pwd.getpwnam(account).pw_uid, pwd.getpwnam(account).pw_gid) if account else None
        for d in (pg, pg / "run"):
            d.mkdir(exist_ok=True)
            if ids:
                os.chown(d, *ids)
        if (data / "PG_VERSION").exists():
            return
        self.say("initialising PostgreSQL data folder ...")
        pwfile = pg / ".pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.secrets["PG_PASSWORD"] + "\n")
        if ids:
            os.chown(pwfile, *ids)
        try:
            cmd = [str(postgres_bindir() / "initdb"), "-D", str(data), "-U", "mlflow", f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"]
            kwargs: dict[str, Any] = {}
            if account:
                kwargs.update(user=account, group=ids[1], extra_groups=[])
            with open(self.logs / "postgres.log", "ab") as log:
                log.write(f"\n=== {_now()} {shlex.join(cmd)}\n".encode())
                log.flush()
                done = subprocess.run(cmd, cwd=pg, stdout=log, stderr=subprocess.STDOUT, timeout=180,
                                      env=self._base_env(), **kwargs)
            if done.returncode != 0:
                raise StackError(f"initdb failed (exit {done.returncode}); see {self.logs / 'postgres.log'}")
        finally:
            pwfile.unlink(missing_ok=True)

    def _pg_connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.ports["postgres"], user="mlflow",
                                password=self.secrets["PG_PASSWORD"], dbname=dbname, connect_timeout=3)

    def _create_databases(self) -> None:
        conn = self._pg_connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for db in ("mlflow", "mlflow_auth"):
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{db}"')
        finally:
            conn.close()

    def _prepare_mlflow(self) -> None:
        folder = self.root / "mlflow"
        folder.mkdir(exist_ok=True)
        # No secret in here: the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD.
        (folder / "basic_auth.ini").write_text(
            "[mlflow]\n"
            "default_permission = EDIT\n"
            f"database_uri = postgresql+psycopg2://mlflow@127.0.0.1:{self.ports['postgres']}/mlflow_auth\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"  # one server worker: no staleness across workers
        )

    def _s3_client(self, port_name: str = "s3", *, quick: bool = False):
        import boto3
        from botocore.config import Config

        s = self.secrets
        config = (Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}) if quick
                  else Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 5}))
        return boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.ports[port_name]}", region_name="us-east-1",
            aws_access_key_id=s["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s["AWS_SECRET_ACCESS_KEY"],
            config=config,
        )

    def _ensure_bucket(self) -> None:
        client = self._s3_client("s3-store")
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if BUCKET not in names:
            client.create_bucket(Bucket=BUCKET)

    def _request(self, path: str, *, auth: tuple[str, str] | None = None, data: Any = None,
                 method: str | None = None, port: str = "mlflow", timeout: float = 5) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.ports[port]}{path}"
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if port == "ray-dashboard":
            headers["Authorization"] = "Bearer " + self.secrets["RAY_AUTH_TOKEN"]
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def _ensure_runner_user(self, timeout: float = 180) -> None:
        admin = self.admin_auth()
        deadline = time.monotonic() + timeout
        code, body = 0, b""
        while time.monotonic() < deadline:
            code, _ = self._request(f"/api/2.0/mlflow/users/get?username={RUNNER_USER}", auth=admin, timeout=60)
            if code == 200:
                return
            if code == 0:  # slow or restarting server: ask again
                time.sleep(2)
                continue
            code, body = self._request(
                "/api/2.0/mlflow/users/create", auth=admin, method="POST", timeout=60,
                data={"username": RUNNER_USER, "password": self.secrets["MLFLOW_RUNNER_PASSWORD"]},
            )
            if code == 200 or b"RESOURCE_ALREADY_EXISTS" in body:
                return
            if code != 0:
                break
        raise StackError(f"could not create the MLflow user {RUNNER_USER!r}: HTTP {code} {body[:300]!r}")

    # -- health ----------------------------------------------------------------------------

    def healthy(self, name: str) -> bool:
        p = self.ports
        try:
            if name == "postgres":
                conn = self._pg_connect()
                conn.close()
                return True
            if name in ("s3-store", "s3"):
                if not _port_open(p[name]):
                    return False
                client = self._s3_client(name, quick=True)
                if name == "s3-store":
                    client.list_buckets()
                else:
                    client.head_bucket(Bucket=BUCKET)
                return True
            if name == "mlflow":
                if self._request("/health")[0] != 200:
                    return False
                # The first authenticated request initialises the tracking store (schema migrations
                # on a fresh database take minutes on a loaded machine): give it time.
                code, _ = self._request("/api/2.0/mlflow/experiments/search?max_results=1",
                                        auth=self.admin_auth(), timeout=60)
                return code == 200
            if name == "ray-head":
                return self._request("/api/version", port="ray-dashboard")[0] == 200
            if name == "ray-worker":
                return self.ray_alive_nodes() >= 2
        except Exception:  # a health check answers yes or no
            return False
        raise StackError(f"unknown service {name!r}")

    def ray_alive_nodes(self) -> int:
        code, body = self._request("/nodes?view=summary", port="ray-dashboard")
        if code != 200:
            return 0
        nodes = json.loads(body)["data"]["summary"]
        return sum(1 for n in nodes if n.get("raylet", {}).get("state") == "ALIVE")

    # -- lifecycle -------------------------------------------------------------------------

    # Generous: on a loaded 2-core machine the MLflow server and a Ray node take minutes to start.
    TIMEOUTS = {"postgres": 120, "s3-store": 120, "s3": 60, "mlflow": 600, "ray-head": 600, "ray-worker": 600}

    def start(self, name: str) -> None:
        """Start one service (if it is not running) and wait until it is healthy."""
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
        self.init()
        if name == "postgres":
            self._prepare_postgres()
        if name == "mlflow":
            self._prepare_mlflow()
        if self.pid(name) is None:
            blocked = [k for k in self._ports_of(name) if not _port_free(self.ports[k])]
            if blocked:
                raise StackError(
                    f"{name}: port(s) {', '.join(f'{k}={self.ports[k]}' for k in blocked)} already in use by "
                    f"another process; free them or edit {self.config_file}"
                )
            argv, env, cwd, user = self._argv_and_env(name)
            t0 = time.monotonic()
            pid = self._spawn(name, argv, env, cwd, user)
            self.say(f"  {name:<10} starting (pid {pid}) ...")
        else:
            t0 = time.monotonic()
            pid = self.pid(name)
        _wait_for(name, lambda: self.healthy(name), self.TIMEOUTS[name],
                  alive=lambda: (self._reap(), self.pid(name) is not None)[1], log=self.logs / f"{name}.log")
        if name == "postgres":
            self._create_databases()
        elif name == "s3-store":
            self._ensure_bucket()
        elif name == "mlflow":
            self._ensure_runner_user()
        elif name == "ray-head":
            link = self.logs / "ray"
            if not link.is_symlink():
                link.symlink_to(self.root / "ray" / "session_latest" / "logs")
        self.say(f"  {name:<10} healthy ({time.monotonic() - t0:.1f} s)")

    def _ports_of(self, name: str) -> list[str]:
        return {
            "postgres": ["postgres"], "s3-store": ["s3-store"], "s3": ["s3"], "mlflow": ["mlflow"],
            "ray-head": ["ray-gcs", "ray-dashboard", "ray-client", "ray-head-agent"],
            "ray-worker": ["ray-worker-agent"],
        }[name]

    def stop(self, name: str, *, sig: int | None = None, timeout: float = 30) -> None:
        """Stop one service: its own shutdown signal, then SIGKILL for what is left."""
        pid = self.pid(name)
        if pid is None:
            return
        if sig is None:
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM  # postgres: fast shutdown
        if name.startswith("ray-") or name == "postgres":
            _signal(pid, sig)  # `ray start --block` and the postmaster stop their own children
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        if _wait_gone([pid], timeout, self._reap):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            _wait_gone([pid], 10, self._reap)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers of its group
            os.killpg(pid, signal.SIGKILL)
        state = self._state()
        state["services"].pop(name, None)
        self._save_state(state)
        self._reap()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def up(self) -> None:
        self.init()
        t0 = time.monotonic()
        self.say(f"starting the local stack in {self.root}")
        for name in SERVICES:
            self.start(name)
        self.say(f"stack up in {time.monotonic() - t0:.0f} s; `platform/local/stack.py env` prints the client settings")

    def down(self) -> list[int]:
        """Stop every service, then every other process that carries the marker; returns what
        was still there after all that (empty when the stop was clean)."""
        if not self.root.exists():
            return []
        t0 = time.monotonic()
        for name in reversed(SERVICES):
            if self.pid(name) is not None:
                self.say(f"  {name:<10} stopping")
                self.stop(name)
        left = marked_pids(self.root)
        if left:
            self.say(f"  terminating {len(left)} leftover process(es): {left}")
            for pid in left:
                _signal(pid, signal.SIGTERM)
            for pid in _wait_gone(left, 10, self._reap):
                _signal(pid, signal.SIGKILL)
            _wait_gone(left, 10, self._reap)
        remaining = marked_pids(self.root)
        self.say(f"stack down in {time.monotonic() - t0:.0f} s" + (f"; STILL RUNNING: {remaining}" if remaining else ""))
        return remaining

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in SERVICES:
            pid = self.pid(name) if self.config_file.exists() else None
            out[name] = {"pid": pid, "healthy": pid is not None and self.healthy(name)}
        return out

    # -- jobs ------------------------------------------------------------------------------

    def job_client(self):
        """A Jobs API client; it authenticates with the stack's Ray token (set for this process)."""
        os.environ.update(self.ray_auth_env())
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.jobs_address)

    def submit(self, entrypoint: str, *, submission_id: str | None = None, extra_env: Mapping[str, str] | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        """Submit a job through the Ray Jobs API (the path a KubeRay RayJob takes); credentials
        travel in ``runtime_env.env_vars`` only."""
        for value in self.secret_values():
            if value in entrypoint:
                raise StackError("refusing to submit: a credential appears in the entrypoint (use the environment)")
        runtime_env = {"env_vars": {**self.job_env(), **(extra_env or {})}}
        return self.job_client().submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
            metadata=dict(metadata or {}),
        )


# ---------------------------------------------------------------------------------------------
# command line


def _print_status(stack: Stack) -> int:
    if not stack.config_file.exists():
        print(f"no stack in {stack.root} (run `stack.py up`)")
        return 3
    st = stack.status()
    p = stack.ports
    where = {
        "postgres": f"127.0.0.1:{p['postgres']}", "s3-store": f"127.0.0.1:{p['s3-store']} (moto)",
        "s3": stack.s3_endpoint, "mlflow": stack.tracking_uri,
        "ray-head": f"127.0.0.1:{p['ray-gcs']}, Jobs API {stack.jobs_address}", "ray-worker": f"-> 127.0.0.1:{p['ray-gcs']}",
    }
    print(f"stack in {stack.root}   logs: {stack.logs}")
    print(f"{'service':<11}{'pid':>8}  {'health':<9} address")
    for name, info in st.items():
        health = "healthy" if info["healthy"] else ("UNHEALTHY" if info["pid"] else "stopped")
        print(f"{name:<11}{info['pid'] or '-':>8}  {health:<9} {where[name]}")
    if st["ray-head"]["healthy"]:
        print(f"ray nodes alive: {stack.ray_alive_nodes()}")
    stray = sorted(set(marked_pids(stack.root)) - {i["pid"] for i in st.values() if i["pid"]})
    print(f"other processes of the stack (Ray workers, jobs, server workers): {len(stray)}")
    if all(i["healthy"] for i in st.values()):
        return 0
    return 1 if any(i["pid"] for i in st.values()) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.py", description="The local platform stack (see the module docstring).")
    parser.add_argument("--root", default=None, help="stack folder (default $SHAPEBIAS_STACK_DIR or .stack/)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("env")
    for name in ("stop", "start", "restart"):
        sub.add_parser(name).add_argument("service", choices=SERVICES)
    sp = sub.add_parser("submit")
    sp.add_argument("--submission-id", default=None)
    sp.add_argument("entrypoint", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    stack = Stack(args.root)
    try:
        if args.cmd == "up":
            stack.up()
            return _print_status(stack)
        if args.cmd == "down":
            return 1 if stack.down() else 0
        if args.cmd == "status":
            return _print_status(stack)
        if args.cmd == "env":
            if not stack.config_file.exists():
                raise StackError(f"no stack in {stack.root} (run `stack.py up`)")
            env = {**stack.job_env(), "RAY_API_SERVER_ADDRESS": stack.jobs_address, **stack.ray_auth_env()}
            print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
            return 0
        if args.cmd in ("stop", "start", "restart"):
            getattr(stack, args.cmd)(args.service)
            return 0
        if args.cmd == "submit":
            entry = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
            if not entry:
                raise StackError("nothing to submit: stack.py submit -- python -m training.train_resnet ...")
            job_id = stack.submit(shlex.join(entry), submission_id=args.submission_id)
            print(f"submitted {job_id}; follow it with: ray job logs --address {stack.jobs_address} -f {job_id}")
            return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
