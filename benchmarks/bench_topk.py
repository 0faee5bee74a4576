"""Top-K forward+backward against ReLU and against the direct formulation.

For each shape, k and mode, on a post-ReLU input (``relu(randn)``: half the values zero, as
after a ResNet block): the time of ``y = f(x); torch.autograd.grad(y, x, g)`` for ReLU, the direct
formulation (:func:`shapebias.sparsity.topk_direct`: ``torch.topk`` indices, a scattered mask) and
the fast path (:func:`shapebias.sparsity.topk`), by ``torch.utils.benchmark`` in interleaved
rounds (minimum and median), and the peak memory of one call of each.

    python -m benchmarks --sections topk [--quick]
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import compare_table, interleaved, med, peak_memory_mb, seconds
from shapebias import sparsity

SHAPES = ((32, 128, 56, 56), (32, 128, 112, 112))
QUICK_SHAPES = ((8, 128, 56, 56),)
KS = (0.05, 0.2)


def thp_mode() -> str:
    """The system's transparent huge page setting (``always``, ``madvise``, ``never``), or
    ``unavailable``: whether the C kernel's huge-page request for its outputs can take effect."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unavailable"
    return text[text.find("[") + 1 : text.find("]")] if "[" in text else "unavailable"


def fwd_bwd(fn, x: torch.Tensor, g: torch.Tensor):
    def call():
        y = fn(x)
        torch.autograd.grad(y, x, g)

    return call


def bench_case(
    shape: tuple[int, ...],
    k: float,
    mode: str,
    repeats: int,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    memory: bool = True,
    collect: list | None = None,
) -> dict[str, Any]:
    """One case's row; its ``torch.utils.benchmark`` Measurements are appended to ``collect``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(shape, generator=gen)).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    if channels_last:
        g = g.contiguous(memory_format=torch.channels_last)
    fns = {
        "relu": fwd_bwd(torch.relu, x, g),
        "direct": fwd_bwd(lambda t: sparsity.topk_direct(t, k, mode), x, g),
        "fast": fwd_bwd(lambda t: sparsity.topk(t, k, mode), x, g),
    }
    row: dict[str, Any] = {
        "device": device,
        "shape": "x".join(map(str, shape)),
        "k": k,
        "mode": mode,
        "dtype": str(dtype).replace("torch.", ""),
        "channels_last": channels_last,
        "input": "post-ReLU",
        "backend": sparsity._backend(x, None),
        "huge_pages": bool(sparsity._huge_pages()) and device == "cpu",
        "thp": thp_mode(),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }
    sub_label = f"{row['shape']} k={k} {row['dtype']}{' cl' if channels_last else ''}"
    measurements, cpu = interleaved(fns, repeats, label=f"Top-K fwd+bwd, {device}, {mode}", sub_label=sub_label)
    times = {name: seconds(m) for name, m in measurements.items()}
    for name, ts in times.items():
        row[f"{name}_ms"] = med(ts) * 1e3
        row[f"{name}_min_ms"] = min(ts) * 1e3
        row[f"{name}_all_ms"] = [round(t * 1e3, 2) for t in ts]
    for name, ts in cpu.items():
        row[f"{name}_cpu_ms"] = med(ts) * 1e3
        row[f"{name}_cpu_min_ms"] = min(ts) * 1e3
    row["fast_over_relu_cpu"] = row["fast_cpu_ms"] / row["relu_cpu_ms"]
    row["fast_over_relu_cpu_min"] = row["fast_cpu_min_ms"] / row["relu_cpu_min_ms"]
    row["fast_over_relu"] = row["fast_ms"] / row["relu_ms"]
    row["fast_over_relu_min"] = min(times["fast"]) / min(times["relu"])  # the least disturbed runs
    row["direct_over_relu"] = row["direct_ms"] / row["relu_ms"]
    row["speedup_vs_direct"] = row["direct_ms"] / row["fast_ms"]
    if collect is not None:
        collect.extend(measurements.values())
    if memory:
        for name, fn in fns.items():
            gc.collect()
            row[f"{name}_peak_mb"] = peak_memory_mb(fn, device)
    del x, g
    gc.collect()
    return row


def run(quick: bool, repeats: int, devices: list[str], progress=print, shapes=None, ks=None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    measurements: list = []
    shapes = shapes or (QUICK_SHAPES if quick else SHAPES)
    if sparsity.cpu_kernel() is None:
        progress("note: the C Top-K kernel is unavailable here; 'fast' is the plain PyTorch threshold path")
    for device in devices:
        variants = [dict(dtype=torch.float32, channels_last=False)]
        if device.startswith("cuda"):
            variants += [dict(dtype=torch.float32, channels_last=True), dict(dtype=torch.bfloat16, channels_last=False)]
        for shape in shapes:
            numel = 1
            for s in shape:
                numel *= s
            # the big map: fewer repeats (each call moves several GB on a CPU)
            reps = max(3, repeats // 2) if numel > 100_000_000 and device == "cpu" else repeats
            for var in variants:
                for k in ks or KS:
                    for mode in sparsity.MODES:
                        row = bench_case(shape, k, mode, reps, device, collect=measurements, **var)
                        rows.append(row)
                        progress(
                            f"  topk {device} {row['shape']} k={k} {mode:<10} {row['dtype']}"
                            f"{' cl' if var['channels_last'] else ''}: relu {row['relu_ms']:.1f} ms, "
                            f"direct {row['direct_ms']:.1f} ms ({row['direct_over_relu']:.2f}x), "
                            f"fast {row['fast_ms']:.1f} ms ({row['fast_over_relu']:.2f}x; "
                            f"{row['fast_over_relu_min']:.2f}x by minimum; CPU time {row['fast_over_relu_cpu']:.2f}x, "
                            f"{row['fast_over_relu_cpu_min']:.2f}x by minimum)"
                        )
    progress(compare_table(measurements))
    return rows
