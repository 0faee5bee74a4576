"""Ray plumbing shared by the training jobs: starting or joining Ray, where checkpoints go, and
what a run prints.

A local run starts Ray without its dashboard (about 1 GB of helper processes), and Ray Train
without what a job on its own machine does not use (:func:`_trainer_class`,
:data:`LOCAL_RAY_CONFIG`; docs/performance.md measures what that saves). What Ray and Ray Train
print is cut to what a user reads: Ray Train's own messages at WARNING and above
(``ray.train.LoggingConfig``; its log files under ``/tmp/ray/session_*/logs/train`` keep every
level), one line per ``print`` of a worker, and a progress bar drawn by the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from shapebias.errors import ConfigError
from shapebias.integrity import reinstall_signal_handlers

# What a local run does not need to hear, by logger and the lowest level shown. Requests to the
# autoscaling coordinator (a local cluster has no autoscaler) time out on a busy machine with a
# traceback. Ray Train's per-report message ("Reporting training result N: TrainingReport(...)")
# comes from a logger named after its file, outside ``ray.train``, where ``LoggingConfig`` does not
# reach. Filters, not levels: Ray Train's logging set-up resets the levels of its loggers.
_LOCAL_QUIET = {
    "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client": logging.ERROR,
    "{ray}/train/v2/_internal/execution/context.py": logging.WARNING,
}

LOCAL_ENV = {
    # Preemption (a node being drained) does not happen to a cluster the job started itself.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
# Ray's own settings (RayConfig, read from RAY_<name> by every Ray process) for a cluster the job
# starts itself: no idle worker processes started ahead (each job process asks for a runtime
# environment of its own, so none would be used: seconds of CPU at start-up) and no metrics
# collection (a local run has no dashboard or Prometheus to read them; it costs CPU in every process).
LOCAL_RAY_CONFIG = {
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
    "RAY_enable_metrics_collection": "0",
}
PROGRESS_ENV = "SHAPEBIAS_PROGRESS_BARS"
CHECKOUT = Path(__file__).resolve().parent.parent


def _worker_env() -> dict[str, str]:
    return {
        # Ray Train copies a worker's print() into its logger as well: every line would appear twice.
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
        # Bars are drawn where someone watches, not into log files.
        PROGRESS_ENV: "1" if sys.stderr.isatty() else "0",
    }


def _quiet_local_cluster() -> None:
    """``worker_process_setup_hook`` of a local run: every Ray process of the job runs it."""
    import ray

    for name, level in _LOCAL_QUIET.items():
        logger = logging.getLogger(name.format(ray=os.path.dirname(ray.__file__)))
        logger.addFilter(lambda record, level=level: record.levelno >= level)


def check_workers(num_workers: int, resources: dict[str, float]) -> None:
    """ConfigError unless the cluster has a CPU for each of ``num_workers`` Ray Train workers (every
    worker asks for at least one): Ray would otherwise wait for them forever with the run RUNNING."""
    cpus = int(resources.get("CPU", 0))
    if num_workers > cpus:
        raise ConfigError(
            f"num_workers={num_workers} is more than this Ray cluster can place ({cpus} CPUs, "
            f"one per worker); choose 1..{max(cpus, 1)} or add nodes"
        )


def check_local_workers(num_workers: int) -> None:
    """Without ``RAY_ADDRESS`` Ray starts on the local machine: refuse more workers than its CPUs before
    anything starts (:func:`make_trainer` checks the resources of any cluster)."""
    if not os.environ.get("RAY_ADDRESS"):
        check_workers(num_workers, {"CPU": os.cpu_count() or 1})


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
        ray.init(logging_level=logging.WARNING)  # the trainers pass env_vars to their workers themselves
        reinstall_signal_handlers()
        return
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI colour codes in logs
    for key, value in LOCAL_RAY_CONFIG.items():  # Ray's processes inherit the driver's environment
        os.environ.setdefault(key, value)
    # The workers import the jobs from the checkout, wherever the driver was started.
    pythonpath = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    runtime_env = {
        "env_vars": {**LOCAL_ENV, "PYTHONPATH": pythonpath, **env_vars},
        "worker_process_setup_hook": _quiet_local_cluster,
    }
    for attempt in range(3):
        try:
            ray.init(
                runtime_env=runtime_env, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING
            )
            reinstall_signal_handlers()  # Ray's own SIGTERM handler would abort, leaving the run RUNNING
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            print(f"Ray did not start in time ({exc}); retrying", file=sys.stderr)
            ray.shutdown()


@contextlib.contextmanager
def stopping_local_ray() -> Iterator[None]:
    """Stop a Ray instance that this process started (not a cluster joined at ``RAY_ADDRESS``) while
    the block runs: the stop is mostly waiting for Ray's processes to end, so the driver can log
    the model and the figures meanwhile. The block's end waits for the stop."""
    import ray

    thread = None
    if not os.environ.get("RAY_ADDRESS") and ray.is_initialized():
        thread = threading.Thread(target=ray.shutdown, name="ray-shutdown")
        thread.start()
    try:
        yield
    finally:
        if thread is not None:
            thread.join()


def progress(iterable: Iterable, desc: str, enabled: bool = True) -> Iterable:
    """A progress bar over ``iterable``: drawn by the Ray driver when this runs in a Ray worker
    (``ray.experimental.tqdm_ray``), else a plain tqdm bar on stderr that disappears when done."""
    if not enabled:
        return iterable
    import ray

    if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
        return _ray_progress(iterable, desc) if os.environ.get(PROGRESS_ENV) != "0" else iterable
    from tqdm import tqdm

    # disable=None: no bar unless stderr is a terminal
    return tqdm(iterable, desc=desc, leave=False, mininterval=2.0, file=sys.stderr, disable=None)


def _ray_progress(iterable: Iterable, desc: str) -> Iterator:
    from ray.experimental.tqdm_ray import tqdm as ray_tqdm

    bar = ray_tqdm(desc=desc, total=len(iterable) if hasattr(iterable, "__len__") else None, unit="batch")
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()  # tqdm_ray's own iterator never closes its bar


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Show only records of ``level`` and above from logger ``name`` while the block runs."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def storage_location(value: str) -> str:
    """Ray Train's ``storage_path``: a URI (``s3://bucket/ray``) as given, a local path made absolute.

    The default is ``./.ray_results``. The trainer's run name (the MLflow run id) is appended by Ray,
    so a retried job finds its checkpoints under ``<storage>/<run id>``.
    """
    if "://" in value:
        return value
    return str(Path(value or Path.cwd() / ".ray_results").resolve())


# Ray Train's callbacks a local run does without, by class name: the placement-group cleaner (a
# detached actor that asks the State API, served by the dashboard a local run does not start, once
# a second whether the controller is alive: every query fails with a warning, and the cluster ends
# with the job anyway) and the Prometheus metrics of controller and workers (nothing scrapes them).
_LOCAL_DROPPED_CALLBACKS = frozenset(
    {"PlacementGroupCleanerCallback", "ControllerMetricsCallback", "WorkerMetricsCallback"}
)


def _trainer_class(local: bool, single_cpu_worker: bool = False):
    """The trainer of a job: ``TorchTrainer``, slimmed down on a cluster the job started itself.

    A local trainer drops :data:`_LOCAL_DROPPED_CALLBACKS`; the Ray Data callback where the job
    passes no Ray Dataset (it starts a ``DatasetManager`` actor, a process of its own); and Ray
    Train's requests to the autoscaling coordinator (another actor; a local cluster has no
    autoscaler). With one CPU worker there is no process group to set up: the trainer is Ray
    Train's ``DataParallelTrainer`` with the plain backend, so that the Ray Train controller, which
    unpickles the backend, does not import torch (about 300 MB and seconds of start-up).
    """
    from ray.train.torch import TorchTrainer

    if not local:
        return TorchTrainer
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    base = DataParallelTrainer if single_cpu_worker else TorchTrainer

    class LocalTrainer(base):  # type: ignore[valid-type,misc]
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            drop = set(_LOCAL_DROPPED_CALLBACKS) | ({"DatasetsCallback"} if not self.datasets else set())
            return [cb for cb in callbacks if type(cb).__name__ not in drop]

        def _initialize_and_run_controller(self, **kwargs):
            kwargs["scaling_policy"] = _local_scaling_policy(kwargs["scaling_policy"])
            return super()._initialize_and_run_controller(**kwargs)

    LocalTrainer.__name__ = LocalTrainer.__qualname__ = f"Local{base.__name__}"
    return LocalTrainer


def _local_scaling_policy(policy):
    """``policy`` (Ray Train's fixed scaling policy) without its resource requests to the autoscaling
    coordinator, which would start the coordinator actor; any other policy unchanged."""
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy

    if type(policy) is not FixedScalingPolicy:
        return policy

    class LocalFixedScalingPolicy(FixedScalingPolicy):
        def after_controller_start(self, train_run_context) -> None:
            pass

        def _maybe_send_resource_request(self) -> None:
            pass

        def _send_resource_request(self) -> None:
            pass

        def _cancel_resource_request(self) -> None:
            pass

    return LocalFixedScalingPolicy(policy.scaling_config)


# A lost worker (killed, out of memory, node gone) is replaced and training resumes from the last
# checkpoint, this many times per job; Ray Train retries a failing training function as well.
DEFAULT_MAX_FAILURES = 1


def max_failures() -> int:
    """Worker-group failures Ray Train recovers from in one job (``SHAPEBIAS_MAX_FAILURES`` overrides)."""
    return int(os.environ.get("SHAPEBIAS_MAX_FAILURES") or DEFAULT_MAX_FAILURES)


def make_trainer(
    train_loop, loop_config: dict, *, run_id: str, storage_path: str, num_workers: int, env_vars: dict[str, str]
):
    """The trainer of one job (:func:`_trainer_class`), and a description of where it runs (for the run's tags).

    The trainer's name is the MLflow run id, so a job started again on the same run (a retried
    RayJob, a resubmitted driver) finds its checkpoints under ``<storage>/<run id>`` and resumes.
    Ray pins a worker to one CPU (``OMP_NUM_THREADS=1``); on a local CPU-only run each worker is
    given ``cpus // num_workers`` instead, passed on as ``loop_config["threads"]``.
    """
    import ray
    from ray.train import BackendConfig, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

    resources = ray.cluster_resources()
    check_workers(num_workers, resources)
    use_gpu = resources.get("GPU", 0) >= num_workers
    local_cpu = not use_gpu and not os.environ.get("RAY_ADDRESS")
    threads = max(1, int(resources.get("CPU", 1)) // num_workers) if local_cpu else 1
    local = not os.environ.get("RAY_ADDRESS")
    single_cpu_worker = local_cpu and num_workers == 1
    backend = {"backend_config": BackendConfig()} if single_cpu_worker else {}
    trainer = _trainer_class(local, single_cpu_worker)(
        train_loop,
        train_loop_config={**loop_config, "threads": threads},
        **backend,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": threads}),
        run_config=RunConfig(
            name=run_id,
            storage_path=storage_location(storage_path),
            failure_config=FailureConfig(max_failures=max_failures()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": {**_worker_env(), **env_vars}},
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    device = f"{'cuda' if use_gpu else 'cpu'} x{num_workers} ray worker{'s' if num_workers > 1 else ''}"
    return trainer, device
