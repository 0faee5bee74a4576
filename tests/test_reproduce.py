"""`reproduce`: the grid of a table, what is missing in a store, and launching only that."""

from __future__ import annotations

import re

import pytest
from test_compare import log_runs  # tests/ is on sys.path (no __init__.py)

from shapebias import protocols
from shapebias.errors import ConfigError
from shapebias.report import Run
from training import reproduce


def resnet_run(spec, sparsity, ds, seed, status="FINISHED", metrics=None, tags=None, run_id="", **changes) -> Run:
    """A run of a Table 1 protocol (with ``changes`` to its settings: then off-protocol)."""
    name = f"table1.{spec}.{sparsity}.{ds}"
    settings = {
        **protocols.get(name).values(),
        "stem_stride": "2.0",
        "seed": f"{seed}.0",
        "protocol": name,
        "data_dir": "/data/imagenet",
        **{k: str(v) for k, v in changes.items()},
    }
    return Run(
        run_id or f"{spec}-{sparsity}-{ds}-{seed}",
        settings,
        {"test_acc": 0.8, "stylized_acc": 0.6} if metrics is None else metrics,
        {"shapebias.task": "train_resnet", "shapebias.protocol": name, **(tags or {})},
        status=status,
    )


def test_grids_are_the_seed_reports():
    assert len(reproduce.grid("table1")) == 2 * 3 * 4 * 3
    assert len(reproduce.grid("table2")) == 4 * 3 + 2 * 4
    assert len(reproduce.grid("shape_bias")) == (1 + 6 + 6) + (1 + 6)
    assert len(reproduce.grid("table1", seeds=["0"], datasets=["IN-S1"])) == 6
    with pytest.raises(ConfigError, match="synthetic has no protocol; the published ones are IN-S1"):
        reproduce.grid("table1", datasets=["synthetic"])


def test_empty_store_dry_run_spells_out_every_protocol_setting(mlflow_store, capsys):
    assert reproduce.main(["table1", "--dry-run", "--experiment", "empty"]) == 0
    out = capsys.readouterr().out
    assert "72 cells x seeds" in out and "0 done, 72 missing, 0 unfinished" in out
    launches = re.findall(r"^would launch: (.+)$", out, re.M)
    assert len(launches) == 72
    for line in launches:
        assert re.search(r"--protocol table1\.(code|paper)\.\w+\.IN-S\d ", line)
        for flag in ("--stem-stride 2", "--epochs 50", "--batch-size 32", "--lr 0.1", "--num-workers 1"):
            assert flag in line, (flag, line)
    assert sum("--topk 0.2 --topk-layers layer2" in line for line in launches) == 48


def test_finished_runs_off_protocol_never_count_as_done(mlflow_store, capsys):
    off = [resnet_run("code", "topk", "IN-S1", seed, run_id=f"short-{seed}", epochs=1) for seed in (0, 1, 2)]
    unclaimed = Run(
        "laptop",
        {**dict(off[0].params), "protocol": "", "epochs": "50"},
        off[0].metrics,
        {"shapebias.task": "train_resnet"},
    )
    log_runs(mlflow_store, "short", [*off, unclaimed])
    assert reproduce.main(["table1", "--dry-run", "--experiment", "short"]) == 0
    out = capsys.readouterr().out
    assert "0 done, 72 missing, 0 unfinished" in out
    assert "note: 4 FINISHED train_resnet run(s) count for no cell" in out


def test_dry_run_lists_exactly_the_missing_cells(mlflow_store, capsys):
    have = [
        resnet_run(spec, sp, ds, seed)
        for spec in ("code", "paper")
        for sp in ("none", "topk", "topk_mean")
        for ds in ("IN-S1",)
        for seed in (0, 1, 2)
    ]
    have = [r for r in have if r.run_id != "paper-topk_mean-IN-S1-2"]
    bad = [
        resnet_run("code", "none", "IN-S4", 0, status="FAILED"),  # unfinished: resume
        resnet_run("code", "topk", "IN-S4", 0, metrics={"test_acc": 0.8}),  # no stylized_acc
        resnet_run("paper", "none", "IN-S4", 0, tags={"shapebias.weights": "random"}),
        Run("other", {"dataset": "jeep"}, {"fid": 50.0}, {"shapebias.task": "train_fastgan"}),
    ]
    log_runs(mlflow_store, "grid", have + bad)
    assert reproduce.main(["table1", "--dry-run", "--experiment", "grid"]) == 0
    out = capsys.readouterr().out
    listed = set(re.findall(r"^  (?:missing|unfinished) +(.+?)(?: \(run \w+ did not finish: resume\))?$", out, re.M))
    expected = {
        f"table1.{spec}.{sp}.{ds} seed={seed}"
        for spec in ("code", "paper")
        for sp in ("none", "topk", "topk_mean")
        for ds in ("IN-S2", "IN-S3", "IN-S4")
        for seed in (0, 1, 2)
    }
    expected.add("table1.paper.topk_mean.IN-S1 seed=2")
    assert listed == expected
    assert "72 cells x seeds" in out and f"{72 - len(expected)} done" in out and "1 unfinished" in out
    assert out.count("would launch: python -m training.train_resnet") == len(expected)
    assert re.search(
        r"--protocol table1.code.none.IN-S4 --model-spec code --stem-stride 2 --sparsity none --dataset IN-S4 "
        r"--epochs 50 --batch-size 32 --lr 0.1 --num-workers 1 --seed 0 +\[MLFLOW_RUN_ID=\w+\]",
        out,
    )


def test_local_launch_is_idempotent_after_an_interruption(mlflow_store, monkeypatch, capsys):
    """First pass: one job is interrupted; second: only it is relaunched (resuming its run); third: nothing."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    calls = []
    interrupt = {"--sparsity topk_mean"}

    def fake_call(cmd, cwd, env):
        assert "MLFLOW_RUN_ID" not in env or env["MLFLOW_RUN_ID"]
        args = cmd[3:]
        calls.append((" ".join(args), env.get("MLFLOW_RUN_ID", "")))
        params = {args[i][2:].replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
        if env.get("MLFLOW_RUN_ID"):
            run_id = env["MLFLOW_RUN_ID"]
        else:
            run_id = client.create_run(env["MLFLOW_EXPERIMENT_ID"], tags={"shapebias.task": "train_resnet"}).info.run_id
            client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        if any(flag in " ".join(args) for flag in interrupt):
            client.set_terminated(run_id, "FAILED")
            return 130
        client.log_batch(run_id, metrics=[Metric("test_acc", 0.8, 0, 0), Metric("stylized_acc", 0.6, 0, 0)])
        client.set_terminated(run_id, "FINISHED")
        return 0

    monkeypatch.setattr(reproduce.subprocess, "call", fake_call)
    argv = ["table1", "--experiment", "live", "--seeds", "0", "--datasets", "IN-S1", "--scale", "smoke"]
    assert reproduce.main(argv) == 1
    assert len(calls) == 6 and all("--dataset synthetic --epochs 1" in c[0] for c in calls)
    failed = [c for c in calls if "topk_mean" in c[0]]
    assert len(failed) == 2
    calls.clear()
    interrupt.clear()
    assert reproduce.main(argv) == 0
    assert len(calls) == 2 and all("topk_mean" in c[0] and c[1] for c in calls)  # resumed the same runs
    calls.clear()
    assert reproduce.main(argv) == 0
    assert calls == [] and "nothing to launch" in capsys.readouterr().out
    exp = client.get_experiment_by_name("live").experiment_id
    assert len(client.search_runs([exp])) == 6  # resuming made no new runs


def test_ray_launch_skips_jobs_still_running(mlflow_store, monkeypatch, capsys):
    import ray.job_submission as js

    submitted = []

    class FakeJob:
        def __init__(self, metadata, status):
            self.metadata, self.status = metadata, status

    class FakeClient:
        live: list = []

        def __init__(self, address):
            assert address == "http://head:8265"

        def list_jobs(self):
            return FakeClient.live

        def submit_job(self, entrypoint, metadata, runtime_env):
            submitted.append((entrypoint, metadata, runtime_env))
            FakeClient.live.append(FakeJob(metadata, js.JobStatus.RUNNING))
            return f"raysubmit_{len(submitted)}"

    monkeypatch.setattr(js, "JobSubmissionClient", FakeClient)
    argv = ["shape_bias", "--where", "http://head:8265", "--experiment", "sb", "--levels", "0.1,0.2"]
    assert reproduce.main(argv) == 0
    entry = sorted(s[0] for s in submitted)
    job = "python -m training.shape_bias --protocol"
    assert entry == [
        f"{job} fig1.alexnet.complement.10,fig1.alexnet.complement.20 --model alexnet --sparsity complement "
        "--topk 0.1,0.2 --weights pretrained --limit 0",
        f"{job} fig1.alexnet.none --model alexnet --sparsity none --weights pretrained --limit 0",
        f"{job} fig1.alexnet.topk.10,fig1.alexnet.topk.20 --model alexnet --sparsity topk --topk 0.1,0.2 "
        "--weights pretrained --limit 0",
        f"{job} fig1.vgg16.none --model vgg16 --sparsity none --weights pretrained --limit 0",
        f"{job} fig1.vgg16.topk.10,fig1.vgg16.topk.20 --model vgg16 --sparsity topk --topk 0.1,0.2 "
        "--weights pretrained --limit 0",
    ]
    env = submitted[0][2]["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == mlflow_store and env["MLFLOW_EXPERIMENT_ID"] and "MLFLOW_RUN_ID" not in env
    assert reproduce.main(argv) == 0  # nothing finished yet, but everything is still running
    assert len(submitted) == 5 and capsys.readouterr().out.count("already running on the cluster") == 5


def test_table2_grid_and_bad_input(mlflow_store, tmp_path, capsys):
    cells = reproduce.grid("table2", datasets=["IN-S1-C5"])
    jobs = reproduce.jobs_for(reproduce.status(cells, []), data_root=str(tmp_path))
    args = jobs[-1].args
    assert args[:2] == ["--protocol", "table2.IN-S1-C5.topk15-noise"]
    assert args[-4:] == ["--data-dir", str(tmp_path / "IN-S1-C5"), "--seed", "0"]
    spelled = dict(zip(args[2:-4:2], args[3:-4:2], strict=True))
    assert spelled == {
        "--dataset": "IN-S1-C5",
        "--sparsity": "topk",
        "--topk": "0.15",
        "--noise-injection": "true",
        "--im-size": "256",
        "--iterations": "100000",
        "--batch-size": "8",
        "--width": "64",
        "--lr": "0.0002",
        "--ema-decay": "0.999",
        "--recon-loss": "lpips",
        "--fid-protocol": "authors",
        "--fid-every": "1000",
        "--fid-samples": "3000",
        "--fid-dims": "2048",
        "--rollback-patience": "10",
        "--perturb-g": "0.0001",
        "--perturb-d": "0",
    }
    table = [c.params for c in reproduce.grid("table2", datasets=["table"])]
    assert [dict(p).get("topk") for p in table] == [None, "0.15", "0.15"]  # the authors' script: 32_15
    assert reproduce.main(["table9", "--dry-run"]) == 2
    assert "table='table9' is not accepted" in capsys.readouterr().err
    assert reproduce.main(["table1", "--where", "somewhere"]) == 2
    assert "where='somewhere' is not accepted" in capsys.readouterr().err
    assert reproduce.main(["table1", "--dry-run", "maybe"]) == 2


@pytest.mark.parametrize("value,expected", [("true", True), ("False", False), ("", False), ("1", True)])
def test_truthy(value, expected):
    assert reproduce.truthy("dry_run", value) is expected
