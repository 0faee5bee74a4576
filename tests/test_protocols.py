"""Protocols: the registry as data, its hold on the jobs' settings, fingerprints, and the claim check."""

from __future__ import annotations

import dataclasses

import pytest
from mlflow.entities import Param
from torchvision import transforms

from shapebias import protocols
from shapebias.data import imagenet
from shapebias.errors import ConfigError
from shapebias.models.resnet import SPECS, resnet18
from shapebias.protocols import listing
from shapebias.protocols.tasks import TASKS
from training import shape_bias, train_fastgan, train_resnet

CONFIGS = {"train_resnet": train_resnet.Config, "shape_bias": shape_bias.Config, "train_fastgan": train_fastgan.Config}
TABLE1 = "table1.code.topk.IN-S1"


def resnet_config(argv: list[str]) -> train_resnet.Config:
    return train_resnet.config_from_args(train_resnet.parser().parse_args(argv))


def test_registry_holds_the_seed_table1_and_the_fig1_levels():
    assert len(protocols.for_table("table1")) == 2 * 3 * 4
    assert len(protocols.for_table("shape_bias")) == (1 + 6 + 6) + (1 + 6)
    p = protocols.get(TABLE1)
    assert p.values() == {
        "model_spec": "code",
        "stem_stride": "2",
        "sparsity": "topk",
        "topk": "0.2",
        "topk_layers": "layer2",
        "dataset": "IN-S1",
        "epochs": "50",
        "batch_size": "32",
        "lr": "0.1",
        "num_workers": "1",
    }
    assert "topk" not in protocols.get("table1.paper.none.IN-S3").values()
    assert protocols.get("fig1.vgg16.topk.5").values() == {
        "model": "vgg16",
        "sparsity": "topk",
        "topk": "0.05",
        "weights": "pretrained",
        "limit": "0",
    }


def test_task_settings_cover_every_config_field_exactly_once():
    for task, config in CONFIGS.items():
        rules = TASKS[task]
        fields = [f.name for f in dataclasses.fields(config)]
        assert sorted(rules.keys + rules.ignored) == sorted(fields), task
        assert not set(rules.keys) & set(rules.ignored)


@pytest.mark.parametrize("protocol", list(protocols.REGISTRY.values()), ids=lambda p: p.name)
def test_each_protocol_names_every_setting_that_counts_and_cites_it(protocol):
    config = CONFIGS[protocol.task]
    fields = {f.name for f in dataclasses.fields(config)}
    assert set(protocol.settings) <= fields
    assert all(s.source.strip() for s in (*protocol.settings.values(), *protocol.implied.values()))
    # a job given only --protocol runs exactly the protocol's settings: nothing left to a default
    job_values = {**dataclasses.asdict(config()), **protocols.settings_of(protocol.task, protocol.name)}
    assert TASKS[protocol.task].effective(job_values) == protocol.values()
    assert protocols.check(protocol.task, protocol.name, job_values).on_protocol


def test_table1_implied_settings_hold_in_the_code():
    for p in protocols.for_table("table1"):
        spec = SPECS[p.values()["model_spec"]]
        assert (spec.momentum, spec.weight_decay) == (p.implied["momentum"].value, p.implied["weight_decay"].value)
    for spec, stride in (("code", 2), ("paper", 2)):
        width = protocols.get(f"table1.{spec}.none.IN-S1").implied["fc_in_features"].value
        assert resnet18(spec=spec, stem_stride=stride, image_size=224).fc.in_features == width
    train, test = imagenet.train_transform(224).transforms, imagenet.test_transform(224).transforms
    assert [type(t) for t in train[:2]] == [transforms.RandomResizedCrop, transforms.RandomHorizontalFlip]
    assert train[0].size == (224, 224)
    assert isinstance(test[0], transforms.Resize) and test[0].size == 256 and test[1].size == (224, 224)
    assert train_resnet.cosine_lr(0.1, 0, 50) == 0.1 and train_resnet.cosine_lr(0.1, 25, 50) == pytest.approx(0.05)


def test_fingerprints_are_equal_for_equal_settings_and_differ_otherwise():
    rules = TASKS["train_resnet"]
    base = {**protocols.get(TABLE1).values(), "seed": "0", "data_dir": "/a"}
    same = {**base, "epochs": 50.0, "lr": "0.10", "seed": "2", "data_dir": "/b", "image_size": 64}
    fp = protocols.fingerprint("train_resnet", rules.effective(base))
    assert fp == protocols.fingerprint("train_resnet", rules.effective(same))
    for change in ({"epochs": 49}, {"lr": 0.05}, {"topk": 0.1}, {"num_workers": 2}, {"stem_stride": 1}):
        assert protocols.fingerprint("train_resnet", rules.effective({**base, **change})) != fp, change
    assert protocols.fingerprint("shape_bias", {"topk": "0.1"}) != protocols.fingerprint(
        "train_resnet", {"topk": "0.1"}
    )


def test_protocol_flag_sets_every_setting_and_an_explicit_change_is_off_protocol():
    cfg = resnet_config(["--protocol", TABLE1, "--seed", "1", "--data-dir", "/in"])
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.stem_stride, cfg.topk, cfg.dataset) == (
        50,
        0.1,
        32,
        2,
        0.2,
        "IN-S1",
    )
    claim = protocols.check("train_resnet", cfg.protocol, dataclasses.asdict(cfg))
    assert claim.on_protocol and claim.describe() == f"on protocol {TABLE1}"
    spelled = resnet_config(["--protocol", TABLE1, *protocols.get(TABLE1).cli_args()])
    assert protocols.check("train_resnet", TABLE1, dataclasses.asdict(spelled)).on_protocol
    off = resnet_config(["--protocol", TABLE1, "--epochs", "1", "--lr", "0.05"])
    claim = protocols.check("train_resnet", off.protocol, dataclasses.asdict(off))
    assert not claim.on_protocol and claim.differences == {"epochs": ("1", "50"), "lr": ("0.05", "0.1")}
    assert "epochs=1 (protocol: 50)" in claim.describe()
    tags = protocols.run_tags(claim)
    assert tags[protocols.PROTOCOL_TAG] == TABLE1 and tags[protocols.ON_PROTOCOL_TAG] == "false"


def test_the_laptop_default_is_off_protocol():
    for argv in ([], ["--protocol", "", "--epochs", "", "--lr", "''"]):  # MLproject's empty defaults
        cfg = resnet_config(argv)
        assert cfg == train_resnet.Config()
        claim = protocols.check("train_resnet", cfg.protocol, dataclasses.asdict(cfg))
        assert not claim.on_protocol and protocols.run_tags(claim)[protocols.PROTOCOL_TAG] == "none"


def test_claims_that_cannot_hold():
    assert protocols.check("train_resnet", "table9.x", {}).reason.startswith("claims table9.x")
    assert not protocols.check("shape_bias", TABLE1, {}).on_protocol
    with pytest.raises(ConfigError, match="is a train_resnet protocol; shape_bias takes: fig1"):
        protocols.get(TABLE1, "shape_bias")
    with pytest.raises(ConfigError, match="protocol='nope' is not a known protocol"):
        resnet_config(["--protocol", "nope"]).validate()


def test_shape_bias_sweep_of_level_protocols():
    names = "fig1.alexnet.topk.5,fig1.alexnet.topk.10"
    cfg = shape_bias.parse_args(["--protocol", names])
    assert (cfg.model, cfg.sparsity, cfg.topk, cfg.weights, cfg.limit) == (
        "alexnet",
        "topk",
        "0.05,0.1",
        "pretrained",
        "0",
    )
    assert shape_bias.level_claim(names, "topk", 0.1) == "fig1.alexnet.topk.10"
    child = {**dataclasses.asdict(cfg), "topk": 0.1}
    assert protocols.check("shape_bias", "fig1.alexnet.topk.10", child).on_protocol
    limited = {**child, "limit": "16"}
    assert protocols.check("shape_bias", "fig1.alexnet.topk.10", limited).differences == {"limit": ("16", "0")}
    random = {**child, "weights": "random"}
    assert not protocols.check("shape_bias", "fig1.alexnet.topk.10", random).on_protocol
    with pytest.raises(ConfigError, match="differ in topk only"):
        protocols.settings_of("shape_bias", "fig1.alexnet.topk.5,fig1.vgg16.topk.5")


def test_protocols_command_lists_and_details(capsys):
    assert listing.main([]) == 0
    out = capsys.readouterr().out
    assert f"{len(protocols.REGISTRY)} protocol(s)" in out and "--epochs 50" in out
    assert listing.main([TABLE1]) == 0
    out = capsys.readouterr().out
    assert "cnns-train-top-k/train_resnet.py" in out and "Imagenette" in out
    assert listing.main(["table9"]) == 2
    assert "families: fig1, synthetic, table1" in capsys.readouterr().err


def test_params_mlflow_run_logged_first_are_read_as_the_job_ran_them(mlflow_store):
    """`mlflow run` logs MLproject's empty parameters as '' before the job; the job's values win on reading."""
    from mlflow.tracking import MlflowClient

    from shapebias import tracking
    from shapebias.report import Run

    client = MlflowClient(mlflow_store)
    first = client.create_run("0")
    client.log_batch(first.info.run_id, params=[Param("protocol", TABLE1), Param("epochs", "''"), Param("lr", "''")])
    cfg = resnet_config(["--protocol", TABLE1])
    with tracking.tracked_run("train_resnet", dataclasses.asdict(cfg), run_id=first.info.run_id):
        pass
    stored = client.get_run(first.info.run_id)
    assert stored.data.params["epochs"] == "''" and stored.data.tags["shapebias.param.epochs"] == "50"
    run = Run(stored.info.run_id, dict(stored.data.params), {}, dict(stored.data.tags))
    assert run.params["epochs"] == "50" and run.params["lr"] == "0.1"
    assert protocols.check_run("train_resnet", run.tags, run.params).on_protocol
    assert not any(
        k.startswith("shapebias.param.") and k != "shapebias.param.epochs" and k != "shapebias.param.lr"
        for k in stored.data.tags
    )
