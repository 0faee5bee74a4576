"""One-time set-up and clients of the local stack's services: PostgreSQL's data folder and
databases, MLflow's auth configuration, users and permissions, the S3 bucket.

Every function takes the :class:`stack_supervisor.Stack` it works for.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from stack_common import ADMIN_USER, BUCKET, RUNNER_USER, StackError, now, write_private

# ---------------------------------------------------------------------------------------------
# PostgreSQL


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


def pg_account() -> str | None:
    """postgres refuses to run as root: as root, run it as the `postgres` account."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StackError(
            "running as root but there is no `postgres` account (apt-get install postgresql makes it)"
        ) from exc
    return "postgres"


def account_ids(account: str | None) -> tuple[int, int] | None:
    return (pwd.getpwnam(account).pw_uid, pwd.getpwnam(account).pw_gid) if account else None


def prepare_postgres(st) -> None:
    """The data folder (initdb, once), owned by the account that runs the server."""
    postgres_bindir()  # installs the package (and so the `postgres` account) where it is missing
    st.restrict_root()
    pg = st.root / "pg"
    data = pg / "data"
    account = pg_account()
    ids = account_ids(account)
    for d in (pg, pg / "run"):
        d.mkdir(exist_ok=True)
        d.chmod(0o700)
        if ids:
            os.chown(d, *ids)
    if (data / "PG_VERSION").exists():
        return
    st.say("initialising PostgreSQL data folder ...")
    pwfile = pg / ".pwfile"
    write_private(pwfile, st.secrets["PG_PASSWORD"] + "\n")
    if ids:
        os.chown(pwfile, *ids)
    try:
        cmd = [
            str(postgres_bindir() / "initdb"),
            "-D",
            str(data),
            "-U",
            "mlflow",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
        ]
        kwargs: dict[str, Any] = {}
        if ids:
            kwargs.update(user=account, group=ids[1], extra_groups=[])
        with open(st.logs / "postgres.log", "ab") as log:
            log.write(f"\n=== {now()} {shlex.join(cmd)}\n".encode())
            log.flush()
            done = subprocess.run(
                cmd, cwd=pg, stdout=log, stderr=subprocess.STDOUT, timeout=180, env=st.base_env(), **kwargs
            )
        if done.returncode != 0:
            raise StackError(f"initdb failed (exit {done.returncode}); see {st.logs / 'postgres.log'}")
    finally:
        pwfile.unlink(missing_ok=True)


def pg_connect(st, dbname: str = "postgres"):
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1",
        port=st.ports["postgres"],
        user="mlflow",
        password=st.secrets["PG_PASSWORD"],
        dbname=dbname,
        connect_timeout=3,
    )


def create_databases(st) -> None:
    conn = pg_connect(st)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("mlflow", "mlflow_auth"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# S3


def s3_client(st, port_name: str = "s3", *, quick: bool = False):
    import boto3
    from botocore.config import Config

    s = st.secrets
    config = (
        Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
        if quick
        else Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 5})
    )
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{st.ports[port_name]}",
        region_name="us-east-1",
        aws_access_key_id=s["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )


def ensure_bucket(st) -> None:
    client = s3_client(st, "s3-store")
    names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in names:
        client.create_bucket(Bucket=BUCKET)


# ---------------------------------------------------------------------------------------------
# MLflow


def write_mlflow_auth_config(st) -> None:
    """basic-auth configuration (no secret in it: the admin password comes from the environment).
    Accounts read what they are not granted more on; jobs get EDIT on the experiments they use."""
    folder = st.root / "mlflow"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o700)
    (folder / "basic_auth.ini").write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = postgresql+psycopg2://mlflow@127.0.0.1:{st.ports['postgres']}/mlflow_auth\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # one server worker: no staleness across workers
    )


def request(
    st,
    path: str,
    *,
    auth: tuple[str, str] | None = None,
    data: Any = None,
    method: str | None = None,
    port: str = "mlflow",
    timeout: float = 5,
) -> tuple[int, bytes]:
    """One HTTP request to a service of the stack: (status, body); status 0 when unreachable."""
    url = f"http://127.0.0.1:{st.ports[port]}{path}"
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if port == "ray-dashboard":
        headers["Authorization"] = "Bearer " + st.secrets["RAY_AUTH_TOKEN"]
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


def _admin_call(st, path: str, data: Any = None, method: str | None = None, what: str = "") -> tuple[int, bytes]:
    """An admin request, asked again while the (starting or restarting) server does not answer."""
    deadline = time.monotonic() + 180
    while True:
        code, body = request(st, path, auth=st.admin_auth(), data=data, method=method, timeout=60)
        if code != 0 or time.monotonic() > deadline:
            return code, body
        time.sleep(2)


def ensure_runner_user(st) -> None:
    code, _ = _admin_call(st, f"/api/2.0/mlflow/users/get?username={RUNNER_USER}")
    if code == 200:
        return
    code, body = _admin_call(
        st,
        "/api/2.0/mlflow/users/create",
        method="POST",
        data={"username": RUNNER_USER, "password": st.secrets["MLFLOW_RUNNER_PASSWORD"]},
    )
    if code != 200 and b"RESOURCE_ALREADY_EXISTS" not in body:
        raise StackError(f"could not create the MLflow user {RUNNER_USER!r}: HTTP {code} {body[:300]!r}")


def grant_edit(st, experiment_id: str, username: str = RUNNER_USER) -> None:
    """EDIT on one experiment for ``username`` (MLflow's per-user grant API); checked after."""
    target = {"username": username, "resource_type": "experiment", "resource_id": experiment_id}
    code, body = _admin_call(
        st, "/api/3.0/mlflow/users/permissions/grant", method="POST", data={**target, "permission": "EDIT"}
    )
    if code != 200 and b"RESOURCE_ALREADY_EXISTS" not in body:
        raise StackError(f"could not grant {username!r} EDIT on experiment {experiment_id}: HTTP {code} {body[:300]!r}")
    code, body = _admin_call(st, "/api/3.0/mlflow/users/permissions/get?" + urllib.parse.urlencode(target))
    granted = json.loads(body).get("permission") if code == 200 else None
    if granted not in ("EDIT", "MANAGE"):
        raise StackError(f"{username!r} has {granted} on experiment {experiment_id} instead of EDIT: HTTP {code}")


def set_up_mlflow_accounts(st) -> None:
    """The jobs' account, with EDIT on the Default experiment (where a job without an experiment
    logs); experiments it creates itself it manages (MLflow gives creators MANAGE)."""
    ensure_runner_user(st)
    grant_edit(st, "0")
