"""The GPU check's dry mode (CPU, tiny sizes) and the Triton select under Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks import gpu_check


def test_dry_run_prints_one_table(capsys):
    assert gpu_check.main(["--dry", "--step-options", "plain"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0] == "| " + " | ".join(gpu_check.HEADERS) + " |"
    rows = [line.split(" | ") for line in lines[2:]]
    topk = [r for r in rows if r[0] == "| topk"]
    assert len(topk) == 3 * 3  # three layouts: relu, topk, topk_mean
    assert all("bitwise = definition" in r[-1] for r in topk if "relu" not in r[2])
    steps = [r for r in rows if r[0] == "| step"]
    assert [r[2] for r in steps] == ["plain dense", "plain topk"] * 2  # stem stride 1 and 2
    assert {r[6] for r in steps} == {"19.0", "1.5"} and all(float(r[5]) > 0 for r in steps)


def test_refuses_without_cuda_unless_dry(capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert gpu_check.main(["--sections", "topk"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_triton_select_equals_the_definition_in_the_interpreter():
    pytest.importorskip("triton")
    code = (
        "import torch\n"
        "from benchmarks import triton_topk as T\n"
        "from shapebias import sparsity as S\n"
        "x = torch.relu(torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0)))\n"
        "g = torch.randn(x.shape)\n"
        "used = 0\n"
        "for cl in (False, True):\n"
        "    xi = x.contiguous(memory_format=torch.channels_last) if cl else x\n"
        "    for mode in ('topk', 'topk_mean', 'topk_mean_raw'):\n"
        "        used += T.select(xi, S.kept_count(0.2, 63), S.ranks_raw(mode)) is not None\n"
        "        for k in (0.2, 0.6):\n"
        "            def run(f):\n"
        "                t = xi.clone().requires_grad_(True)\n"
        "                y = f(t)\n"
        "                return y.detach(), torch.autograd.grad(y, t, g)[0]\n"
        "            a, b = run(lambda t: T.topk(t, k, mode)), run(lambda t: S.topk_reference(t, k, mode))\n"
        "            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), (cl, mode, k)\n"
        "assert used == 6\n"
        "print('ok')\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
