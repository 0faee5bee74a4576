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


def make_trainer(train_loop, loop_config: dict, *, run_id: str, storage_path: str, num_workers: int,
                 env_vars: dict[str, str]):
    """The TorchTrainer of one job, and a description of where it runs (for the run's tags).

    The trainer's name is the MLflow run id, so a job started again on the same run (a retried
    RayJob, a resubmitted driver) finds its checkpoints under ``<storage>/<run id>`` and resumes.
    Ray pins a worker to one CPU (``OMP_NUM_THREADS=1``); on a local CPU-only run each worker is
    given ``cpus // num_workers`` instead, passed on as ``loop_config["threads"]``.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = ray.cluster_resources()
    use_gpu = resources.get("GPU", 0) >= num_workers
    local_cpu = not use_gpu and not os.environ.get("RAY_ADDRESS")
    threads = max(1, int(resources.get("CPU", 1)) // num_workers) if local_cpu else 1
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={**loop_config, "threads": threads},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": threads}),
        run_config=RunConfig(
            name=run_id,
            storage_path=storage_location(storage_path),
            failure_config=FailureConfig(max_failures=int(os.environ.get("SHAPEBIAS_MAX_FAILURES", "0") or 0)),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": env_vars},
        ),
    )
    device = f"{'cuda' if use_gpu else 'cpu'} x{num_workers} ray worker{'s' if num_workers > 1 else ''}"
    return trainer, device
