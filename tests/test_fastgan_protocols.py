"""Table 2 protocols: the registry's FastGAN rows, the job's --protocol, MLproject, and compare."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from shapebias import protocols
from shapebias.report import Run, build_report
from shapebias.settings import REPO_ROOT
from training import train_fastgan


def config(argv: list[str]) -> train_fastgan.Config:
    return train_fastgan.config_from_args(train_fastgan.parser().parse_args(argv))


def test_table2_protocols_follow_the_authors_scripts():
    table2 = {p.name: p for p in protocols.for_table("table2")}
    assert len(table2) == 4 * 3 + 2 * 4
    assert all(p.task == "train_fastgan" for p in table2.values())
    # k from --sparse_hw_info: 32_15 for table, 32_5 for every other script
    assert table2["table2.table.topk"].values()["topk"] == "0.15"
    assert {table2[f"table2.{d}.topk"].values()["topk"] for d in ("jeep", "fish", "train")} == {"0.05"}
    assert "topk" not in table2["table2.jeep.baseline"].values()
    assert table2["table2.IN-S1-C5.topk15-noise"].values()["noise_injection"] == "true"
    for p in table2.values():
        v = p.values()
        assert (
            v["iterations"],
            v["batch_size"],
            v["im_size"],
            v["fid_protocol"],
            v["fid_every"],
            v["fid_samples"],
            v["rollback_patience"],
            v["perturb_g"],
        ) == ("100000", "8", "256", "authors", "1000", "3000", "10", "0.0001"), p.name
    assert "railway" in table2["table2.train.topk"].settings["iterations"].source


def test_protocol_flag_sets_every_setting_and_an_explicit_change_is_off_protocol():
    cfg = config(["--protocol", "table2.table.topk", "--data-dir", "/data/table"])
    assert (cfg.topk, cfg.iterations, cfg.fid_protocol, cfg.fid_samples) == (0.15, 100000, "authors", 3000)
    assert protocols.check("train_fastgan", cfg.protocol, cfg.params()).on_protocol
    short = config(["--protocol", "table2.table.topk", "--data-dir", "/data/table", "--iterations", "1000"])
    check = protocols.check("train_fastgan", short.protocol, short.params())
    assert not check.on_protocol and check.differences == {"iterations": ("1000", "100000")}
    standard = config(["--protocol", "table2.jeep.topk", "--data-dir", "/data/jeep", "--fid-protocol", "standard"])
    assert "fid_protocol" in protocols.check("train_fastgan", standard.protocol, standard.params()).differences
    elsewhere = config(["--protocol", "table2.jeep.topk", "--data-dir", "/data/fish"])
    assert elsewhere.set_name() == "jeep"  # the protocol names the set; the folder only holds it


def test_the_default_run_claims_no_protocol():
    for argv in (["--data-dir", "/data/jeep"], ["--data-dir", "/data/jeep", "--protocol", "", "--iterations", "''"]):
        cfg = config(argv)
        assert cfg.protocol == "" and cfg.iterations == 100000
        assert not protocols.check("train_fastgan", cfg.protocol, cfg.params()).on_protocol


def test_mlproject_parameters_are_the_config_fields():
    spec = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]["train_fastgan"]
    defaults = dataclasses.asdict(train_fastgan.Config())
    assert sorted(spec["parameters"]) == sorted(defaults)
    set_by_protocols = {k for p in protocols.for_task("train_fastgan") for k in p.settings}
    command = " ".join(spec["command"].split())
    for name, param in spec["parameters"].items():
        assert "--" + name.replace("_", "-") + " {" + name + "}" in command, name
        if name == "data_dir":
            assert "default" not in param  # required
        elif name in set_by_protocols or name == "protocol":
            assert param["default"] == "", name
        else:
            assert protocols.canonical(param["default"]) == protocols.canonical(defaults[name]), name


@pytest.mark.parametrize("on_protocol", [True, False])
def test_only_runs_of_the_matching_protocol_get_a_published_value(on_protocol):
    name = "table2.jeep.topk"
    params = {**protocols.get(name).values(), "protocol": name, "seed": "0"}
    if not on_protocol:
        params["fid_protocol"] = "standard"  # another FID pipeline: not the published number's
    run = Run("r", params, {"fid": 41.0}, {"shapebias.task": "train_fastgan", "shapebias.protocol": name})
    report = build_report([run], plots=False)
    keys = {s.key for s in report.sections}
    assert ("table2a_vs_published" in keys) is on_protocol
    if on_protocol:
        vs = next(s.table for s in report.sections if s.key == "table2a_vs_published")
        assert list(vs["published"]) == ["46.38"] and list(vs["Δ FID"]) == ["-5.38"]
    else:
        other = next(s for s in report.sections if s.key.startswith("table2a") and "other" in s.key)
        assert any("fid_protocol=standard (protocol: authors)" in n for n in other.notes)
