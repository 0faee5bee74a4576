"""What the stack exposes: no credential in any file the stack or a job wrote (outside the mode-600
credentials files), none in a job's runtime environment, the S3 server refuses unsigned and
wrongly signed requests, and every port of the stack's processes is bound to loopback.

Runs after the fault tests (file order), so the scan covers what their jobs wrote."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.stack]

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _files(root: Path, since: float | None = None):
    for folder, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and (since is None or info.st_mtime >= since):
                yield path


def test_no_credential_in_any_file_written(stack, finished_job_run):
    """Every file under the stack folder (PostgreSQL's data, moto's and MLflow's folders, all
    logs, Ray's session folder with the runtime-env agent's and the jobs' logs) and every file Ray
    wrote under /tmp/ray while the stack ran is read whole: no credential appears in it."""
    secrets = [s.encode() for s in stack.secret_values()]
    allowed = set(stack.secret_files())
    roots = [stack.root] + ([Path("/tmp/ray")] if Path("/tmp/ray").is_dir() else [])
    scanned, found = 0, []
    for root in roots:
        for path in _files(root, since=None if root == stack.root else stack.started_at):
            if path in allowed:
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            scanned += 1
            found += [f"{path}: credential #{i}" for i, s in enumerate(secrets) if s in data]
    assert not found, "credentials written in clear:\n" + "\n".join(found)
    ray_logs = list((stack.root / "ray").rglob("runtime_env_agent.log"))
    assert ray_logs and any(p.stat().st_size > 0 for p in ray_logs), "the scan did not see Ray's runtime-env agent log"
    assert any(p.name.startswith("job-driver-") for p in (stack.root / "ray").rglob("*.log")), "no job driver log"
    assert scanned > 100, scanned
    print(f"\nscanned {scanned} files for {len(secrets)} credentials: none found")


def test_credentials_reach_jobs_only_as_files(stack, jobs, finished_job_run):
    secrets = stack.secret_values()
    submitted = [j for j in jobs.list_jobs() if j.submission_id]
    assert submitted
    for job in submitted:
        shown = json.dumps({"entrypoint": job.entrypoint, "metadata": job.metadata, "runtime_env": job.runtime_env})
        assert not any(s in shown for s in secrets), f"credential in the submission {job.submission_id}"
        env = (job.runtime_env or {}).get("env_vars", {})
        assert env.get("HOME") == str(stack.job_home), env
        assert env.get("AWS_SHARED_CREDENTIALS_FILE", "").startswith(str(stack.job_home)), env
    # The credentials files and the folders above them are the owner's alone.
    for path in stack.secret_files():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (stack.job_home, stack.job_home / ".mlflow", stack.job_home / ".aws", stack.logs):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    root_mode = stat.S_IMODE(stack.root.stat().st_mode)
    assert root_mode == 0o700 or (root_mode == 0o710 and os.geteuid() == 0), oct(root_mode)
    # The Ray node holds no credential: each job reads its own files.
    environ = Path(f"/proc/{stack.pid('ray-head')}/environ").read_bytes().decode(errors="replace")
    assert not any(s in environ for s in secrets), "the Ray node's environment holds a credential"
    # No command line of the stack's processes spells a secret out (PostgreSQL's password goes to
    # MLflow as PGPASSWORD, the admin's as MLFLOW_AUTH_ADMIN_PASSWORD).
    stack_mod = __import__("shapebias_local_stack")
    pids = stack_mod.marked_pids(stack.root)
    assert len(pids) > 5
    for pid in pids:
        assert not any(s in stack_mod.cmdline(pid) for s in secrets), f"credential in the command line of pid {pid}"
    assert not any(s in (stack.root / "mlflow" / "basic_auth.ini").read_text() for s in secrets)


def _s3(stack, port: str, **kwargs):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.ports[port]}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, **kwargs.pop("config", {})),
        **kwargs,
    )


@pytest.mark.parametrize("port", ["s3", "s3-store"])
def test_s3_refuses_unsigned_and_wrongly_signed_requests(stack, port):
    from botocore import UNSIGNED
    from botocore.exceptions import ClientError
    from shapebias_local_stack import BUCKET

    key_id, secret = stack.secrets["AWS_ACCESS_KEY_ID"], stack.secrets["AWS_SECRET_ACCESS_KEY"]
    clients = {
        "anonymous": _s3(stack, port, config={"signature_version": UNSIGNED}),
        "wrong secret": _s3(stack, port, aws_access_key_id=key_id, aws_secret_access_key=secret[::-1]),
        "unknown key": _s3(stack, port, aws_access_key_id="SB" + "0" * 18, aws_secret_access_key=secret),
    }
    key = f"probe/{port}-{os.getpid()}"
    outcomes = {}
    for who, client in clients.items():
        for op, call in {
            "put": lambda c: c.put_object(Bucket=BUCKET, Key=key, Body=b"x"),
            "get": lambda c: c.list_objects_v2(Bucket=BUCKET, Prefix="mlartifacts/"),
        }.items():
            try:
                call(client)
                outcomes[f"{who} {op}"] = "accepted"
            except ClientError as err:
                outcomes[f"{who} {op}"] = err.response["ResponseMetadata"]["HTTPStatusCode"]
    assert outcomes == dict.fromkeys(outcomes, 403), outcomes
    good = stack.s3_client(port)
    assert "Contents" not in good.list_objects_v2(Bucket=BUCKET, Prefix=key), "a refused PUT stored its object"
    good.put_object(Bucket=BUCKET, Key=key, Body=b"signed")
    assert good.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"signed"
    for path, method in (("/moto-api/reset-auth", "POST"), ("/moto-api/data.json", "GET")):
        req = urllib.request.Request(
            f"http://127.0.0.1:{stack.ports[port]}{path}", method=method, data=b"1000" if method == "POST" else None
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 403, path


def _listening() -> dict[int, list[str]]:
    """Socket inode -> 'address:port' of every listening TCP socket (from /proc/net/tcp{,6})."""
    out: dict[int, list[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            out.setdefault(int(fields[9]), []).append(f"{_address(hexaddr)}:{int(hexport, 16)}")
    return out


def _address(hexaddr: str) -> str:
    import ipaddress

    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return f"::ffff:{address.ipv4_mapped}" if address.ipv4_mapped else str(address)


def _stack_processes(stack_mod, root: Path) -> set[int]:
    """The processes that carry the stack's marker and all their descendants (Ray's renamed
    processes overwrite their environment with their title, so the marker alone misses them)."""
    parent = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat_line = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat_line[stat_line.rindex(")") + 2 :].split()[1])
    found = set(stack_mod.marked_pids(root))
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def _sockets_of(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def test_every_port_of_the_stack_is_on_loopback(stack, finished_job_run):
    """Every listening socket of every process of the stack (PostgreSQL, moto, the S3 front, MLflow,
    Ray's GCS, raylet, dashboard, agents and workers) is bound to a loopback address."""
    stack_mod = __import__("shapebias_local_stack")
    listening = _listening()
    bound: dict[str, str] = {}
    for pid in _stack_processes(stack_mod, stack.root):
        for inode in _sockets_of(pid):
            for addr in listening.get(inode, []):
                bound[addr] = stack_mod.cmdline(pid)[:80]
    outside = {a: who for a, who in bound.items() if a.rsplit(":", 1)[0] not in LOOPBACK}
    assert not outside, f"listening beyond loopback: {outside}"
    ports = {int(a.rsplit(":", 1)[1]) for a in bound}
    assert {
        stack.ports[k] for k in ("postgres", "s3", "s3-store", "mlflow", "ray-gcs", "ray-dashboard", "ray-head-agent")
    } <= ports
    assert len(bound) >= 10, bound  # the raylet's, the agents' and the workers' ports too
    print(f"\n{len(bound)} listening sockets of the stack, all on loopback")
