"""The platform's hot-path harness: ``python -m benchmarks`` (= ``make bench``).

Sections (``--sections``, default all):

* ``topk``  Top-K forward+backward vs ReLU vs the direct formulation, (32,128,56,56) and
            (32,128,112,112), k in {0.05, 0.2}, each mode, with peak memory;
* ``step``  a ResNet-18 training step, dense vs Top-K (fast and direct), both specs;
* ``epoch`` a training epoch: bare PyTorch loop vs the full job (Ray Train + MLflow), 1 and 2
            Ray workers, with peak memory;
* ``run``   ``make run`` as a user waits for it: wall time split into phases, per-epoch split, and
            the memory (RSS, USS, PSS) and CPU time of every process of the job.

Where CUDA is present the ``topk`` and ``step`` sections also run on the GPU (channels_last,
bf16 and torch.compile variants; see ``--cuda-options``). Prints Markdown tables and one summary
table of the performance figures, each beside its goal, and writes everything as JSON to
``benchmarks/results/`` (``latest.json`` and a time-stamped copy). Timings are medians of
interleaved repeats; the load average before and after is recorded because the machine may be
shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SECTIONS = ("topk", "step", "epoch", "run")

# The goals of the summary table.
TOPK_GOALS = {"topk": 1.5, "topk_mean": 2.0}  # forward+backward over ReLU's, (32,128,56,56), k=0.2, CPU
STEP_GOAL = 1.05  # Top-K ResNet-18 training step over the dense step
EPOCH_GOAL = 1.05  # the job's epoch over the bare loop's, same threads
MEMORY_GOAL_MB = 2048.0  # all processes of a 1-worker local job, PSS
RUN_GOAL_S = 35.0  # `make run` start to finish, on an idle machine
QUICK_RUN_PARAMS = "epochs=2,synthetic_train_per_class=10,synthetic_test_per_class=5"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (about a minute or two)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per Top-K case (default 7; quick 3)")
    p.add_argument(
        "--topk-shapes", default=None, help="Top-K shapes, e.g. 32x128x56x56,8x64x28x28 (default the issue's two)"
    )
    p.add_argument("--topk-ks", default=None, help="Top-K fractions, e.g. 0.2 (default 0.05,0.2)")
    p.add_argument(
        "--step-repeats", type=int, default=None, help="timed repeats per training-step variant (default 5; quick 2)"
    )
    p.add_argument("--step-image-size", type=int, default=None, help="training-step input size (default 224; quick 64)")
    p.add_argument("--step-batch", type=int, default=None, help="training-step batch size (default 4; quick 4)")
    p.add_argument("--step-stem-stride", type=int, default=2, choices=(1, 2))
    p.add_argument(
        "--cpu-options",
        default="plain",
        help="step options on the CPU: ';'-separated, each plain or channels_last/bf16/compile joined by '+'",
    )
    p.add_argument(
        "--cuda-options",
        default="plain;channels_last+bf16;channels_last+bf16+compile",
        help="step options on CUDA (same form)",
    )
    p.add_argument("--workers", default="1,2", help="Ray worker counts for the job epochs")
    p.add_argument("--epochs", type=int, default=None, help="epochs per loop/job (default 4; quick 3)")
    p.add_argument(
        "--per-class", type=int, default=None, help="synthetic training images per class (default 30; quick 10)"
    )
    p.add_argument(
        "--run-params",
        default=None,
        help=f"MLproject parameters added to make run's, e.g. epochs=2 (default none; quick {QUICK_RUN_PARAMS})",
    )
    p.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, plus cuda where present)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in this process (default: torch's)")
    p.add_argument("--out", default=None, help="JSON file to write (default benchmarks/results/bench-<time>.json)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    params = args.run_params if args.run_params is not None else (QUICK_RUN_PARAMS if args.quick else "")
    pairs = [kv.strip() for kv in params.split(",") if kv.strip()]
    if any("=" not in kv for kv in pairs):
        p.error(f"--run-params {params!r}: expected name=value pairs separated by commas")
    args.run_params = dict(kv.split("=", 1) for kv in pairs)
    return args


# ---- tables ---------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{digits}f}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def topk_table(rows: list[dict]) -> str:
    return table(
        [
            "device",
            "shape",
            "k",
            "mode",
            "dtype",
            "ReLU ms",
            "direct ms",
            "fast ms",
            "direct/ReLU",
            "fast/ReLU",
            "fast/ReLU (min)",
            "fast vs direct",
            "peak MB ReLU/direct/fast",
        ],
        [
            [
                r["device"],
                r["shape"],
                r["k"],
                r["mode"],
                r["dtype"] + (" cl" if r["channels_last"] else ""),
                fmt(r["relu_ms"]),
                fmt(r["direct_ms"]),
                fmt(r["fast_ms"]),
                fmt(r["direct_over_relu"], 2) + "x",
                fmt(r["fast_over_relu"], 2) + "x",
                fmt(r.get("fast_over_relu_min"), 2) + "x",
                fmt(r["speedup_vs_direct"], 2) + "x faster",
                "/".join(fmt(r.get(f"{n}_peak_mb"), 0) for n in ("relu", "direct", "fast")),
            ]
            for r in rows
        ],
    )


def step_table(rows: list[dict]) -> str:
    return table(
        ["device", "options", "spec", "model", "input", "step ms", "vs dense", "peak MB"],
        [
            [
                r["device"],
                r["options"],
                r["spec"],
                r["variant"],
                f"{r['batch']}x3x{r['image_size']}² /{r['stem_stride']}",
                fmt(r["step_ms"], 0),
                fmt(r["over_dense"], 3) + "x",
                fmt(r["peak_mb"], 0),
            ]
            for r in rows
        ],
    )


def epoch_table(rows: list[dict]) -> str:
    return table(
        [
            "loop",
            "threads",
            "train s/epoch (median / min)",
            "vs bare",
            "whole epoch s (median / min)",
            "vs bare (median / min)",
            "start-up s",
            "checkpoints",
            "peak MB (RSS, all processes)",
        ],
        [
            [
                r["name"],
                r.get("threads", "n/a"),
                f"{fmt(r['train_s'], 2)} / {fmt(r.get('train_min_s'), 2)}",
                fmt(r["train_over_bare"], 2) + "x",
                f"{fmt(r['cycle_s'], 2)} / {fmt(r.get('cycle_min_s'), 2)}",
                f"{fmt(r['cycle_over_bare'], 2)}x / {fmt(r.get('cycle_over_bare_min'), 2)}x",
                fmt(r.get("startup_s"), 1),
                fmt(r.get("checkpoints")),
                fmt(r["peak_mb"], 0),
            ]
            for r in rows
        ],
    )


def run_tables(run: dict) -> list[str]:
    """``make run``: phases, epochs, and per process memory and CPU time."""
    total = run["wall_s"]
    cpu = run.get("cpu_s", {})
    during = run.get("cpu_s_during_epochs", {})
    parts = [
        f"`{run['command']}`: {total:.1f} s start to finish (exit status {run['returncode']}), "
        f"{run['output_lines']} lines of output",
        "",
        table(
            ["phase", "s", "share", "what"],
            [[p["phase"], fmt(p["s"], 1), f"{100 * p['s'] / total:.0f} %", p["what"]] for p in run["phases"]],
        ),
    ]
    if run.get("epochs"):
        parts += [
            "",
            table(
                ["epoch", "train s", "train CPU s", "evaluate s", "log s", "checkpoint + report s", "epoch s"],
                [
                    [
                        e["epoch"],
                        fmt(e["train_s"], 2),
                        fmt(e["train_cpu_s"], 2),
                        fmt(e["eval_s"], 2),
                        fmt(e["log_s"], 2),
                        fmt(e["report_s"], 2),
                        fmt(e["total_s"], 2),
                    ]
                    for e in run["epochs"]
                ],
            ),
        ]
    mem = run["memory"]
    parts += [
        "",
        f"Memory at the peak (sum of PSS {fmt(mem['pss_mb'], 0)} MB; USS {fmt(mem['uss_mb'], 0)} MB; "
        f"RSS summed over the processes {fmt(mem['rss_mb'], 0)} MB, at most {fmt(mem['peak_rss_mb'], 0)} MB), "
        f"and CPU seconds of each kind of process (whole run; during the epochs, "
        f"{fmt(run.get('epochs_window_s'), 0)} s):",
        "",
        table(
            ["process", "RSS MB", "USS MB", "PSS MB", "CPU s", "CPU s during the epochs"],
            [
                [
                    p["label"],
                    fmt(p["rss_mb"], 0),
                    fmt(p["uss_mb"], 0),
                    fmt(p["pss_mb"], 0),
                    fmt(cpu.get(p["label"]), 1),
                    fmt(during.get(p["label"]), 1),
                ]
                for p in mem["processes"]
            ],
        ),
    ]
    return parts


def _topk_row(result: dict, mode: str) -> dict | None:
    rows = [
        r
        for r in result.get("topk", [])
        if r["device"] == "cpu"
        and r["shape"] == "32x128x56x56"
        and r["k"] == 0.2
        and r["mode"] == mode
        and r["dtype"] == "float32"
        and not r["channels_last"]
    ]
    return rows[0] if rows else None


# where the seconds of `make run` go, in the summary: bench_run's phases merged into these
RUN_GROUPS = (
    ("imports", ("imports",)),
    ("Ray start", ("Ray start",)),
    ("worker start", ("worker start",)),
    ("data", ("run set-up", "worker data")),
    ("epochs", ("epochs",)),
    ("logging", ("model", "figures")),
    ("shutdown", ("Ray shutdown", "exit")),
)


def goals(result: dict) -> list[dict]:
    """The summary table: the five performance figures (Top-K and Top-K mean over ReLU, job epoch
    over bare epoch, memory of a 1-worker job, ``make run``'s wall time), then the training step's,
    each with its goal; ``met`` is None where the section did not run (or ran at quick sizes)."""
    out = []
    for mode in ("topk", "topk_mean"):
        r = _topk_row(result, mode)
        out.append(
            {
                "goal": f"Top-K fwd+bwd / ReLU: {mode}, (32,128,56,56), k=0.2, CPU float32",
                "target": f"<= {TOPK_GOALS[mode]:g}x (minimum and median)",
                "measured": (
                    f"{r.get('fast_over_relu_min', float('nan')):.2f}x min, {r['fast_over_relu']:.2f}x median"
                    if r
                    else "not run"
                ),
                "met": (
                    max(r["fast_over_relu"], r.get("fast_over_relu_min", r["fast_over_relu"])) <= TOPK_GOALS[mode]
                    if r
                    else None
                ),
            }
        )
    epoch = result.get("epoch", [])
    job = next((r for r in epoch if r["name"] == "job, 1 worker"), None)
    bare = next((r for r in epoch if r.get("pooled_from")), None) or next(
        (r for r in epoch if r["name"].startswith("bare loop")), None
    )
    out.append(
        {
            "goal": f"job epoch / bare epoch: 1 worker, {bare['threads'] if bare else '?'} threads, whole epoch",
            "target": f"<= {EPOCH_GOAL:g}x (median)",
            "measured": (
                f"{job['cycle_over_bare']:.2f}x median, {fmt(job.get('cycle_over_bare_min'), 2)}x min "
                f"(training pass alone {job['train_over_bare']:.2f}x)"
                if job
                else "not run"
            ),
            "met": job["cycle_over_bare"] <= EPOCH_GOAL if job else None,
        }
    )
    run = result.get("run")
    at_defaults = bool(run) and not run.get("params")
    if run:
        mem = run["memory"]
        top = ", ".join(f"{p['label']} {p['pss_mb']:.0f}" for p in mem["processes"][:3])
        out.append(
            {
                "goal": "memory of a 1-worker job, all its processes (psutil process tree)",
                "target": f"<= {MEMORY_GOAL_MB:.0f} MB (sum of PSS)",
                "measured": f"{fmt(mem['pss_mb'], 0)} MB PSS ({top}; RSS summed {fmt(mem['rss_mb'], 0)} MB)",
                "met": mem["pss_mb"] <= MEMORY_GOAL_MB if mem.get("pss_mb") is not None else None,
            }
        )
        seconds = {p["phase"]: p["s"] for p in run["phases"]}
        split = ", ".join(f"{name} {sum(seconds.get(k, 0.0) for k in keys):.1f}" for name, keys in RUN_GROUPS)
        out.append(
            {
                "goal": "`make run` wall time, start to finish"
                + ("" if at_defaults else f" (at {run['params']}, not make run's size)"),
                "target": f"<= {RUN_GOAL_S:g} s on an idle machine",
                "measured": f"{run['wall_s']:.1f} s: {split}",
                "met": run["wall_s"] <= RUN_GOAL_S if at_defaults and run["returncode"] == 0 else None,
            }
        )
    else:
        out += [
            {"goal": "memory of a 1-worker job", "target": f"<= {MEMORY_GOAL_MB:.0f} MB", "measured": "not run"},
            {"goal": "`make run` wall time", "target": f"<= {RUN_GOAL_S:g} s", "measured": "not run"},
        ]
        out[-1]["met"] = out[-2]["met"] = None
    for spec in ("code", "paper"):
        st = [
            r
            for r in result.get("step", [])
            if r["device"] == "cpu" and r["options"] == "plain" and r["spec"] == spec and r["variant"] == "topk"
        ]
        if st:
            out.append(
                {
                    "goal": f"Top-K ResNet-18 step / dense step ({spec} spec, CPU)",
                    "target": f"<= {STEP_GOAL:g}x",
                    "measured": f"{st[0]['over_dense']:.3f}x",
                    "met": st[0]["over_dense"] <= STEP_GOAL,
                }
            )
    jobs = {r["workers"]: r for r in epoch if r["name"].startswith("job")}
    if 1 in jobs and 2 in jobs:
        a, b = jobs[1]["cycle_s"], jobs[2]["cycle_s"]
        out.append(
            {
                "goal": "2-worker job epoch / 1-worker job epoch",
                "target": "< 1x",
                "measured": f"{b:.2f} s vs {a:.2f} s per epoch ({b / a:.2f}x)",
                "met": b < a,
            }
        )
    return out


def render(result: dict) -> str:
    parts = [
        f"machine: {result['machine']['cpu']}, {result['machine']['cpu_count']} CPUs, "
        f"torch {result['machine']['torch']} ({result['machine']['torch_threads']} threads); "
        f"load average before {result['load_before']}, after {result['load_after']}; "
        f"{'quick' if result['quick'] else 'full'} run, {result['seconds']:.0f} s"
    ]
    if result.get("topk"):
        parts += ["", "Top-K forward+backward (median ms):", "", topk_table(result["topk"])]
    if result.get("step"):
        parts += ["", "ResNet-18 training step (median ms):", "", step_table(result["step"])]
    if result.get("epoch"):
        parts += [
            "",
            "Training epoch, bare loop vs job (median over epochs after the first):",
            "",
            epoch_table(result["epoch"]),
        ]
    errors = [f"{r['name']}: {r['job_error']}" for r in result.get("epoch", []) if r.get("job_error")]
    if errors:
        parts += ["", "The job failed (timings are of the epochs it ran): " + "; ".join(errors)]
    if result.get("run"):
        parts += ["", "`make run`, start to finish:", ""] + run_tables(result["run"])
    if result.get("goals"):
        parts += [
            "",
            f"Summary (load average before {result['load_before']}, after {result['load_after']}):",
            "",
            table(
                ["figure", "measured", "goal", "met"],
                [
                    [g["goal"], g["measured"], g["target"], "n/a" if g["met"] is None else "yes" if g["met"] else "NO"]
                    for g in result["goals"]
                ],
            ),
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from benchmarks import common

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
            print("error: --devices asks for cuda but CUDA is not available", file=sys.stderr)
            return 2
    q = args.quick
    result: dict[str, Any] = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": q,
        "machine": common.machine(),
        "load_before": common.load_average(),
        "args": vars(args),
    }
    t0 = time.time()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if "topk" in args.sections:
        from benchmarks import bench_topk

        log("Top-K forward+backward ...")
        shapes = (
            [tuple(int(v) for v in sh.split("x")) for sh in args.topk_shapes.split(",")] if args.topk_shapes else None
        )
        ks = [float(v) for v in args.topk_ks.split(",")] if args.topk_ks else None
        result["topk"] = bench_topk.run(q, args.repeats or (3 if q else 7), devices, progress=log, shapes=shapes, ks=ks)
    if "step" in args.sections:
        from benchmarks import bench_step

        log("ResNet-18 training step ...")
        options = {"cpu": tuple(args.cpu_options.split(";")), "cuda": tuple(args.cuda_options.split(";"))}
        result["step"] = bench_step.run(
            q,
            args.step_repeats or (2 if q else 5),
            devices,
            args.step_image_size or (64 if q else 224),
            args.step_batch or 4,
            args.step_stem_stride,
            options,
            progress=log,
        )
    if "epoch" in args.sections:
        from benchmarks import bench_job

        log("Training epoch: bare loop vs job ...")
        workers = tuple(int(w) for w in args.workers.split(",") if w.strip())
        result["epoch"] = bench_job.run(q, workers, args.epochs, args.per_class, progress=log)
    if "run" in args.sections:
        from benchmarks import bench_run

        log("make run, start to finish ...")
        result["run"] = bench_run.run(args.run_params, progress=log)
        result["run"]["params"] = args.run_params
    result["seconds"] = time.time() - t0
    result["load_after"] = common.load_average()
    result["goals"] = goals(result)
    text = render(result)
    print(text)
    out_dir = common.results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = args.out or str(out_dir / f"bench-{stamp}{'-quick' if q else ''}.json")
    for target in (path, str(out_dir / "latest.json")):
        with open(target, "w") as f:
            json.dump(result, f, indent=1, default=str)
    with open(out_dir / "latest.md", "w") as f:
        f.write(text + "\n")
    print(f"\nwrote {path} (and {out_dir / 'latest.json'}, latest.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
