"""Ray plumbing shared by the training jobs: starting or joining Ray, and where checkpoints go."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def init_ray(env_vars: dict[str, str]) -> None:
    """Join the cluster at ``RAY_ADDRESS`` (Ray Jobs API, the local stack, KubeRay), else start Ray here.

    ``env_vars`` reach the workers through the runtime environment: Ray workers do not inherit the
    driver's environment. A busy machine can miss Ray's fixed 30 s start-up deadline, so a local
    start is tried three times.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # the trainers pass env_vars to their workers themselves (worker_runtime_env)
        return
    for attempt in range(3):
        try:
            ray.init(runtime_env={"env_vars": env_vars}, include_dashboard=False, log_to_driver=True)
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            print(f"Ray did not start in time ({exc}); retrying", file=sys.stderr)
            ray.shutdown()


def storage_location(value: str) -> str:
    """Ray Train's ``storage_path``: a URI (``s3://bucket/ray``) as given, a local path made absolute.

    The default is ``./.ray_results``. The trainer's run name (the MLflow run id) is appended by Ray,
    so a retried job finds its checkpoints under ``<storage>/<run id>``.
    """
    if "://" in value:
        return value
    return str(Path(value or Path.cwd() / ".ray_results").resolve())
