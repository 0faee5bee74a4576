"""Timing, memory and machine description shared by the harness's sections."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils import benchmark


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    label: str = "",
    sub_label: str = "",
    warmup: int = 1,
) -> tuple[dict[str, benchmark.Measurement], dict[str, list[float]]]:
    """Time every function ``repeats`` times, interleaved (A B C A B C ...) so that load from other
    processes drifts over all variants alike: one :class:`torch.utils.benchmark.Timer` per function,
    each round one ``blocked_autorange(min_run_time=0)`` per function (one untimed call, then one
    timed call; CUDA is synchronised around it), merged into one Measurement per function.
    ``warmup`` untimed calls of each function come first.

    Returns the Measurements (wall-clock) and, per function, the process CPU time of each timed
    call in seconds (all threads, page faults included; waiting for a core not), which a busy
    machine disturbs less than the wall clock."""
    threads = torch.get_num_threads()
    cpu_marks: dict[str, list[float]] = {name: [] for name in fns}

    def clock(marks: list[float]) -> Callable[[], float]:
        def now() -> float:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append(time.process_time())
            return time.perf_counter()

        return now

    timers = {
        name: benchmark.Timer(
            "fn()",
            globals={"fn": fn},
            label=label,
            sub_label=sub_label,
            description=name,
            num_threads=threads,
            timer=clock(cpu_marks[name]),
        )
        for name, fn in fns.items()
    }
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs: dict[str, list[benchmark.Measurement]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, timer in timers.items():
            runs[name].append(timer.blocked_autorange(min_run_time=0))
            cpu[name].append(cpu_marks[name][-1] - cpu_marks[name][-2])  # the timed call's start and end
    return {name: benchmark.Measurement.merge(ms)[0] for name, ms in runs.items()}, cpu


def seconds(m: benchmark.Measurement) -> list[float]:
    """The measured times of one call each, in seconds, in the order they ran."""
    return [t / m.number_per_run for t in m.raw_times]


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def compare_table(measurements: list[benchmark.Measurement]) -> str:
    """``torch.utils.benchmark.Compare``'s table of the measurements (medians)."""
    table = benchmark.Compare(measurements)
    table.trim_significant_figures()
    return str(table)


# ---- memory ---------------------------------------------------------------------------------


def _status_kb(key: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that a peak is not hidden by reuse."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_memory_mb(fn: Callable[[], Any], device: str = "cpu") -> float | None:
    """Peak memory of one call above what was in use before it, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak resident set (VmHWM, reset
    through /proc/self/clear_refs) above its resident set before the call, after handing freed
    heap memory back with glibc's ``malloc_trim``; None where Linux's /proc does not allow it.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    _trim()
    if not _reset_hwm():
        return None
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) / 1024


def tree_rss_mb(root: int | None = None) -> float:
    """Resident memory of a process and all its descendants (Ray's services and workers), MiB."""
    import psutil

    try:
        proc = psutil.Process(root or os.getpid())
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended meanwhile
            pass
    return total / 2**20


S = TypeVar("S", bound="BackgroundSampling")


class BackgroundSampling:
    """Calls ``self._tick()`` every ``self.interval`` seconds in a thread while a ``with`` block runs
    (the samplers below; the subclass, a dataclass, holds ``interval``, ``_stop`` and ``_thread``)."""

    interval: float
    _stop: threading.Event
    _thread: threading.Thread | None

    def _tick(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        def loop() -> None:
            while not self._stop.is_set():
                self._tick()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


@dataclass
class TreeMemorySampler(BackgroundSampling):
    """Samples :func:`tree_rss_mb` in a thread; ``peak_mb`` is the highest total seen."""

    interval: float = 0.25
    peak_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _tick(self) -> None:
        self.peak_mb = max(self.peak_mb, tree_rss_mb())


# ---- the machine ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "mem_total_gb": round(_total_memory() / 2**30, 1),
    }
    return info


def _total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


def load_average() -> list[float]:
    import psutil

    return [round(v, 2) for v in psutil.getloadavg()]


def results_dir() -> Path:
    return Path(__file__).resolve().parent / "results"
