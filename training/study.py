"""The synthetic shape-bias study as one command: every variant x seed a Ray task, an MLflow child run of
one parent run, and the study's table, verdicts and plots logged to the parent.

    python -m training.reproduce synthetic [--where local|auto|ray://HEAD:10001] [--experiment NAME]
                                           [--seeds 0,1,...] [--dry-run]
    python -m training.study [--variants synthetic.none,synthetic.topk.10] [--set epochs=1,image_size=16]
    mlflow run . -e synthetic_study --env-manager local

The variants are the ``synthetic.*`` protocols (``shapebias protocols synthetic``), the seeds
0..7 unless narrowed. Each run trains ResNet-18 in one Ray task (one CPU, one thread) with the
training job's own pieces (``training.train_resnet``: ``build_model``, ``build_data``,
``train_epoch``, ``evaluate``) but without a Ray Train worker group, whose start-up would cost more
than a run; the benchmark is rendered once per seed and shared through Ray's object store. The
driver logs each finished run as a child of the study's parent run (same params, metrics and
protocol tags as a ``train_resnet`` run) as soon as it comes back.

Resuming: the parent is the experiment's study run with the same ``--set`` overrides; a variant
x seed is done when a FINISHED child has its settings fingerprint and seed. Only the rest is
launched, so a second invocation launches nothing and rebuilds the same table. ``--where inline``
runs the same runs one after another in this process, without Ray. ``--set`` changes
protocol settings: its runs are off-protocol (tagged so) and form a study of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shapebias import protocols, settings
from shapebias.errors import ConfigError
from shapebias.protocols import synthetic
from shapebias.tracking import ERROR_TAG, TASK_TAG, cli_main, flatten, git_commit, provenance_tags
from training import cliargs
from training.cliargs import unquote
from training.train_resnet import TASK, Config

if TYPE_CHECKING:  # the report (pandas) is imported where it is used: --help answers without it
    from shapebias.report.runs import Run

STUDY_TAG = "shapebias.study"  # "synthetic" on the parent and its children
OVERRIDES_TAG = "shapebias.study_overrides"  # the --set text that identifies a parent ("" = the protocols)
PARENT_TASK = "synthetic_study"  # the parent's shapebias.task (shapebias/tasks.py)
FIXED = ("seed", "protocol")  # what --set may not change
SMOKE = {"epochs": 1, "synthetic_train_per_class": 4, "synthetic_test_per_class": 4, "image_size": 16}
RAY_EXCLUDES = [".venv", ".git", "mlruns", ".ray_results", "*.db", "shared", ".tools"]


@dataclasses.dataclass(frozen=True)
class Planned:
    """One variant x seed of the study: its protocol, configuration and settings fingerprint."""

    protocol: str
    cfg: Config
    fingerprint: str

    @property
    def key(self) -> tuple[str, str]:
        return self.fingerprint, str(self.cfg.seed)

    def label(self) -> str:
        return f"{self.protocol} seed={self.cfg.seed}"


# --- the plan ----------------------------------------------------------------------------------


def parse_overrides(text: str) -> dict[str, Any]:
    """``"epochs=1,image_size=16"`` -> typed Config values; a ConfigError names a bad key or value."""
    fields = {f.name: f for f in dataclasses.fields(Config) if f.name not in FIXED}
    out: dict[str, Any] = {}
    for part in (p.strip() for p in unquote(text).split(",") if p.strip()):
        key, eq, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in fields:
            raise ConfigError(f"set={part!r} is not accepted; use KEY=VALUE with KEY one of: {', '.join(fields)}")
        kind = {"int": int, "float": float}.get(str(fields[key].type), str)
        try:
            out[key] = kind(float(value)) if kind is int else kind(value.strip())
        except ValueError:
            raise ConfigError(f"set={part!r}: {value.strip()!r} is not a number") from None
    return out


def overrides_text(overrides: Mapping[str, Any]) -> str:
    from shapebias.report.runs import canonical_value

    return ",".join(f"{k}={canonical_value(v)}" for k, v in sorted(overrides.items()))


def variant_names(text: str = "") -> list[str]:
    """The study's protocols (all ``synthetic.*`` unless named); a ConfigError for any other name."""
    known = [p.name for p in protocols.for_table(synthetic.TABLE)]
    wanted = [v.strip() for v in unquote(text).split(",") if v.strip()] or known
    bad = [v for v in wanted if v not in known]
    if bad:
        raise ConfigError(f"variants={','.join(bad)!r} is not accepted; the study's variants are {', '.join(known)}")
    return wanted


def seed_list(text: str = "") -> list[int]:
    values = [v.strip() for v in unquote(text).split(",") if v.strip()] or list(synthetic.SEEDS)
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise ConfigError(f"seeds={text!r} is not accepted; use comma-separated integers such as 0,1,2") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"seeds={text!r} is not accepted; use distinct non-negative integers")
    return seeds


def plan(variants: Sequence[str], seeds: Sequence[int], overrides: Mapping[str, Any]) -> list[Planned]:
    """Every variant x seed: Config defaults, the protocol's settings, then ``overrides``."""
    out = []
    for name in variants:
        for seed in seeds:
            values = protocols.resolve(TASK, dataclasses.asdict(Config()), name, overrides)
            cfg = Config(**{**values, "seed": seed, "protocol": name}).validate()
            check = protocols.check(TASK, name, dataclasses.asdict(cfg))
            out.append(Planned(name, cfg, check.fingerprint))
    return out


# --- one run (the body of a Ray task) ---------------------------------------------------------


def render(cfg: dict[str, Any]):
    """The synthetic benchmark of a configuration (its seed), rendered once and shared by the variants."""
    from training.train_resnet import build_data

    return build_data(Config(**cfg))


def train(cfg: dict[str, Any], data) -> dict[str, Any]:
    """Train and evaluate one run in this process on one thread; per-epoch history, final metrics, timing."""
    import torch
    from torch.utils.data import DataLoader

    from shapebias.models.resnet import sgd
    from training.train_resnet import build_model, cosine_lr, data_fingerprint, evaluate, train_epoch

    wall0, cpu0 = time.perf_counter(), time.process_time()
    c = Config(**cfg)
    torch.set_num_threads(1)
    torch.manual_seed(c.seed)
    device = torch.device("cpu")
    model = build_model(c, data["train"].num_classes)
    optimizer = sgd(model, c.model_spec, c.lr)
    history = []
    for epoch in range(c.epochs):
        lr = cosine_lr(c.lr, epoch, c.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.Generator().manual_seed(c.seed * 100003 + epoch)  # as train_resnet's single worker
        loader = DataLoader(data["train"], batch_size=c.batch_size, shuffle=True, generator=order)
        loss, acc = train_epoch(model, loader, optimizer, device, progress=False)
        history.append({"train_loss": loss, "train_acc": acc, "lr": lr})
    metrics = evaluate(model, {k: v for k, v in data.items() if k != "train"}, device)
    return {
        "history": history,
        "metrics": metrics,
        "data_fingerprint": data_fingerprint(c, data),
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.perf_counter() - wall0,
    }


# --- tracking ------------------------------------------------------------------------------------


def to_run(r) -> Run:
    from shapebias.report.runs import Run

    return Run(
        run_id=r.info.run_id,
        params=dict(r.data.params),
        metrics=dict(r.data.metrics),
        tags=dict(r.data.tags),
        status=r.info.status,
        start_time=r.info.start_time or 0,
        run_name=r.info.run_name or "",
    )


def find_parent(client, experiment_id: str, overrides: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{synthetic.TABLE}'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    return next(
        (
            r
            for r in runs
            if r.data.tags.get(OVERRIDES_TAG, "") == overrides and r.data.tags.get(TASK_TAG) == PARENT_TASK
        ),
        None,
    )


def children(client, experiment_id: str, parent_id: str) -> list[Run]:
    from shapebias.report.runs import PARENT_TAG

    out, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=1000, page_token=token
        )
        out += [to_run(r) for r in page]
        token = page.token
        if not token:
            return out


def done_runs(planned: Sequence[Planned], runs: Sequence[Run]) -> dict[tuple[str, str], Run]:
    """Planned key -> the earliest FINISHED child with that fingerprint, seed and every study metric."""
    from shapebias.report.runs import STUDY, canonical_value

    wanted = {p.key for p in planned}
    out: dict[tuple[str, str], Run] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        key = (run.tags.get(protocols.FINGERPRINT_TAG, ""), canonical_value(run.params.get("seed", "")))
        if run.status == "FINISHED" and key in wanted and all(m in run.metrics for m in STUDY.metrics):
            out.setdefault(key, run)
    return out


def log_child(
    client, experiment_id: str, parent_id: str, p: Planned, result: Mapping[str, Any] | None, error: str = ""
) -> str:
    """One finished (or failed) run of the study, logged from the driver with the train_resnet schema."""
    from mlflow.entities import Metric, Param

    from shapebias.report.runs import PARENT_TAG

    params = dataclasses.asdict(p.cfg)
    check = protocols.check(TASK, p.protocol, params)
    tags = {
        TASK_TAG: TASK,
        PARENT_TAG: parent_id,
        STUDY_TAG: synthetic.TABLE,
        **protocols.run_tags(check),
        "shapebias.device": "cpu x1 ray task",
        "shapebias.git_commit": git_commit(),
    }
    if result:
        tags["shapebias.data_fingerprint"] = result["data_fingerprint"]
    run = client.create_run(experiment_id, run_name=p.cfg.run_name(), tags=tags)
    rid, now = run.info.run_id, int(time.time() * 1000)
    metrics = []
    if result:
        for step, point in enumerate(result["history"]):
            metrics += [Metric(k, float(v), now, step) for k, v in point.items()]
        last = len(result["history"]) - 1
        metrics += [Metric(k, float(v), now, last) for k, v in result["metrics"].items()]
        metrics += [Metric("train_cpu_s", result["cpu_s"], now, 0), Metric("train_wall_s", result["wall_s"], now, 0)]
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in flatten(params).items()])
    if error:
        client.set_tag(rid, ERROR_TAG, error[:4000])
    client.set_terminated(rid, "FAILED" if error else "FINISHED")
    return rid


# --- launching -----------------------------------------------------------------------------------


def init(where: str) -> None:
    """Start Ray here (``local``; joins ``RAY_ADDRESS`` where set), or join ``auto`` / ``ray://HEAD:10001``."""
    import ray

    from training.raytools import init_ray

    if ray.is_initialized():
        return
    if where == "local":
        init_ray({})
        return
    ray.init(address=where, runtime_env={"working_dir": str(settings.REPO_ROOT), "excludes": RAY_EXCLUDES})


def data_key(cfg: Config) -> tuple:
    """What the rendered benchmark depends on: runs with the same key share it."""
    return cfg.seed, cfg.synthetic_classes, cfg.synthetic_train_per_class, cfg.synthetic_test_per_class, cfg.image_size


def launch_inline(todo: Sequence[Planned], on_result: Callable[[Planned, dict | None, str], None]) -> None:
    """``--where inline``: the same runs one after another in this process (no Ray)."""
    data: dict[tuple, Any] = {}
    for p in todo:
        cfg = dataclasses.asdict(p.cfg)
        try:
            if data_key(p.cfg) not in data:
                data[data_key(p.cfg)] = render(cfg)
            result = train(cfg, data[data_key(p.cfg)])
        except Exception as exc:  # noqa: BLE001 - a failed run is logged FAILED; the others go on
            on_result(p, None, f"{type(exc).__name__}: {exc}")
            continue
        on_result(p, result, "")


def launch(todo: Sequence[Planned], where: str, on_result: Callable[[Planned, dict | None, str], None]) -> None:
    """Every planned run as a Ray task (one CPU each), the benchmark rendered once per data setting and seed."""
    if where == "inline":
        return launch_inline(todo, on_result)
    import ray

    init(where)
    render_task = ray.remote(num_cpus=1)(render)
    train_task = ray.remote(num_cpus=1, max_retries=0)(train)
    data_refs: dict[tuple, Any] = {}
    pending = {}
    for p in todo:
        cfg = dataclasses.asdict(p.cfg)
        if data_key(p.cfg) not in data_refs:
            data_refs[data_key(p.cfg)] = render_task.remote(cfg)
        pending[train_task.remote(cfg, data_refs[data_key(p.cfg)])] = p
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        p = pending.pop(ready[0])
        try:
            on_result(p, ray.get(ready[0]), "")
        except ray.exceptions.RayTaskError as exc:
            on_result(p, None, str(exc).strip().splitlines()[-1])


# --- the command ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="shapebias synthetic-study",
        description=__doc__.split("\n\n")[0],
        formatter_class=cliargs.DefaultsFormatter,
    )
    ap.add_argument("--experiment", default="synthetic-study", help="MLflow experiment of the study's runs")
    ap.add_argument("--seeds", default="", help="comma-separated seeds (default: 0..7)")
    ap.add_argument("--variants", default="", help="comma-separated synthetic.* protocols (default: all nine)")
    ap.add_argument(
        "--set",
        default="",
        dest="overrides",
        help="KEY=VALUE,... settings that replace the protocols' (off-protocol), e.g. epochs=1,image_size=16",
    )
    ap.add_argument(
        "--where",
        default="local",
        help="local (Ray here, or RAY_ADDRESS), auto, ray://HEAD:10001, or inline (this process, no Ray)",
    )
    ap.add_argument("--dry-run", nargs="?", const="true", default="false", help="say what is missing; launch nothing")
    ap.add_argument("--output-dir", default="", help="also keep the report here (default: a temporary folder)")
    ap.add_argument("--tracking-uri", default="", help="default: MLFLOW_TRACKING_URI")
    return ap.parse_args(argv)


def truthy(value: str) -> bool:
    v = unquote(value).lower()
    if v not in ("true", "1", "yes", "false", "0", "no", ""):
        raise ConfigError(f"dry_run={value!r} is not accepted; use true or false")
    return v in ("true", "1", "yes")


def check_where(where: str) -> str:
    where = unquote(where) or "local"
    if where not in ("local", "auto", "inline") and not where.startswith("ray://"):
        raise ConfigError(
            f"where={where!r} is not accepted; use local, auto, ray://HEAD:10001 (the study's tasks "
            "join a Ray cluster through the Ray client) or inline (this process, no Ray)"
        )
    return where


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = parse_overrides(args.overrides)
    planned = plan(variant_names(args.variants), seed_list(args.seeds), overrides)
    return run_study(
        planned,
        overrides_text(overrides),
        args.experiment,
        check_where(args.where),
        truthy(args.dry_run),
        args.output_dir,
        unquote(args.tracking_uri),
    )


def run_study(
    planned: Sequence[Planned],
    overrides: str,
    experiment: str,
    where: str = "local",
    dry: bool = False,
    output_dir: str = "",
    tracking_uri: str = "",
) -> int:
    """Launch what the plan is missing, log each run as it finishes, then the table to the parent."""
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    parent = find_parent(client, exp.experiment_id, overrides) if exp else None
    done = done_runs(planned, children(client, exp.experiment_id, parent.info.run_id) if parent else [])
    todo = [p for p in planned if p.key not in done]
    print(
        f"synthetic study: {len(planned)} runs ({len({p.protocol for p in planned})} variants x "
        f"{len({p.cfg.seed for p in planned})} seeds) in experiment {experiment!r} ({client.tracking_uri}): "
        f"{len(done)} done, {len(todo)} to launch" + (f"; settings changed: {overrides}" if overrides else "")
    )
    if dry:
        for p in todo:
            print(f"  would launch {p.label()}: {' '.join(protocols.flags(dataclasses.asdict(p.cfg)))}")
        return 0
    experiment_id = exp.experiment_id if exp else client.create_experiment(experiment)
    if parent is None:
        tags = {
            TASK_TAG: PARENT_TASK,
            STUDY_TAG: synthetic.TABLE,
            OVERRIDES_TAG: overrides,
            **provenance_tags(),
            "mlflow.runName": "synthetic study" + (f" [{overrides}]" if overrides else ""),
        }
        parent = _adopted(client, experiment_id) or client.create_run(experiment_id)
        for key, value in tags.items():
            client.set_tag(parent.info.run_id, key, value)
        client.log_param(parent.info.run_id, "overrides", overrides)
    parent_id = parent.info.run_id
    client.update_run(parent_id, status="RUNNING")
    failed: list[str] = []
    t0 = time.perf_counter()

    def on_result(p: Planned, result: dict | None, error: str) -> None:
        run_id = log_child(client, experiment_id, parent_id, p, result, error)
        if error:
            failed.append(p.label())
            print(f"  FAILED {p.label()} (run {run_id}): {error}", flush=True)
            return
        m = result["metrics"]
        print(
            f"  done {p.label()}: shape_bias={m['shape_bias']:.3f} test_acc={m['test_acc']:.3f} "
            f"stylized_acc={m['stylized_acc']:.3f} ({result['cpu_s']:.1f} CPU-s)",
            flush=True,
        )

    try:
        if todo:
            launch(todo, where, on_result)
        wall = time.perf_counter() - t0
        runs = list(done_runs(planned, children(client, experiment_id, parent_id)).values())
        report = log_report(client, parent_id, runs, output_dir)
        client.log_metric(parent_id, "runs_launched", len(todo))
        client.log_metric(parent_id, "runs_done", len(runs))
        client.log_metric(parent_id, "launch_wall_s", wall)
    except BaseException as exc:
        client.set_tag(parent_id, ERROR_TAG, f"{type(exc).__name__}: {exc}"[:4000])
        client.set_terminated(parent_id, "FAILED")
        raise
    if failed:
        client.set_tag(parent_id, ERROR_TAG, f"{len(failed)} run(s) failed: {', '.join(failed)}"[:4000])
    elif ERROR_TAG in client.get_run(parent_id).data.tags:  # an earlier invocation's failure is mended
        client.delete_tag(parent_id, ERROR_TAG)
    client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    print(
        f"launched {len(todo)} run(s) in {wall:.0f} s; {len(failed)} failed"
        + (": rerun the same command to retry them" if failed else "")
    )
    print(f"study parent run {parent_id}: table, verdicts and plots under study/ ({len(report.sections)} table(s))")
    return 1 if failed else 0


def _adopted(client, experiment_id: str):
    """The run that ``mlflow run`` created for this entry point, when it is in the study's experiment."""
    run_id = os.environ.get("MLFLOW_RUN_ID", "")
    run = client.get_run(run_id) if run_id else None
    return run if run is not None and run.info.experiment_id == experiment_id else None


def log_report(client, parent_id: str, runs: Sequence[Run], output_dir: str = ""):
    """The study's report (text printed; Markdown, HTML, CSV, plots logged under ``study/`` of the parent)."""
    from shapebias.report import render_text, write_outputs
    from shapebias.report.build import build_study_report

    report = build_study_report(runs)
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="shapebias-study-"))
    header = [f"synthetic study: {len(runs)} runs"]
    write_outputs(report, out, header)
    client.log_artifacts(parent_id, str(out), artifact_path="study")
    print(render_text(report, header))
    return report


if __name__ == "__main__":
    sys.exit(main())
