"""A ResNet-18 training step (forward, loss, backward, SGD step): dense against Top-K.

Both specs (``code``, ``paper``), the model of ``training/train_resnet.py`` (``build_model``),
Top-K at ``layer2`` with k = 0.2: the fast path (what the job uses) and, for comparison, the same
network with the direct formulation swapped in. One batch of random images; variants timed by
``torch.utils.benchmark`` in interleaved rounds.
On CUDA the options ``channels_last``, ``bf16`` (autocast) and ``compile`` (``torch.compile``)
apply, alone or joined with ``+``.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch import nn

from benchmarks.common import compare_table, interleaved, med, peak_memory_mb, seconds
from shapebias import sparsity

CPU_OPTIONS = ("plain",)
CUDA_OPTIONS = ("plain", "channels_last+bf16", "channels_last+bf16+compile")


class DirectTopK(nn.Module):
    """Top-K by the direct formulation (``torch.topk`` + scatter), for comparison."""

    def __init__(self, k: float, mode: str) -> None:
        super().__init__()
        self.k, self.mode = k, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparsity.topk_direct(x, self.k, self.mode)


def swap_direct(model: nn.Module) -> int:
    """Replace every TopK module by :class:`DirectTopK`; returns how many were replaced."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, sparsity.TopK):
                setattr(parent, name, DirectTopK(child.k, child.mode))
                swapped += 1
    return swapped


def build(spec: str, variant: str, image_size: int, stem_stride: int, num_classes: int = 10) -> nn.Module:
    from training.train_resnet import Config, build_model

    sp = "none" if variant == "dense" else "topk"
    cfg = Config(
        sparsity=sp,
        topk=0.2,
        topk_layers="layer2",
        model_spec=spec,
        stem_stride=stem_stride,
        dataset="synthetic",
        image_size=image_size,
    )
    torch.manual_seed(0)
    model = build_model(cfg, num_classes)
    if variant == "topk-direct" and swap_direct(model) == 0:
        raise RuntimeError("the model has no TopK module to swap")
    return model


def make_step(model: nn.Module, spec: str, x: torch.Tensor, y: torch.Tensor, device: str, bf16: bool):
    from shapebias.models.resnet import sgd

    opt = sgd(model, spec, 0.01)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def step() -> None:
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run(
    quick: bool,
    repeats: int,
    devices: list[str],
    image_size: int,
    batch: int,
    stem_stride: int,
    options: dict[str, tuple[str, ...]],
    progress=print,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    measurements: list = []
    variants = ("dense", "topk", "topk-direct")
    for device in devices:
        for opt_name in options.get("cuda" if device.startswith("cuda") else "cpu", ("plain",)):
            flags = set(opt_name.split("+")) - {"plain"}
            unknown = flags - {"channels_last", "bf16", "compile"}
            if unknown:
                raise SystemExit(
                    f"error: unknown step option(s) {sorted(unknown)}; use channels_last, bf16, compile joined by +"
                )
            for spec in ("code", "paper"):
                gen = torch.Generator().manual_seed(1)
                x = torch.randn(batch, 3, image_size, image_size, generator=gen).to(device)
                y = torch.randint(0, 10, (batch,), generator=gen).to(device)
                if "channels_last" in flags:
                    x = x.contiguous(memory_format=torch.channels_last)
                steps, models = {}, {}
                for variant in variants:
                    model = build(spec, variant, image_size, stem_stride).to(device)
                    if "channels_last" in flags:
                        model = model.to(memory_format=torch.channels_last)
                    models[variant] = model
                    if "compile" in flags:
                        model = torch.compile(model)
                    steps[variant] = make_step(model, spec, x, y, device, "bf16" in flags)
                label = f"ResNet-18 step, {device}, {opt_name}, {batch}x3x{image_size}^2 /{stem_stride}"
                timed, _ = interleaved(
                    steps, repeats, label=label, sub_label=spec, warmup=2 if "compile" in flags else 1
                )
                measurements.extend(timed.values())
                times = {name: seconds(m) for name, m in timed.items()}
                base = med(times["dense"])
                for variant in variants:
                    row: dict[str, Any] = {
                        "device": device,
                        "options": opt_name,
                        "spec": spec,
                        "variant": variant,
                        "batch": batch,
                        "image_size": image_size,
                        "stem_stride": stem_stride,
                        "step_ms": med(times[variant]) * 1e3,
                        "step_min_ms": min(times[variant]) * 1e3,
                        "all_ms": [round(t * 1e3, 1) for t in times[variant]],
                        "over_dense": med(times[variant]) / base,
                    }
                    gc.collect()
                    row["peak_mb"] = peak_memory_mb(steps[variant], device)
                    rows.append(row)
                    progress(
                        f"  step {device} {opt_name} {spec:<5} {variant:<11}: "
                        f"{row['step_ms']:.0f} ms ({row['over_dense']:.3f}x dense)"
                    )
                del steps, models, x, y
                gc.collect()
    progress(compare_table(measurements))
    return rows
