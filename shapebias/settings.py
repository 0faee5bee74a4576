"""Where the platform finds data that is not in the repository.

Every location is a setting (an environment variable) with a default; nothing is copied into
the repository. A data set is looked for, in this order: its environment variable; the user's
data folder (:func:`data_home`, ``~/.cache/shapebias/data``), where ``shapebias data fetch``
puts it; a read-only ``shared/`` folder beside the checkout, which development machines have
(the real cue-conflict images, few-shot sets, the authors' raw decisions and the KubeRay CRDs).
A user's clone has no ``shared/``, and code that needs a missing folder says so.
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


def _in_shared(*parts: str) -> Path | None:
    root = shared_dir()
    path = root.joinpath(*parts) if root is not None else None
    return path if path is not None and path.exists() else None


def _under_shared(env_var: str, *parts: str) -> Path | None:
    env = os.environ.get(env_var)
    return Path(env) if env else _in_shared(*parts)


def _fetched(*parts: str) -> Path | None:
    """A folder under the user's data folder, if it is there."""
    path = data_home().joinpath(*parts)
    return path if path.is_dir() else None


def cue_conflict_dir() -> Path | None:
    """The Geirhos et al. cue-conflict images: ``$SHAPEBIAS_CUE_CONFLICT_DIR``, the copy that
    ``shapebias data fetch cue-conflict`` made, or shared/."""
    if os.environ.get("SHAPEBIAS_CUE_CONFLICT_DIR"):
        return Path(os.environ["SHAPEBIAS_CUE_CONFLICT_DIR"])
    return _fetched("cue-conflict") or _in_shared("data", "cue-conflict")


def few_shot_dir(name: str) -> Path | None:
    """A few-shot image set (``jeep``, ``fish``, ...): ``$SHAPEBIAS_FEW_SHOT_DIR/<name>``, the set
    that ``python -m shapebias.data.few_shot prepare`` built in the user's data folder, or shared/."""
    env = os.environ.get("SHAPEBIAS_FEW_SHOT_DIR")
    if env:
        return Path(env) / name
    return _fetched("few-shot", name) or _in_shared("data", "few-shot", name)


def reference_decisions_dir() -> Path | None:
    """The authors' raw per-image decisions (model-vs-human CSVs)."""
    return _under_shared("SHAPEBIAS_REFERENCE_DIR", "reference", "li2023-raw-cue-conflict")


def kuberay_crd_dir() -> Path | None:
    """The KubeRay v1 CRDs used to validate RayJob manifests offline."""
    return _under_shared("SHAPEBIAS_KUBERAY_CRD_DIR", "kuberay")


def data_home() -> Path:
    """Where data commands put data sets: ``$SHAPEBIAS_DATA_HOME``, else the user cache folder
    (``$XDG_CACHE_HOME``, default ``~/.cache``) ``/shapebias/data``."""
    if os.environ.get("SHAPEBIAS_DATA_HOME"):
        return Path(os.environ["SHAPEBIAS_DATA_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "shapebias" / "data"
