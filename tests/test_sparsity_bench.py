"""The benchmark harness's pieces on tiny sizes (the harness itself is run by `make bench`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from benchmarks import __main__ as harness
from benchmarks import bench_step, bench_topk, common
from shapebias import sparsity


@contextlib.contextmanager
def child_holding_96_mib() -> Iterator[subprocess.Popen]:
    """A child process that holds 96 MiB (written, so resident) until the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", "b = bytearray(96 << 20); print(1, flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "1"  # it holds its 96 MiB now
        yield child
    finally:
        child.kill()
        child.wait()


def test_topk_case_row(monkeypatch):
    monkeypatch.setenv(sparsity.HUGE_PAGES_ENV, "1")
    row = bench_topk.bench_case((2, 4, 8, 8), 0.2, "topk", repeats=2)
    for key in ("relu_ms", "direct_ms", "fast_ms", "fast_over_relu", "speedup_vs_direct", "fast_over_relu_cpu"):
        assert row[key] > 0
    assert len(row["fast_all_ms"]) == 2
    assert row["backend"] in ("cpu", "torch")
    assert row["huge_pages"] is True and row["thp"] in ("always", "madvise", "never", "unavailable")
    assert row["fast_peak_mb"] is None or row["fast_peak_mb"] >= 0


def test_peak_memory_sees_an_allocation():
    mb = common.peak_memory_mb(lambda: torch.ones(64 * 2**20 // 4).add_(1))  # 64 MiB
    if mb is None:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert 60 <= mb <= 200


def test_swap_direct_replaces_topk_modules():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), sparsity.TopK(0.5), torch.nn.Sequential(sparsity.TopK(0.2, "topk_mean"))
    )
    assert bench_step.swap_direct(model) == 2
    assert not any(isinstance(m, sparsity.TopK) for m in model.modules())
    x = torch.randn(1, 1, 6, 6)
    assert model(x).shape == (1, 2, 4, 4)


def test_goals_and_render():
    result = {
        "machine": common.machine(),
        "load_before": [1.0],
        "load_after": [1.0],
        "quick": True,
        "seconds": 1.0,
        "topk": [
            {
                "device": "cpu",
                "shape": "32x128x56x56",
                "k": 0.2,
                "mode": "topk",
                "dtype": "float32",
                "channels_last": False,
                "relu_ms": 10.0,
                "direct_ms": 65.0,
                "fast_ms": 15.0,
                "direct_over_relu": 6.5,
                "fast_over_relu": 1.5,
                "speedup_vs_direct": 4.3,
                "relu_peak_mb": 1.0,
                "direct_peak_mb": 2.0,
                "fast_peak_mb": None,
            }
        ],
        "step": [
            {
                "device": "cpu",
                "options": "plain",
                "spec": "code",
                "variant": "topk",
                "batch": 4,
                "image_size": 224,
                "stem_stride": 2,
                "step_ms": 1000.0,
                "over_dense": 1.2,
                "peak_mb": 5.0,
            }
        ],
        "epoch": [
            {
                "name": "bare loop",
                "workers": 1,
                "threads": 2,
                "train_s": 1.0,
                "cycle_s": 2.0,
                "train_over_bare": 1.0,
                "cycle_over_bare": 1.0,
                "peak_mb": 1.0,
            },
            {
                "name": "job, 1 worker",
                "workers": 1,
                "train_s": 1.0,
                "cycle_s": 2.0,
                "train_over_bare": 1.0,
                "cycle_over_bare": 1.0,
                "startup_s": 9.0,
                "peak_mb": 1.0,
            },
            {
                "name": "job, 2 workers",
                "workers": 2,
                "train_s": 1.0,
                "cycle_s": 3.0,
                "train_over_bare": 1.0,
                "cycle_over_bare": 1.5,
                "startup_s": 9.0,
                "peak_mb": 1.0,
            },
        ],
    }
    result["run"] = {
        "command": "mlflow run . -e train_resnet -P sparsity=topk",
        "returncode": 0,
        "wall_s": 30.0,
        "output_lines": 14,
        "params": {},
        "phases": [
            {"phase": "imports", "s": 5.0, "what": "imports"},
            {"phase": "epochs", "s": 20.0, "what": "training"},
            {"phase": "Ray shutdown", "s": 2.0, "what": "Ray"},
            {"phase": "exit", "s": 3.0, "what": "exit"},
        ],
        "epochs": [],
        "memory": {
            "pss_mb": 2500.0,
            "uss_mb": 2000.0,
            "rss_mb": 3000.0,
            "peak_rss_mb": 3100.0,
            "processes": [{"label": "Ray Train worker", "pid": 1, "rss_mb": 1000.0, "uss_mb": 800.0, "pss_mb": 900.0}],
        },
        "cpu_s": {"Ray Train worker": 10.0},
        "cpu_s_during_epochs": {},
        "epochs_window_s": 20.0,
    }
    goals = harness.goals(result)
    # Top-K, Top-K mean (not measured), job epoch, memory, make run, the code spec's step, 2 workers
    assert [g["met"] for g in goals] == [True, None, True, False, True, False, False]
    assert (
        goals[4]["measured"].startswith("30.0 s: imports 5.0, Ray start 0.0") and "shutdown 5.0" in goals[4]["measured"]
    )
    result["run"]["params"] = {"epochs": "2"}
    assert harness.goals(result)[4]["met"] is None  # not make run's size: no verdict
    result["goals"] = goals
    text = harness.render(result)
    assert "| cpu | 32x128x56x56 | 0.2 | topk |" in text and "1.50x" in text and "n/a" in text and "| NO |" in text
    assert "| Ray Train worker | 1000 | 800 | 900 | 10.0 |" in text and "| epochs | 20.0 | 67 % |" in text


def test_run_phases_and_epochs_from_a_timeline():
    from benchmarks import bench_run
    from training.timeline import Event

    events = [
        Event(12.0, 1.0, 7, "driver: imported"),
        Event(20.0, 2.0, 7, "driver: ray started"),
        Event(30.0, 1.5, 9, "worker: data and model ready"),
        Event(34.0, 5.0, 9, "worker: epoch 1 trained"),
        Event(35.0, 6.0, 9, "worker: epoch 1 evaluated"),
        Event(35.5, 6.25, 9, "worker: epoch 1 reported"),
        Event(38.5, 9.0, 9, "worker: epoch 2 trained"),
        Event(39.0, 9.5, 9, "worker: epoch 2 reported"),
        Event(41.0, 3.0, 7, "driver: fit returned"),
    ]
    got = {p["phase"]: p["s"] for p in bench_run.phases(events, 10.0, 50.0)}
    # a phase whose event is missing merges into the next: run set-up into Ray start, and so on
    assert got == {"imports": 2.0, "Ray start": 8.0, "worker data": 10.0, "epochs": 11.0, "exit": 9.0}
    rows = bench_run.epochs(events)
    assert [(r["epoch"], r["train_s"], r["train_cpu_s"], r["eval_s"], r["total_s"]) for r in rows] == [
        (1, 4.0, 3.5, 1.0, 5.5),
        (2, 3.0, 2.75, 0.0, 3.5),
    ]
    assert bench_run.label(["ray::RayTrainWorker.__init__"], "python") == "Ray Train worker"
    raylet = ["/venv/ray/core/src/ray/raylet/raylet", "--python_worker_command=python default_worker.py"]
    assert bench_run.label(raylet, "raylet") == "Ray raylet"
    assert bench_run.label(["python", "-m", "training.train_resnet", "--epochs", "1"], "python").startswith(
        "job driver"
    )


def test_bad_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        harness.parse_args(["--sections", "topk,gpu"])
    assert "unknown section" in capsys.readouterr().err


def test_tree_memory_counts_child_processes():
    import time

    alone = common.tree_rss_mb()
    with child_holding_96_mib():
        time.sleep(0.1)
        assert common.tree_rss_mb() - alone >= 90


def test_interleaved_measurements():
    calls = []
    ms, cpu = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=0)
    assert [len(common.seconds(m)) for m in ms.values()] == [3, 3]
    assert [len(c) for c in cpu.values()] == [3, 3] and all(t >= 0 for c in cpu.values() for t in c)
    assert "".join(calls) == "aabb" * 3  # per round: each function's untimed call, then its timed call
    assert "a" in common.compare_table(list(ms.values()))


def test_process_tree_sampler_sees_a_child_and_its_memory():
    import time

    from benchmarks import bench_run

    with child_holding_96_mib() as child:
        with bench_run.ProcessTreeSampler(child.pid, interval=0.05, full_interval=0.1) as sampler:
            time.sleep(0.5)
    (row,) = sampler.peak["processes"]
    assert row["pid"] == child.pid and row["pss_mb"] >= 90 and row["uss_mb"] >= 90
    assert sampler.full_samples >= 1 and sampler.samples >= sampler.full_samples
    assert child.pid in sampler.cpu_s and child.pid in sampler.started
