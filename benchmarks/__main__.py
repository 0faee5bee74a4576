"""The platform's hot-path harness: ``python -m benchmarks`` (= ``make bench``).

Sections (``--sections``, default all):

* ``topk``  Top-K forward+backward vs ReLU vs the direct formulation, (32,128,56,56) and
            (32,128,112,112), k in {0.05, 0.2}, each mode, with peak memory;
* ``step``  a ResNet-18 training step, dense vs Top-K (fast and direct), both specs;
* ``epoch`` a training epoch: bare PyTorch loop vs the full job (Ray Train + MLflow), 1 and 2
            Ray workers, with peak memory.

Where CUDA is present the ``topk`` and ``step`` sections also run on the GPU (channels_last,
bf16 and torch.compile variants; see ``--cuda-options``). Prints Markdown tables and the
performance goals, and writes everything as JSON to ``benchmarks/results/`` (``latest.json`` and a
time-stamped copy). Timings are medians of interleaved repeats; the load average before and
after is recorded because the machine may be shared.
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

SECTIONS = ("topk", "step", "epoch")


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
    p.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, plus cuda where present)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in this process (default: torch's)")
    p.add_argument("--out", default=None, help="JSON file to write (default benchmarks/results/bench-<time>.json)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
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
            "train s/epoch",
            "vs bare",
            "whole epoch s",
            "vs bare",
            "start-up s",
            "peak MB (all processes)",
        ],
        [
            [
                r["name"],
                r.get("threads", "set by Ray: CPUs per worker"),
                fmt(r["train_s"], 2),
                fmt(r["train_over_bare"], 2) + "x",
                fmt(r["cycle_s"], 2),
                fmt(r["cycle_over_bare"], 2) + "x",
                fmt(r.get("startup_s"), 1),
                fmt(r["peak_mb"], 0),
            ]
            for r in rows
        ],
    )


def goals(result: dict) -> list[dict]:
    out = []
    topk = [
        r
        for r in result.get("topk", [])
        if r["device"] == "cpu"
        and r["shape"] == "32x128x56x56"
        and r["k"] == 0.2
        and r["mode"] == "topk"
        and r["dtype"] == "float32"
        and not r["channels_last"]
    ]
    if topk:
        r = topk[0]
        out.append(
            {
                "goal": "Top-K fwd+bwd <= 2x ReLU at (32,128,56,56), k=0.2, CPU",
                "measured": (
                    f"{r['fast_over_relu']:.2f}x median, "
                    f"{r.get('fast_over_relu_min', float('nan')):.2f}x of the fastest runs "
                    f"(direct {r['direct_over_relu']:.2f}x)"
                ),
                "met": r["fast_over_relu"] <= 2.0,
            }
        )
    for spec in ("code", "paper"):
        s = [
            r
            for r in result.get("step", [])
            if r["device"] == "cpu" and r["options"] == "plain" and r["spec"] == spec and r["variant"] == "topk"
        ]
        if s:
            out.append(
                {
                    "goal": f"Top-K ResNet-18 step <= 1.05x dense ({spec} spec, CPU)",
                    "measured": f"{s[0]['over_dense']:.3f}x",
                    "met": s[0]["over_dense"] <= 1.05,
                }
            )
    ep = {r["workers"]: r for r in result.get("epoch", []) if r["name"].startswith("job")}
    if 1 in ep:
        r = ep[1]
        out.append(
            {
                "goal": "job epoch <= 1.05x bare loop epoch (1 worker, whole epoch)",
                "measured": f"{r['cycle_over_bare']:.2f}x (training pass alone {r['train_over_bare']:.2f}x)",
                "met": r["cycle_over_bare"] <= 1.05,
            }
        )
    bare1 = [r for r in result.get("epoch", []) if r["name"] == "bare loop, 1 thread"]
    if 1 in ep and bare1 and bare1[0] is not result["epoch"][0]:
        r, b = ep[1], bare1[0]
        out.append(
            {
                "goal": "job epoch <= 1.05x bare loop epoch at the same thread count (1; Ray gives each worker 1 CPU)",
                "measured": (
                    f"{r['cycle_s'] / b['cycle_s']:.2f}x (training pass alone {r['train_s'] / b['train_s']:.2f}x)"
                ),
                "met": r["cycle_s"] / b["cycle_s"] <= 1.05,
            }
        )
    if 1 in ep and 2 in ep:
        a, b = ep[1]["cycle_s"], ep[2]["cycle_s"]
        out.append(
            {
                "goal": "2-worker job faster than 1-worker job",
                "measured": f"{b:.2f} s vs {a:.2f} s per epoch ({a / b:.2f}x)",
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
    if result.get("goals"):
        parts += [
            "",
            "Goals:",
            "",
            table(
                ["goal", "measured", "met"],
                [[g["goal"], g["measured"], "yes" if g["met"] else "NO"] for g in result["goals"]],
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
