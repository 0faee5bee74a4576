"""Where a job's seconds go: time-stamped events, written only when ``SHAPEBIAS_TIMELINE`` names a file.

The driver and the rank-0 Ray worker (local Ray workers inherit the driver's environment) append
one line per event, ``<unix time>\\t<process CPU seconds>\\t<pid>\\t<event>``, so that a harness
puts the events of all processes on one time axis (``benchmarks/bench_run.py``,
``benchmarks/bench_job.py``). Without the variable :func:`mark` does nothing.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

ENV = "SHAPEBIAS_TIMELINE"


def mark(event: str) -> None:
    """Append ``event`` with the current time and this process's id to ``$SHAPEBIAS_TIMELINE``."""
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(f"{time.time():.4f}\t{time.process_time():.4f}\t{os.getpid()}\t{event}\n")


class Event(NamedTuple):
    t: float  # unix time
    cpu: float  # CPU seconds of the process so far (all its threads)
    pid: int
    name: str


def read(path: str) -> list[Event]:
    """The events of a timeline file, oldest first."""
    events = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 3)
            if len(parts) == 4:
                events.append(Event(float(parts[0]), float(parts[1]), int(parts[2]), parts[3]))
    return sorted(events)
