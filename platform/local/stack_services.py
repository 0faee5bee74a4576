"""The local stack's services, described as data: for each, the command, its environment, its
ports, its health check, what runs once before it starts and once it is healthy, and how it
stops. :data:`SERVICES` is the start order; ``down`` goes the other way.

Every callable takes the :class:`stack_supervisor.Stack` it works for.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import stack_setup as setup
from stack_common import ARTIFACTS_URI, BUCKET, HERE, REPO_ROOT, VENV_BIN, port_open


def _nothing(st) -> None:
    return None


@dataclass(frozen=True)
class Service:
    name: str
    ports: tuple[str, ...]  # keys of the stack's port table it listens on
    command: Callable[..., list[str]]
    healthy: Callable[..., bool]
    address: Callable[..., str]  # where it answers (for `status`)
    timeout: float  # seconds to become healthy (generous: a loaded machine)
    env: Callable[..., dict[str, str]] = lambda st: {}
    cwd: Callable[..., Path] = lambda st: st.root
    user: Callable[..., str | None] = lambda st: None
    prepare: Callable[..., None] = _nothing  # before each start
    after_healthy: Callable[..., None] = _nothing  # after each start, once healthy
    stop_signal: int = signal.SIGTERM
    signal_group: bool = True  # signal its process group (False: the process stops its children)
    start_attempts: int = 1  # starts tried when the process exits during start-up


# -- PostgreSQL ------------------------------------------------------------------------------


def _postgres_command(st) -> list[str]:
    pg = st.root / "pg"
    return [
        str(setup.postgres_bindir() / "postgres"),
        "-D",
        str(pg / "data"),
        "-p",
        str(st.ports["postgres"]),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={pg / 'run'}",
        "-c",
        "max_connections=60",
        "-c",
        "shared_buffers=32MB",
        "-c",
        "logging_collector=off",
    ]


def _postgres_healthy(st) -> bool:
    setup.pg_connect(st).close()
    return True


# -- S3 ----------------------------------------------------------------------------------------


def _s3_store_command(st) -> list[str]:
    return [
        sys.executable,
        str(HERE / "s3server.py"),
        "--port",
        str(st.ports["s3-store"]),
        "--credentials-file",
        str(st.secrets_file),
    ]


def _s3_healthy(name: str) -> Callable[..., bool]:
    def check(st) -> bool:
        if not port_open(st.ports[name]):
            return False
        client = setup.s3_client(st, name, quick=True)
        if name == "s3-store":
            client.list_buckets()
        else:
            client.head_bucket(Bucket=BUCKET)
        return True

    return check


def _s3_front_command(st) -> list[str]:
    return [
        sys.executable,
        str(HERE / "tcpfront.py"),
        "--listen",
        f"127.0.0.1:{st.ports['s3']}",
        "--target",
        f"127.0.0.1:{st.ports['s3-store']}",
    ]


# -- MLflow ----------------------------------------------------------------------------------


def _mlflow_env(st) -> dict[str, str]:
    s = st.secrets
    return {
        "PGPASSWORD": s["PG_PASSWORD"],  # libpq reads it: no password in the store URIs or argv
        "MLFLOW_AUTH_CONFIG_PATH": str(st.root / "mlflow" / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": s["MLFLOW_ADMIN_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": s["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        "AWS_ACCESS_KEY_ID": s["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": st.s3_endpoint,
    }


def _mlflow_command(st) -> list[str]:
    p = st.ports
    port = p["mlflow"]
    return [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"postgresql+psycopg2://mlflow@127.0.0.1:{p['postgres']}/mlflow",
        "--serve-artifacts",
        "--artifacts-destination",
        ARTIFACTS_URI,
        "--app-name",
        "basic-auth",
        "--allowed-hosts",
        f"127.0.0.1:{port},localhost:{port},127.0.0.1,localhost",
    ]


def _mlflow_healthy(st) -> bool:
    if setup.request(st, "/health")[0] != 200:
        return False
    # The first authenticated request initialises the tracking store (schema migrations on a
    # fresh database take minutes on a loaded machine): give it time.
    code, _ = setup.request(st, "/api/2.0/mlflow/experiments/search?max_results=1", auth=st.admin_auth(), timeout=60)
    return code == 200


# -- Ray -------------------------------------------------------------------------------------


def ray_env(st) -> dict[str, str]:
    """Token authentication on; and Ray's single-machine mode, the one in which a node keeps the
    loopback address it is given (in cluster mode Ray replaces 127.0.0.1 by the machine's
    outward address, and its GCS, raylet and agents then listen on every interface)."""
    return {**st.ray_auth_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _ray_head_command(st) -> list[str]:
    p = st.ports
    return [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--temp-dir",
        str(st.root / "ray"),
        "--object-store-memory",
        str(100 * 1024 * 1024),
        "--disable-usage-stats",
        "--port",
        str(p["ray-gcs"]),
        "--num-cpus",
        "3",
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(p["ray-dashboard"]),
        "--ray-client-server-port",
        str(p["ray-client"]),
        "--dashboard-agent-listen-port",
        str(p["ray-head-agent"]),
    ]


def _ray_healthy(st) -> bool:
    return setup.request(st, "/api/version", port="ray-dashboard")[0] == 200 and st.ray_alive_nodes() >= 1


def _ray_prepare(st) -> None:
    (st.root / "ray").mkdir(exist_ok=True)
    (st.root / "ray").chmod(0o700)


def _ray_link_logs(st) -> None:
    link = st.logs / "ray"
    if not link.is_symlink():
        link.symlink_to(st.root / "ray" / "session_latest" / "logs")


# -- the list ----------------------------------------------------------------------------------

SERVICES: tuple[Service, ...] = (
    Service(
        "postgres",
        ("postgres",),
        _postgres_command,
        _postgres_healthy,
        timeout=120,
        address=lambda st: f"127.0.0.1:{st.ports['postgres']}",
        cwd=lambda st: st.root / "pg",
        user=lambda st: setup.pg_account(),
        prepare=setup.prepare_postgres,
        after_healthy=setup.create_databases,
        stop_signal=signal.SIGINT,
        signal_group=False,  # fast shutdown; the postmaster stops its children
    ),
    Service(
        "s3-store",
        ("s3-store",),
        _s3_store_command,
        _s3_healthy("s3-store"),
        timeout=120,
        address=lambda st: f"127.0.0.1:{st.ports['s3-store']} (moto, signed requests only)",
        after_healthy=setup.ensure_bucket,
    ),
    Service(
        "s3",
        ("s3",),
        _s3_front_command,
        _s3_healthy("s3"),
        timeout=60,
        address=lambda st: st.s3_endpoint,
    ),
    Service(
        "mlflow",
        ("mlflow",),
        _mlflow_command,
        _mlflow_healthy,
        timeout=600,
        address=lambda st: st.tracking_uri,
        env=_mlflow_env,
        cwd=lambda st: st.root / "mlflow",
        prepare=setup.write_mlflow_auth_config,
        after_healthy=setup.set_up_mlflow_accounts,
    ),
    Service(
        "ray-head",
        ("ray-gcs", "ray-dashboard", "ray-client", "ray-head-agent"),
        _ray_head_command,
        _ray_healthy,
        timeout=600,
        address=lambda st: f"127.0.0.1:{st.ports['ray-gcs']}, Jobs API {st.jobs_address}",
        env=ray_env,
        cwd=lambda st: REPO_ROOT,
        prepare=_ray_prepare,
        after_healthy=_ray_link_logs,
        signal_group=False,  # `ray start --block` stops its own children
        start_attempts=3,  # a loaded machine can miss Ray's fixed 30 s deadline for the node to register
    ),
)
BY_NAME = {s.name: s for s in SERVICES}
NAMES = tuple(BY_NAME)
