"""Where the platform finds data that is not in the repository.

Every location is a setting (an environment variable) with a default; nothing is copied into
the repository. Development machines have a read-only ``shared/`` folder beside the checkout
with the real cue-conflict images, few-shot sets, the authors' raw decisions and the KubeRay
CRDs; a user's clone does not, and code that needs it says so.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """``$SHAPEBIAS_SHARED_DIR``, else ``../shared`` beside the checkout; None if absent."""
    env = os.environ.get("SHAPEBIAS_SHARED_DIR")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None


def _under_shared(env_var: str, *parts: str) -> Path | None:
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    root = shared_dir()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def cue_conflict_dir() -> Path | None:
    """The Geirhos et al. cue-conflict images: ``$SHAPEBIAS_CUE_CONFLICT_DIR`` or shared/."""
    return _under_shared("SHAPEBIAS_CUE_CONFLICT_DIR", "data", "cue-conflict")


def few_shot_dir(name: str) -> Path | None:
    """A few-shot image set (``jeep``, ``fish``, ...): ``$SHAPEBIAS_FEW_SHOT_DIR/<name>`` or shared/."""
    env = os.environ.get("SHAPEBIAS_FEW_SHOT_DIR")
    if env:
        return Path(env) / name
    return _under_shared("_SHAPEBIAS_UNSET_", "data", "few-shot", name)


def reference_decisions_dir() -> Path | None:
    """The authors' raw per-image decisions (model-vs-human CSVs)."""
    return _under_shared("SHAPEBIAS_REFERENCE_DIR", "reference", "li2023-raw-cue-conflict")


def kuberay_crd_dir() -> Path | None:
    """The KubeRay v1 CRDs used to validate RayJob manifests offline."""
    return _under_shared("SHAPEBIAS_KUBERAY_CRD_DIR", "kuberay")


def data_home() -> Path:
    """Where data commands download to: ``$SHAPEBIAS_DATA_HOME`` or ``~/.cache/shapebias``."""
    return Path(os.environ.get("SHAPEBIAS_DATA_HOME", Path.home() / ".cache" / "shapebias"))
