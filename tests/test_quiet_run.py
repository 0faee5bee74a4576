"""What a user sees of a training run: a short log, each epoch once, the summary last."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_run_prints_a_short_log(tmp_path):
    """A one-epoch job, started as a user starts it (a new process, output to a pipe, not a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", PYTHONPATH=str(REPO))
    tiny = "--epochs 1 --synthetic-classes 3 --synthetic-train-per-class 6 --synthetic-test-per-class 4"
    tiny += f" --image-size 16 --batch-size 6 --storage-path {tmp_path / 'ray'}"
    command = [sys.executable, "-m", "training.train_resnet", *tiny.split()]
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600
    )
    out = proc.stdout
    lines = out.rstrip("\n").split("\n")
    assert proc.returncode == 0, out
    assert "PlacementGroupCleaner" not in out and "State API" not in out, out
    assert "TrainingReport(" not in out, out
    assert "\x1b[" not in out, "ANSI escape codes in a log that is not a terminal"
    epochs = [i for i, line in enumerate(lines) if re.search(r"\bepoch 1/1: train_loss=", line)]
    assert len(epochs) == 1, out
    (summary,) = [i for i, line in enumerate(lines) if re.match(r"run [0-9a-f]{32} finished", line)]
    assert summary > epochs[0]
    assert all(line.startswith("  ") for line in lines[summary + 1 :]), out  # nothing after the summary
    assert len(lines) <= 25, f"{len(lines)} lines:\n{out}"
