"""Shared fixtures: a throw-away MLflow store per test, and the read-only shared/ data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(autouse=True)
def _isolate_process_state():
    """Each test starts with the environment and MLflow's active experiment as they were.

    ``mlflow.set_experiment`` writes ``MLFLOW_EXPERIMENT_ID`` into ``os.environ`` and a module
    global; left behind, a later test's fresh store would be asked for an experiment it lacks.
    """
    import mlflow.tracking.fluent as fluent

    saved = dict(os.environ)
    experiment = fluent._active_experiment_id
    yield
    os.environ.clear()
    os.environ.update(saved)
    fluent._active_experiment_id = experiment


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store (artifacts beside it) as MLFLOW_TRACKING_URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setattr("mlflow.tracking.fluent._active_experiment_id", None)
    monkeypatch.chdir(tmp_path)  # default artifact root (./mlruns) lands in tmp_path
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _shared(sub: str) -> Path:
    from shapebias import settings

    path = {
        "cue-conflict": settings.cue_conflict_dir,
        "reference": settings.reference_decisions_dir,
        "kuberay": settings.kuberay_crd_dir,
    }[sub]()
    if path is None or not Path(path).exists():
        pytest.skip(f"shared/{sub} is absent (set SHAPEBIAS_SHARED_DIR to the shared data folder)")
    return Path(path)


@pytest.fixture
def cue_conflict_dir() -> Path:
    return _shared("cue-conflict")


@pytest.fixture
def reference_dir() -> Path:
    return _shared("reference")


@pytest.fixture
def kuberay_dir() -> Path:
    return _shared("kuberay")


@pytest.fixture
def few_shot_dir():
    from shapebias import settings

    def get(name: str) -> Path:
        path = settings.few_shot_dir(name)
        if path is None or not path.is_dir():
            pytest.skip(f"shared/data/few-shot/{name} is absent (set SHAPEBIAS_SHARED_DIR)")
        return path

    return get
