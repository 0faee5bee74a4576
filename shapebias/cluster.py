"""``shapebias submit``: run an experiment on Kubernetes as a KubeRay RayJob.

    shapebias submit EXPERIMENT [-P key=value ...] [--namespace NS] [--context CTX]
                     [--release NAME] [--template FILE] [--name NAME] [--dry-run] [--wait]

The RayJob comes from the chart (``deploy/helm/shapebias``): its ConfigMap ``<release>-rayjobs``
holds one RayJob template per experiment, rendered with the cluster's values (image, GPU node
pool, Secrets, S3). ``submit`` reads that template in the current kube context and namespace,
gives the RayJob a fresh name, puts the parameters into its entry point and creates it with the
kubernetes client (``CustomObjectsApi``); ``--dry-run`` prints it instead, and ``--wait``
follows its status to the end and prints the MLflow run's address.

Parameters are MLproject's: ``-P`` takes the same names as ``mlflow run . -e EXPERIMENT -P ...``
and the job gets the same flags, because the command line is built from MLproject's command.

In the cluster the RayJob's entry point is ``python -m shapebias.cluster driver EXPERIMENT
--job-name NAME -P ...`` (see :func:`driver_main`): it finds or creates the MLflow run of this
RayJob (tag ``shapebias.rayjob``), so that a retried RayJob (``backoffLimit``) resumes the same
run, and passes ``--storage-path $SHAPEBIAS_RAY_STORAGE`` (``s3://<bucket>/ray``); the jobs use
the MLflow run id as the Ray Train run name (``RunConfig(name=run_id, storage_path=...)``), so
checkpoints live in ``s3://<bucket>/ray/<run id>`` and the retry resumes from the last one.

The parameters and the RayJob body come from :mod:`shapebias.rayjob`, the Kubernetes API calls
from :mod:`shapebias.kube`; this module holds the two commands.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from shapebias.errors import ConfigError
from shapebias.kube import create_rayjob, fetch_template, kube_client, wait_rayjob
from shapebias.rayjob import (
    DEFAULT_RELEASE,
    EXPERIMENTS,
    RAYJOB_TAG,
    STORAGE_ENV,
    check_experiment,
    check_name,
    job_args,
    job_name,
    load_template_file,
    mlproject_path,
    parse_params,
    render,
)
from shapebias.settings import REPO_ROOT


def mlflow_run_address(job: str, tracking_uri: str | None, experiment_name: str) -> str:
    """The MLflow UI address of the run that a RayJob's driver created (tag shapebias.rayjob)."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        try:
            from mlflow.tracking import MlflowClient

            mlc = MlflowClient(tracking_uri)
            exp = mlc.get_experiment_by_name(experiment_name)
            if exp is not None:
                runs = mlc.search_runs([exp.experiment_id], f"tags.`{RAYJOB_TAG}` = '{job}'", max_results=1)
                if runs:
                    run = runs[0].info
                    return f"{tracking_uri.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
        except Exception as exc:  # noqa: BLE001 - the job's outcome matters more than this look-up
            return f"(could not query MLflow at {tracking_uri}: {exc}); find the run with tag {RAYJOB_TAG}={job}"
        return f"no MLflow run tagged {RAYJOB_TAG}={job} in experiment {experiment_name} at {tracking_uri}"
    return (
        f"the run tagged {RAYJOB_TAG}={job} in MLflow experiment {experiment_name}: set MLFLOW_TRACKING_URI "
        "(e.g. kubectl port-forward svc/<release>-mlflow 5000:5000, then http://localhost:5000) to get its address"
    )


# ----------------------------------------------------------------------------- commands


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shapebias submit",
        description="Submit an experiment to Kubernetes as a KubeRay RayJob (MLproject parameters with -P).",
    )
    p.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    p.add_argument(
        "-P",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an MLproject parameter of the experiment (repeatable)",
    )
    p.add_argument("--namespace", "-n", default=None, help="namespace (default: the kube context's, else default)")
    p.add_argument("--context", default=None, help="kube context (default: the current one)")
    p.add_argument("--release", default=DEFAULT_RELEASE, help="the chart's release name (default: %(default)s)")
    p.add_argument(
        "--template",
        type=Path,
        default=None,
        help="a RayJob YAML to start from instead of the chart's ConfigMap (e.g. manifests/rayjob-*.yaml)",
    )
    p.add_argument("--name", default=None, help="RayJob name (default: <release>-<experiment>-<random>)")
    p.add_argument("--dry-run", action="store_true", help="print the RayJob as YAML and create nothing")
    p.add_argument("--wait", action="store_true", help="follow the RayJob to the end; print the MLflow run's address")
    p.add_argument(
        "--poll", type=float, default=10.0, help="seconds between status checks with --wait (default: %(default)s)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="give up waiting after this many seconds, 0: never (default: %(default)s)",
    )
    p.add_argument(
        "--mlflow-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow address reachable from here, to look the run up after --wait",
    )
    return p


def submit_main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_experiment(args.experiment)
    params = parse_params(args.param)
    # With MLproject at hand (a checkout, the image, SHAPEBIAS_MLPROJECT) unknown or bad parameters
    # fail before the cluster is touched; an installed shapebias without it leaves the check to the
    # RayJob's driver, which runs in the training image.
    check = mlproject_path().is_file()
    if check:
        job_args(args.experiment, params, require_all=False)
    else:
        print(
            f"note: no MLproject at {mlproject_path()}: the parameters are checked by the RayJob's driver "
            "in the cluster (set SHAPEBIAS_MLPROJECT to check them here)",
            file=sys.stderr,
        )
    name = check_name(args.name) if args.name else job_name(args.release, args.experiment)

    api = None
    namespace = args.namespace
    if args.template is not None:
        template = load_template_file(args.template, args.experiment)
        if not args.dry_run:
            api, ctx_ns = kube_client(args.context)
            namespace = namespace or ctx_ns
    else:
        try:
            api, ctx_ns = kube_client(args.context)
        except ConfigError as exc:
            if not args.dry_run:
                raise
            raise ConfigError(
                f"{exc}; a dry run without a cluster needs --template FILE (e.g. a checkout's "
                f"manifests/rayjob-{args.experiment.replace('_', '-')}.yaml)"
            ) from None
        namespace = namespace or ctx_ns
        template = fetch_template(api, namespace, args.release, args.experiment)
    namespace = namespace or template.get("metadata", {}).get("namespace") or "default"
    body = render(template, args.experiment, params, name, namespace, check=check)

    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
        return 0
    create_rayjob(api, namespace, body)
    print(f"created RayJob {name} in namespace {namespace}")
    print(f"  follow it:  kubectl -n {namespace} get rayjob {name} -w")
    if not args.wait:
        return 0
    final = wait_rayjob(api, namespace, name, args.poll, args.timeout)
    status = final.get("status") or {}
    ok = status.get("jobStatus") == "SUCCEEDED"
    print(f"RayJob {name}: {status.get('jobDeploymentStatus')}, job {status.get('jobStatus')}")
    env = {
        e.get("name"): e.get("value")
        for e in body["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    print("MLflow run:", mlflow_run_address(name, args.mlflow_uri, env.get("MLFLOW_EXPERIMENT_NAME") or "shapebias"))
    return 0 if ok else 1


def find_or_create_run(job: str, experiment: str) -> str:
    """The MLflow run of RayJob ``job``: the one tagged with its name, else a new one."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from shapebias.tracking import TASK_TAG

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "shapebias")
    exp = mlflow.set_experiment(name)
    mlc = MlflowClient()
    runs = mlc.search_runs(
        [exp.experiment_id], f"tags.`{RAYJOB_TAG}` = '{job}'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if runs:
        return runs[0].info.run_id
    run = mlc.create_run(exp.experiment_id, run_name=job, tags={RAYJOB_TAG: job, TASK_TAG: experiment})
    return run.info.run_id


def driver_main(argv: list[str] | None) -> int:
    """In the RayJob: resolve the MLflow run and Ray Train storage, then run the job module."""
    p = argparse.ArgumentParser(prog="python -m shapebias.cluster driver")
    p.add_argument("experiment")
    p.add_argument("--job-name", required=True)
    p.add_argument("-P", "--param", action="append", default=[])
    args = p.parse_args(argv)
    argv_job = job_args(args.experiment, parse_params(args.param))
    run_id = find_or_create_run(args.job_name, args.experiment)
    env = dict(os.environ, MLFLOW_RUN_ID=run_id)
    storage_root = os.environ.get(STORAGE_ENV, "").rstrip("/")
    if "--storage-path" in argv_job and storage_root:
        at = argv_job.index("--storage-path") + 1
        if not argv_job[at]:  # an explicit -P storage_path=... wins
            # the jobs name the Ray Train run after the MLflow run: checkpoints land in <root>/<run id>
            argv_job[at] = storage_root
    command = [sys.executable, "-m", f"training.{args.experiment}", *argv_job]
    print(f"shapebias driver: RayJob {args.job_name} -> MLflow run {run_id}", flush=True)
    print("shapebias driver:", shlex.join(command), flush=True)
    return subprocess.run(command, env=env, cwd=REPO_ROOT).returncode


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "driver":
        return driver_main(argv[1:])
    return submit_main(argv)


def main(argv: list[str] | None = None) -> int:
    from shapebias.tracking import cli_main

    return cli_main(_main)(argv)


if __name__ == "__main__":
    sys.exit(main())
