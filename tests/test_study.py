"""The synthetic shape-bias study: its plan, its statistics and verdicts, and a miniature end to end."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from shapebias import protocols
from shapebias.errors import ConfigError
from shapebias.report import build_report
from shapebias.report.runs import Run
from shapebias.report.study import CLAIM_CLEAN, CLAIM_MEAN, CLAIM_SB, CLAIM_STYLIZED, interval, study_table
from shapebias.report.verdicts import decide
from training import study

TINY = {
    "synthetic_classes": 3,
    "synthetic_train_per_class": 4,
    "synthetic_test_per_class": 3,
    "image_size": 16,
    "epochs": 1,
    "batch_size": 6,
}


def test_the_full_plan_is_nine_variants_by_eight_seeds_on_protocol():
    planned = study.plan(study.variant_names(), study.seed_list(), {})
    assert len(planned) == 72 and len({p.key for p in planned}) == 72
    for p in planned:
        check = protocols.check("train_resnet", p.protocol, dataclasses.asdict(p.cfg))
        assert check.on_protocol and check.fingerprint == p.fingerprint
    dense = {p.fingerprint for p in planned if p.protocol == "synthetic.none"}
    assert len(dense) == 1  # the seed is not a setting


def test_set_makes_runs_off_protocol_and_bad_input_is_named():
    (p,) = study.plan(["synthetic.topk.20"], [3], study.parse_overrides("epochs=1,image_size=16"))
    assert (p.cfg.epochs, p.cfg.image_size, p.cfg.seed, p.cfg.topk) == (1, 16, 3, 0.2)
    check = protocols.check("train_resnet", p.protocol, dataclasses.asdict(p.cfg))
    assert not check.on_protocol and "epochs" in check.describe()
    with pytest.raises(ConfigError, match="nosuch"):
        study.parse_overrides("nosuch=1")
    with pytest.raises(ConfigError, match="seed"):
        study.parse_overrides("seed=1")
    with pytest.raises(ConfigError, match="table1.code.none.IN-S1"):
        study.variant_names("table1.code.none.IN-S1")
    with pytest.raises(ConfigError, match="seeds"):
        study.seed_list("0,x")
    with pytest.raises(ConfigError, match="where"):
        study.check_where("http://head:8265")


def test_interval_is_the_t_interval_of_the_mean_within_0_and_1():
    mean, low, high = interval(np.array([0.4, 0.5, 0.6]))
    half = 0.1 * 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 0.1
    assert mean == pytest.approx(0.5) and low == pytest.approx(0.5 - half) and high == pytest.approx(0.5 + half)
    assert math.isnan(interval(np.array([0.5]))[1])
    assert interval(np.array([0.9, 1.0, 1.0]))[2] == 1.0  # a fraction's interval ends at 100 %
    assert interval(np.array([0.0, 0.0, 0.1]))[1] == 0.0


def _run(i: int, sparsity: str, k: float, seed: int, shape_bias: float, stylized: float, clean: float = 0.9) -> Run:
    name = "synthetic.none" if sparsity == "none" else f"synthetic.{sparsity}.{k * 100:g}"
    params = {**protocols.get(name).values(), "seed": str(seed), "protocol": name}
    return Run(
        f"r{i}",
        params,
        {
            "shape_bias": shape_bias,
            "test_acc": clean,
            "stylized_acc": stylized,
            "cue_conflict_shape_acc": shape_bias / 2,
            "cue_conflict_texture_acc": 0.4,
        },
        {"shapebias.task": "train_resnet", "shapebias.protocol": name},
        start_time=i,
    )


def _runs(topk_shift: float, mean_shift: float, seeds: int = 5) -> list[Run]:
    """Dense, Top-K and Top-K mean at k=0.1 and 0.2; Top-K's shape bias and stylized accuracy moved by topk_shift."""
    rng = np.random.default_rng(0)
    out = []
    for seed in range(seeds):
        noise = lambda: float(rng.normal(0, 0.01))  # noqa: E731
        out.append(_run(len(out), "none", 0, seed, 0.10 + noise(), 0.30 + noise()))
        for k in (0.1, 0.2):
            out.append(_run(len(out), "topk", k, seed, 0.10 + topk_shift + noise(), 0.30 + topk_shift + noise()))
            out.append(
                _run(
                    len(out),
                    "topk_mean",
                    k,
                    seed,
                    0.10 + topk_shift + noise(),
                    0.30 + topk_shift + mean_shift + noise(),
                )
            )
    return out


def _verdicts(runs):
    table = decide(study_table(runs).verdicts)
    return {
        claim.text: list(table[table.claim == claim.text].verdict)
        for claim in (CLAIM_SB, CLAIM_STYLIZED, CLAIM_MEAN, CLAIM_CLEAN)
    }


def test_verdicts_follow_the_statistics():
    present = _verdicts(_runs(topk_shift=0.1, mean_shift=0.1))
    assert present[CLAIM_SB.text] == ["holds", "holds"]
    assert present[CLAIM_STYLIZED.text] == ["holds", "holds"]
    assert present[CLAIM_MEAN.text] == ["holds", "holds"]
    assert all(v != "holds" for v in present[CLAIM_CLEAN.text])  # equal clean accuracy
    absent = _verdicts(_runs(topk_shift=0.0, mean_shift=0.0))
    assert not any(v == "holds" for vs in absent.values() for v in vs)
    reversed_ = _verdicts(_runs(topk_shift=-0.1, mean_shift=-0.1))
    assert reversed_[CLAIM_SB.text] == ["contradicted (significant the other way)"] * 2


def test_table_rows_and_compare_report():
    runs = _runs(topk_shift=0.1, mean_shift=0.0, seeds=3)
    table = study_table(runs).sections[0]
    assert list(table.table.variant) == [
        "dense",
        "Top-K, k=10%",
        "Top-K, k=20%",
        "Top-K Mean Rpl., k=10%",
        "Top-K Mean Rpl., k=20%",
    ]
    assert set(table.table.n) == {3}
    dense = table.data.iloc[0]
    mean, low, high = interval(np.array([r.metrics["shape_bias"] for r in runs if r.params["sparsity"] == "none"]))
    assert (dense.shape_bias_mean, dense.shape_bias_ci_low, dense.shape_bias_ci_high) == pytest.approx(
        (mean, low, high)
    )
    report = build_report(runs)  # on-protocol study runs: the study's table, verdicts and plots in compare
    assert "synthetic_study" in report.built
    assert {"synthetic_shape_bias_vs_k.png", "synthetic_accuracy_vs_shape_bias.png"} <= set(report.plots)
    assert report.verdicts.claim.str.startswith("Synthetic study").any()
    off = [dataclasses.replace(r, params={**r.params, "epochs": "1"}) for r in runs]
    report = build_report(off)  # off-protocol: numbers only, no verdicts
    assert report.built == ["synthetic_study_other_settings"] and report.verdicts.empty


@pytest.fixture
def ray_local():
    import ray

    yield
    ray.shutdown()


@pytest.mark.parametrize("where", ["inline", pytest.param("local", marks=pytest.mark.slow)])
def test_miniature_end_to_end_and_resume(mlflow_store, tmp_path, ray_local, capsys, where):
    """2 variants x 2 seeds at tiny sizes (as Ray tasks, or inline); the second invocation launches nothing."""
    from mlflow.tracking import MlflowClient

    argv = [
        "--experiment",
        "mini",
        "--variants",
        "synthetic.none,synthetic.topk.20",
        "--seeds",
        "0,1",
        "--where",
        where,
        "--set",
        ",".join(f"{k}={v}" for k, v in TINY.items()),
        "--output-dir",
        str(tmp_path / "first"),
    ]
    assert study.main(argv) == 0
    client = MlflowClient(mlflow_store)
    exp = client.get_experiment_by_name("mini")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags["shapebias.task"] == "synthetic_study"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 4 and parent.info.status == "FINISHED"
    for r in kids:
        assert r.info.status == "FINISHED"
        assert r.data.tags["shapebias.protocol"] in ("synthetic.none", "synthetic.topk.20")
        assert r.data.tags["shapebias.on_protocol"] == "false" and r.data.tags["shapebias.settings_fingerprint"]
        for m in ("test_acc", "stylized_acc", "shape_bias", "cue_conflict_shape_acc", "cue_conflict_texture_acc"):
            assert 0.0 <= r.data.metrics[m] <= 1.0
        assert r.data.params["epochs"] == "1" and r.data.params["image_size"] == "16"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    for name in (
        "synthetic_study.csv",
        "verdicts.csv",
        "report.html",
        "synthetic_shape_bias_vs_k.png",
        "synthetic_accuracy_vs_shape_bias.png",
    ):
        assert f"study/{name}" in artifacts
    html = (tmp_path / "first" / "report.html").read_text()
    assert "Synthetic shape-bias study" in html and "data:image/png;base64" in html
    first = (tmp_path / "first" / "synthetic_study.csv").read_text()

    capsys.readouterr()
    argv[-1] = str(tmp_path / "second")
    assert study.main(argv) == 0
    assert "4 done, 0 to launch" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == len(runs)  # nothing launched
    assert (tmp_path / "second" / "synthetic_study.csv").read_text() == first


def test_reproduce_synthetic_dry_run_lists_the_study(mlflow_store, capsys):
    from training import reproduce

    assert reproduce.main(["synthetic", "--dry-run", "--seeds", "0,1", "--experiment", "s"]) == 0
    out = capsys.readouterr().out
    assert "18 runs (9 variants x 2 seeds)" in out and "0 done, 18 to launch" in out
    assert "would launch synthetic.topk_mean.40 seed=1:" in out and "--image-size 16" in out
    assert reproduce.main(["synthetic", "--where", "http://head:8265"]) == 2
