#!/usr/bin/env python
"""The local platform stack: the cluster path of shapebias on one machine, on loopback.

    PostgreSQL  (Debian's package; installed with apt-get if missing)  MLflow's backend + users
    S3          moto's server (signed requests only) behind a loopback TCP front   artifacts, checkpoints
    MLflow      tracking server, basic auth, artifacts proxied to s3://shapebias/mlartifacts
    Ray         a head node (dashboard + Jobs API, token authentication)

usage:
    stack.py up        start what is not running, wait until every service is healthy
    stack.py down      stop everything (no process of the stack is left behind)
    stack.py status    what runs, with health checks (exit 0 only if all is healthy)
    stack.py env       `export` lines for a shell: tracking URI, credentials, Jobs API address
    stack.py submit -- python -m training.train_resnet ...   submit through the Ray Jobs API
    stack.py stop|start|restart SERVICE                       (fault injection)

Everything lives under one folder (``$SHAPEBIAS_STACK_DIR``, default ``.stack/`` in the
checkout, mode 700): data, generated credentials (mode 600) and all logs (``logs/``). See
docs/local-stack.md. The services are described in ``stack_services.py``, supervised by
``stack_supervisor.py``; this file is the command line.

This is a script, not a package (``platform/`` has no ``__init__.py``); the tests load it by
path.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stack's modules beside this script

from stack_common import (  # noqa: E402  (re-exported for the tests and other callers)
    BUCKET,
    CHECKPOINTS_URI,
    RUNNER_USER,
    StackError,
    cmdline,
    marked_pids,
    port_free,
    proc_start_time,
)
from stack_services import NAMES as SERVICES  # noqa: E402
from stack_setup import postgres_bindir  # noqa: E402
from stack_supervisor import Stack  # noqa: E402

__all__ = [
    "BUCKET",
    "CHECKPOINTS_URI",
    "RUNNER_USER",
    "SERVICES",
    "Stack",
    "StackError",
    "cmdline",
    "main",
    "marked_pids",
    "port_free",
    "postgres_bindir",
    "proc_start_time",
]


def print_status(stack: Stack) -> int:
    if not stack.config_file.exists():
        print(f"no stack in {stack.root} (run `stack.py up`)")
        return 3
    st = stack.status()
    print(f"stack in {stack.root}   logs: {stack.logs}")
    print(f"{'service':<11}{'pid':>8}  {'health':<9} address")
    for name, info in st.items():
        health = "healthy" if info["healthy"] else ("UNHEALTHY" if info["pid"] else "stopped")
        print(f"{name:<11}{info['pid'] or '-':>8}  {health:<9} {info['address']}")
    if st["ray-head"]["healthy"]:
        print(f"ray nodes alive: {stack.ray_alive_nodes()}")
    stray = sorted(set(marked_pids(stack.root)) - {i["pid"] for i in st.values() if i["pid"]})
    print(f"other processes of the stack (Ray workers, jobs, server workers): {len(stray)}")
    if all(i["healthy"] for i in st.values()):
        return 0
    return 1 if any(i["pid"] for i in st.values()) else 3


def print_env(stack: Stack) -> int:
    if not stack.config_file.exists():
        raise StackError(f"no stack in {stack.root} (run `stack.py up`)")
    env = {**stack.client_env(), "RAY_API_SERVER_ADDRESS": stack.jobs_address, **stack.ray_auth_env()}
    print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
    return 0


def submit(stack: Stack, entrypoint: list[str], submission_id: str | None) -> int:
    entry = entrypoint[1:] if entrypoint[:1] == ["--"] else entrypoint
    if not entry:
        raise StackError("nothing to submit: stack.py submit -- python -m training.train_resnet ...")
    job_id = stack.submit(shlex.join(entry), submission_id=submission_id)
    print(f"submitted {job_id}; follow it with: ray job logs --address {stack.jobs_address} -f {job_id}")
    return 0


def up(stack: Stack) -> int:
    stack.up()
    return print_status(stack)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stack.py", description="The local platform stack (docs/local-stack.md).")
    p.add_argument("--root", default=None, help="stack folder (default $SHAPEBIAS_STACK_DIR or .stack/)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up").set_defaults(run=lambda st, a: up(st))
    sub.add_parser("down").set_defaults(run=lambda st, a: 1 if st.down() else 0)
    sub.add_parser("status").set_defaults(run=lambda st, a: print_status(st))
    sub.add_parser("env").set_defaults(run=lambda st, a: print_env(st))
    for name in ("stop", "start", "restart"):
        sp = sub.add_parser(name)
        sp.add_argument("service", choices=SERVICES)
        sp.set_defaults(run=lambda st, a: getattr(st, a.cmd)(a.service) or 0)
    sp = sub.add_parser("submit")
    sp.add_argument("--submission-id", default=None)
    sp.add_argument("entrypoint", nargs=argparse.REMAINDER)
    sp.set_defaults(run=lambda st, a: submit(st, a.entrypoint, a.submission_id))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(Stack(args.root), args))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
