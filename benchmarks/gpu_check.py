"""The GPU check: ``python -m benchmarks.gpu_check`` (= ``make gpu-check``), within ten minutes on one GPU.

Measures, and prints as one Markdown table:

* ``topk``: Top-K forward+backward against ReLU on CUDA at (32, 128, 56, 56), k = 0.2, post-ReLU
  input, float32, bfloat16 and channels_last: the PyTorch path of :mod:`shapebias.sparsity`
  (``torch``) and a Triton threshold select (``triton``, :mod:`benchmarks.triton_topk`), each
  checked bitwise against the definition;
* ``step``: a ResNet-18 Code-Spec training step (SGD, batch 32, 224 px, 10 classes) at stem stride
  1 and 2, dense and with Top-K (k = 0.2 after layer2), plain, channels_last + bf16 autocast,
  and ``torch.compile``;
* ``epoch``: the training time of one IN-S1 epoch (9,469 images) estimated from each step, beside
  the earlier reproduction's 19 min/epoch (stride 1) and 1.5 min/epoch (stride 2) on an RTX 3080.

``--dry`` runs every section on the CPU with tiny sizes and one thread (no Triton, no compile),
to check the script itself. Times are medians of ``torch.utils.benchmark`` ``blocked_autorange``. Rows that
fail say so in the table (the check goes on); rows past ``--budget-s`` are skipped and say so.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import benchmark

from shapebias import sparsity

IN_S1_TRAIN_IMAGES = 9469  # Imagenette's training split, the IN-S1 stand-in
PRIOR_MIN_PER_EPOCH = {1: 19.0, 2: 1.5}  # the earlier reproduction's report, RTX 3080, batch 32
HEADERS = ["section", "case", "variant", "median ms", "vs baseline", "min/epoch (est.)", "RTX 3080 min/epoch", "note"]


@dataclass
class Sizes:
    device: str
    topk_shape: tuple[int, int, int, int]
    image_size: int
    batch: int
    min_run_time: float
    compile: bool
    triton: bool


def sizes(dry: bool) -> Sizes:
    if dry:
        return Sizes("cpu", (2, 4, 8, 8), 32, 2, 0.0, compile=False, triton=False)
    return Sizes("cuda", (32, 128, 56, 56), 224, 32, 0.5, compile=True, triton=True)


@dataclass
class Check:
    sizes: Sizes
    budget_s: float
    start: float = field(default_factory=time.perf_counter)
    rows: list[list[str]] = field(default_factory=list)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.start > self.budget_s

    def add(
        self,
        section: str,
        case: str,
        variant: str,
        ms: float | None = None,
        base_ms: float | None = None,
        epoch_min: float | None = None,
        prior_min: float | None = None,
        note: str = "",
    ) -> None:
        def f(v: float | None, spec: str) -> str:
            return "" if v is None else format(v, spec)

        ratio = f"{ms / base_ms:.2f}x" if ms is not None and base_ms else ""
        self.rows.append([section, case, variant, f(ms, ".2f"), ratio, f(epoch_min, ".2f"), f(prior_min, ".1f"), note])


def median_ms(fn, min_run_time: float, label: str = "") -> float:
    """Median time of one call in ms (``Timer.blocked_autorange``; CUDA synchronised)."""
    timer = benchmark.Timer("fn()", globals={"fn": fn}, label=label, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _fwd_bwd(fn, x: torch.Tensor, g: torch.Tensor):
    def call() -> None:
        y = fn(x)
        torch.autograd.grad(y, x, g)

    return call


def _topk_impls(sz: Sizes) -> dict[str, Any]:
    impls: dict[str, Any] = {"torch": lambda t, k, mode: sparsity.topk(t, k, mode, backend="torch")}
    if sz.triton:
        try:
            from benchmarks import triton_topk

            impls["triton"] = triton_topk.topk
        except Exception as exc:  # triton absent or unusable: say so in the table
            impls["triton"] = exc
    return impls


def check_topk(chk: Check, k: float = 0.2) -> None:
    sz = chk.sizes
    gen = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(sz.topk_shape, generator=gen))
    grad = torch.randn(sz.topk_shape, generator=gen)
    layouts = [
        ("float32", torch.float32, False),
        ("bfloat16", torch.bfloat16, False),
        ("float32 cl", torch.float32, True),
    ]
    for name, dtype, cl in layouts:
        fmt = torch.channels_last if cl else torch.contiguous_format
        x = base.to(sz.device, dtype).contiguous(memory_format=fmt).requires_grad_(True)
        g = grad.to(sz.device, dtype).contiguous(memory_format=fmt)
        case = f"{'x'.join(map(str, sz.topk_shape))} k={k} {name}"
        relu_ms = median_ms(_fwd_bwd(torch.relu, x, g), sz.min_run_time)
        chk.add("topk", case, "relu", relu_ms, relu_ms)
        for mode in ("topk", "topk_mean"):
            for impl, fn in _topk_impls(sz).items():
                variant = f"{mode} {impl}"
                if isinstance(fn, Exception):
                    chk.add("topk", case, variant, note=f"unavailable: {type(fn).__name__}: {fn}"[:120])
                    continue
                try:
                    exact = _exact(fn, x, g, k, mode)
                    ms = median_ms(_fwd_bwd(lambda t, fn=fn, mode=mode: fn(t, k, mode), x, g), sz.min_run_time)
                    chk.add(
                        "topk",
                        case,
                        variant,
                        ms,
                        relu_ms,
                        note="bitwise = definition" if exact else "DIFFERS from definition",
                    )
                except Exception as exc:  # noqa: BLE001 - one failed row must not end the check
                    chk.add("topk", case, variant, note=f"failed: {type(exc).__name__}: {exc}"[:120])


def _exact(fn, x: torch.Tensor, g: torch.Tensor, k: float, mode: str) -> bool:
    def run(f):
        t = x.detach().clone().requires_grad_(True)
        y = f(t)
        return y.detach(), torch.autograd.grad(y, t, g)[0]

    y1, g1 = run(lambda t: fn(t, k, mode))
    y2, g2 = run(lambda t: sparsity.topk_reference(t, k, mode))
    return torch.equal(y1, y2) and torch.equal(g1, g2)


STEP_OPTIONS = ("plain", "channels_last+bf16", "compile")


def check_steps(chk: Check, options: tuple[str, ...] = STEP_OPTIONS) -> None:
    from benchmarks.bench_step import build

    sz = chk.sizes
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(sz.batch, 3, sz.image_size, sz.image_size, generator=gen)
    y = torch.randint(0, 10, (sz.batch,), generator=gen).to(sz.device)
    steps_per_epoch = math.ceil(IN_S1_TRAIN_IMAGES / sz.batch)
    for stride in (1, 2):
        for opt in options:
            dense_ms = None
            for variant in ("dense", "topk"):
                case = f"code spec /{stride} {sz.batch}x3x{sz.image_size}^2"
                if opt == "compile" and not sz.compile:
                    chk.add("step", case, f"{opt} {variant}", note="skipped: no torch.compile in the dry run")
                    continue
                if chk.over_budget():
                    chk.add("step", case, f"{opt} {variant}", note="skipped: time budget spent")
                    continue
                try:
                    ms = _step_ms(build("code", variant, sz.image_size, stride), opt, x0, y, sz)
                except Exception as exc:  # noqa: BLE001 - one failed row must not end the check
                    chk.add("step", case, f"{opt} {variant}", note=f"failed: {type(exc).__name__}: {exc}"[:120])
                    traceback.print_exc()
                    continue
                dense_ms = ms if variant == "dense" else dense_ms
                epoch_min = ms * steps_per_epoch / 60e3
                chk.add(
                    "step",
                    case,
                    f"{opt} {variant}",
                    ms,
                    dense_ms,
                    epoch_min,
                    PRIOR_MIN_PER_EPOCH[stride],
                    note=f"{steps_per_epoch} steps of {sz.batch}",
                )


def _step_ms(model: torch.nn.Module, opt: str, x0: torch.Tensor, y: torch.Tensor, sz: Sizes) -> float:
    from benchmarks.bench_step import make_step

    cl, bf16 = "channels_last" in opt, "bf16" in opt
    model = model.to(sz.device)
    x = x0.to(sz.device)
    if cl:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if opt == "compile":
        model = torch.compile(model)
    step = make_step(model, "code", x, y, sz.device, bf16)
    for _ in range(3 if opt == "compile" else 1):  # compilation and warm-up outside the timing
        step()
    return median_ms(step, sz.min_run_time)


def render(chk: Check) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in chk.rows]
    return "\n".join(lines)


def describe(sz: Sizes) -> str:
    dev = torch.cuda.get_device_name(0) if sz.device == "cuda" else "CPU (dry run)"
    return f"device: {dev}; torch {torch.__version__}; threads {torch.get_num_threads()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="CPU, tiny sizes, no Triton or compile: checks the script")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip the remaining step rows after this many seconds")
    p.add_argument("--sections", default="topk,step", help="comma-separated: topk, step")
    p.add_argument("--step-options", default=",".join(STEP_OPTIONS), help=f"comma-separated: {', '.join(STEP_OPTIONS)}")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    options = tuple(o.strip() for o in args.step_options.split(",") if o.strip())
    bad = [s for s in sections if s not in ("topk", "step")]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from topk, step")
    if any(o not in STEP_OPTIONS for o in options):
        p.error(
            f"unknown step option(s) {[o for o in options if o not in STEP_OPTIONS]}; "
            f"choose from {', '.join(STEP_OPTIONS)}"
        )
    sz = sizes(args.dry)
    if sz.device == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available here (--dry checks the script on the CPU)", file=sys.stderr)
        return 2
    if args.dry:
        torch.set_num_threads(1)  # tiny sizes: threads only add synchronisation
    chk = Check(sz, args.budget_s)
    if "topk" in sections:
        check_topk(chk)
    if "step" in sections:
        check_steps(chk, options)
    print(describe(sz))
    print(render(chk))
    print(f"({time.perf_counter() - chk.start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
