"""``make run`` as a user waits for it: wall time from start to finish, where the seconds go, and
the memory of every process of the job.

The job runs exactly as ``make run`` starts it (``mlflow run . -e train_resnet -P sparsity=topk
--env-manager local``), in a child process, against a throw-away SQLite store that is created
before the clock starts (as every ``make run`` after the first finds ``./mlflow.db``), with its
Ray Train checkpoints in a throw-away folder. ``SHAPEBIAS_TIMELINE`` makes the driver and the Ray
worker write time-stamped events (:mod:`training.timeline`), which split the wall time into
phases. A thread samples the whole process tree (the ``mlflow run`` process, the job's driver,
Ray's GCS, raylet and helper processes, the Ray Train controller, the workers and helper actors)
with psutil: per process the resident set (RSS), the unique set (USS, memory no other process
maps) and the proportional set (PSS, shared pages divided among the processes that map them).
The sum of PSS is the memory the job holds; the sum of RSS counts shared pages (libraries,
Ray's object store) once per process that maps them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import BackgroundSampling

CHECKOUT = Path(__file__).resolve().parent.parent

# The phases of a run, each ending at the first event of that name (bench_run's own stamps
# "start" and "exit" open and close the run). A phase whose event is missing is merged into the next.
PHASES = (
    ("imports", "driver: imported", "start of `mlflow run` to the job's main(): `mlflow run`, the job's module"),
    (
        "run set-up",
        "driver: data checked and logged",
        "MLflow and torch imported, MLflow run, protocol check, data rendered, checked, logged",
    ),
    ("Ray start", "driver: ray started", "ray.init: GCS, raylet, helper processes"),
    ("worker start", "worker: started", "trainer, Ray Train controller, worker process"),
    ("worker data", "worker: data and model ready", "the worker renders the data and builds the model"),
    ("epochs", "driver: fit returned", "training, evaluation, logging, checkpoints, reports"),
    ("model", "driver: model logged", "the final model logged to MLflow"),
    ("figures", "driver: run ended", "samples, confusion matrix, curves; the run closed"),
    ("Ray shutdown", "driver: at exit", "the summary printed, Ray's processes stopped"),
    ("exit", "exit", "the driver's and `mlflow run`'s exit"),
)


def label(cmdline: list[str], name: str) -> str:
    """A short name for a process of the job, from its command line."""
    text = " ".join(cmdline) or name
    program = os.path.basename(cmdline[0]) if cmdline else name
    if program in ("raylet", "gcs_server"):  # their command lines name the worker's script too
        return {"raylet": "Ray raylet", "gcs_server": "Ray GCS"}[program]
    for key, value in (
        ("ray::RayTrain", "Ray Train worker"),  # process titles may be cut short ("ray::RayTrainWo")
        ("ray::TrainCont", "Ray Train controller"),
        ("ray::IDLE", "Ray idle worker"),
        ("ray::DashboardAgent", "Ray dashboard agent"),
        ("ray::RuntimeEnvAgent", "Ray runtime-env agent"),
        ("default_worker.py", "Ray worker process (starting)"),
        ("dashboard/agent.py", "Ray dashboard agent"),
        ("runtime_env/agent", "Ray runtime-env agent"),
        ("gcs_server", "Ray GCS"),
        ("raylet", "Ray raylet"),
        ("dashboard.py", "Ray API server (dashboard.py)"),
        ("log_monitor.py", "Ray log monitor"),
        ("monitor.py", "Ray autoscaler monitor"),
        ("training.train_resnet", "job driver (training.train_resnet)"),
        ("mlflow run", "mlflow run (CLI)"),
        ("mlflow", "mlflow run (CLI)"),
    ):
        if key in text:
            return value
    if text.startswith("ray::"):
        return "Ray actor " + text.split()[0][5:]
    return name


@dataclass
class ProcessTreeSampler(BackgroundSampling):
    """Samples process ``root`` and all its descendants every ``interval`` seconds.

    Every sample reads each process's RSS and CPU time (cheap); the USS and PSS need a walk of the
    process's page tables (``/proc/<pid>/smaps_rollup``, tens of ms of CPU for a large process),
    so they are read at most every ``full_interval`` seconds, and only while the summed RSS is
    within 3 % of its highest value so far: where the job holds the most. ``peak`` is the full
    sample with the highest sum of PSS (``rss_mb``, ``pss_mb``, ``uss_mb`` totals and
    ``processes``: per process its label, pid, RSS, USS, PSS in MiB); ``peak_rss_mb`` is the
    highest sum of RSS seen. ``cpu_s`` holds each process's CPU time (user + system, all its
    threads) as last sampled.
    """

    root: int
    interval: float = 0.5
    full_interval: float = 3.0
    peak: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    samples: int = 0
    full_samples: int = 0
    cpu_s: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid: (label, CPU seconds so far)
    cpu_history: list[tuple[float, dict[int, tuple[str, float]]]] = field(default_factory=list)
    started: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid: (label, start time)
    last_seen: dict[int, float] = field(default_factory=dict)
    _last_full: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _processes(self) -> list:
        import psutil

        try:
            top = psutil.Process(self.root)
            return [top, *top.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self, full: bool) -> dict[str, Any]:
        import psutil

        rows = []
        now = time.time()
        for p in self._processes():
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    name = label(p.cmdline(), p.name())
                    rss = p.memory_info().rss
                    self.cpu_s[p.pid] = (name, cpu.user + cpu.system)
                    self.started[p.pid] = (name, self.started.get(p.pid, (name, p.create_time()))[1])
                    self.last_seen[p.pid] = now
                    row = {"label": name, "pid": p.pid, "rss_mb": rss / 2**20}
                    if full:
                        mem = p.memory_full_info()
                        row.update(uss_mb=mem.uss / 2**20, pss_mb=getattr(mem, "pss", mem.rss) / 2**20)
                    rows.append(row)
            except psutil.Error:  # ended meanwhile, or not ours to read
                continue
        out: dict[str, Any] = {"t": now, "rss_mb": sum(r["rss_mb"] for r in rows)}
        if full:
            out.update(
                uss_mb=sum(r["uss_mb"] for r in rows),
                pss_mb=sum(r["pss_mb"] for r in rows),
                processes=sorted(rows, key=lambda r: -r["pss_mb"]),
            )
        return out

    def _tick(self) -> None:
        s = self.sample(full=False)
        if not s:
            return
        self.cpu_history.append((s["t"], dict(self.cpu_s)))
        self.samples += 1
        self.peak_rss_mb = max(self.peak_rss_mb, s["rss_mb"])
        if s["rss_mb"] >= 0.97 * self.peak_rss_mb and s["t"] - self._last_full >= self.full_interval:
            full = self.sample(full=True)
            self._last_full = full["t"]
            self.full_samples += 1
            if full["pss_mb"] > self.peak.get("pss_mb", -1.0):
                self.peak = full

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per kind of process between two times (from the samples nearest inside them)."""
        inside = [(t, cpu) for t, cpu in self.cpu_history if start <= t <= end]
        if len(inside) < 2:
            return {}
        first, last = inside[0][1], inside[-1][1]
        used = {pid: (name, cpu - first.get(pid, (name, 0.0))[1]) for pid, (name, cpu) in last.items()}
        return cpu_by_label(used)


def phases(events: list, start: float, end: float) -> list[dict[str, Any]]:
    """Seconds per phase of :data:`PHASES` from the timeline's events (first occurrence of each)."""
    first: dict[str, float] = {"start": start, "exit": end}
    for e in events:
        first.setdefault(e.name, e.t)
    out, last = [], start
    for name, event, what in PHASES:
        if event not in first:
            continue
        t = max(first[event], last)
        out.append({"phase": name, "s": t - last, "what": what})
        last = t
    return out


def epochs(events: list) -> list[dict[str, float]]:
    """Per epoch of the (first) worker: seconds training, evaluating, logging, checkpointing and
    reporting, and the worker's CPU seconds training (from the worker's events)."""
    stamps = {e.name: e for e in reversed(events) if e.name.startswith("worker: ")}  # first of each
    rows = []
    epoch = 1
    prev = stamps.get("worker: data and model ready")
    while prev is not None and f"worker: epoch {epoch} trained" in stamps:
        trained = stamps[f"worker: epoch {epoch} trained"]
        evaluated = stamps.get(f"worker: epoch {epoch} evaluated", trained)
        logged = stamps.get(f"worker: epoch {epoch} logged", evaluated)
        reported = stamps.get(f"worker: epoch {epoch} reported", logged)
        rows.append(
            {
                "epoch": epoch,
                "train_s": trained.t - prev.t,
                "train_cpu_s": trained.cpu - prev.cpu,
                "eval_s": evaluated.t - trained.t,
                "log_s": logged.t - evaluated.t,
                "report_s": reported.t - logged.t,
                "total_s": reported.t - prev.t,
            }
        )
        prev, epoch = reported, epoch + 1
    return rows


def cpu_by_label(cpu: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per kind of process, largest first."""
    out: dict[str, float] = {}
    for name, seconds in cpu.values():
        out[name] = out.get(name, 0.0) + seconds
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def command(params: dict[str, str] | None = None) -> list[str]:
    """``make run``'s command (the Makefile's ``run`` target), with extra MLproject parameters."""
    cmd = [sys.executable, "-m", "mlflow", "run", ".", "-e", "train_resnet", "-P", "sparsity=topk"]
    for k, v in (params or {}).items():
        cmd += ["-P", f"{k}={v}"]
    return cmd + ["--env-manager", "local", "--experiment-name", "shapebias-train_resnet"]


def run(params: dict[str, str] | None = None, interval: float = 0.5, progress=print) -> dict[str, Any]:
    """One ``make run``-equivalent job: wall time, phases, per-epoch split, memory, output lines."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="shapebias-bench-run-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        MlflowClient(uri).search_experiments()  # the store's schema, created before the clock starts
        timeline = Path(tmp) / "timeline.tsv"
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "MLFLOW_LOGGING_LEVEL": "WARNING",
            "MLFLOW_TRACKING_URI": uri,
            "SHAPEBIAS_TIMELINE": str(timeline),
        }
        for key in ("RAY_ADDRESS", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            env.pop(key, None)  # as from a shell: make run starts Ray and names its own experiment
        cmd = command({"storage_path": str(Path(tmp) / "ray"), **(params or {})})
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=CHECKOUT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with ProcessTreeSampler(proc.pid, interval) as mem:
            out, _ = proc.communicate()
        end = time.time()
        events = []
        if timeline.exists():
            from training.timeline import read

            events = read(str(timeline))
    stamps = {e.name: e.t for e in reversed(events)}
    window = None
    if "worker: data and model ready" in stamps and "driver: fit returned" in stamps:
        window = (stamps["worker: data and model ready"], stamps["driver: fit returned"])
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if proc.returncode != 0:
        progress("\n".join(lines[-20:]))
    return {
        "command": " ".join(["mlflow", *cmd[3:]]),
        "returncode": proc.returncode,
        "wall_s": end - start,
        "phases": phases(events, start, end),
        "events": [(round(e.t - start, 3), round(e.cpu, 3), e.pid, e.name) for e in events],
        "epochs": epochs(events),
        "output_lines": len(lines),
        "output": lines,
        "memory": {
            "pss_mb": mem.peak.get("pss_mb"),
            "uss_mb": mem.peak.get("uss_mb"),
            "rss_mb": mem.peak.get("rss_mb"),
            "peak_rss_mb": mem.peak_rss_mb,
            "processes": mem.peak.get("processes", []),
            "samples": mem.samples,
            "full_samples": mem.full_samples,
        },
        "cpu_s": cpu_by_label(mem.cpu_s),
        "processes": [
            {"label": name, "pid": pid, "start_s": t - start, "end_s": mem.last_seen.get(pid, end) - start}
            for pid, (name, t) in sorted(mem.started.items(), key=lambda kv: kv[1][1])
        ],
        "epochs_window_s": window[1] - window[0] if window else None,
        "cpu_s_during_epochs": mem.cpu_between(*window) if window else {},
    }
