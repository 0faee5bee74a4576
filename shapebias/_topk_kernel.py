"""Build and load the C Top-K kernel (``shapebias/csrc/topk.c``, shipped as package data).

The source is compiled with the system's C compiler on first use (about a second), cached in
``$SHAPEBIAS_CACHE_DIR`` or ``~/.cache/shapebias`` under a name derived from the source, flags,
compiler and machine, and loaded through ctypes. :func:`kernel` returns None, with one warning,
where it cannot be built; :mod:`shapebias.sparsity` then uses its PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path

CFLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp")

# the kernel's mode numbers (the enum at the top of topk.c)
MODE_TOPK, MODE_COMPLEMENT, MODE_MEAN_NONZERO, MODE_MEAN_RAW = 0, 1, 2, 3

_lib: ctypes.CDLL | None = None
error: str | None = None
_lock = threading.Lock()


def source() -> str:
    return resources.files("shapebias").joinpath("csrc/topk.c").read_text()


def cache_dir() -> Path:
    env = os.environ.get("SHAPEBIAS_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shapebias"


def _compile(src: str, compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        c_file = Path(tmp) / "topk.c"
        c_file.write_text(src)
        built = Path(tmp) / target.name
        proc = subprocess.run(
            [compiler, *CFLAGS, str(c_file), "-o", str(built)], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-500:]}")
        os.replace(built, target)  # atomic: concurrent builders (Ray workers) do not collide


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, cint = ctypes.c_void_p, ctypes.c_int
    rows = [ctypes.c_int64] * 7  # rows, C, sN, sC, ss, n, keep
    lib.shapebias_topk_f32.argtypes = [ptr, ptr, ptr, ptr, *rows, cint, cint, cint]  # mode, threads, huge_pages
    lib.shapebias_topk_f32.restype = cint
    lib.shapebias_topk_backward_f32.argtypes = [ptr, ptr, ptr, *rows, cint, cint, cint]
    lib.shapebias_topk_backward_f32.restype = cint
    return lib


def build() -> ctypes.CDLL:
    """Compile (unless cached) and load the kernel; raises where that is impossible."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    src = source()
    digest = hashlib.sha256((src + " ".join(CFLAGS) + compiler + platform.machine()).encode()).hexdigest()[:16]
    target = cache_dir() / f"topk_cpu_{digest}.so"
    if not target.exists():
        _compile(src, compiler, target)
    return _declare(ctypes.CDLL(str(target)))


def kernel() -> ctypes.CDLL | None:
    """The loaded kernel (built on first use, cached); None, with one warning, if it cannot be."""
    global _lib, error
    if _lib is None and error is None:
        with _lock:
            if _lib is None and error is None:
                try:
                    _lib = build()
                except Exception as exc:  # no compiler, read-only cache, ...: fall back, say so once
                    error = f"{type(exc).__name__}: {exc}"
                    warnings.warn(
                        f"shapebias: the C Top-K kernel is unavailable ({error}); "
                        "using the plain PyTorch threshold path (exact, slower)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
    return _lib


def loaded() -> ctypes.CDLL:
    """The loaded kernel, for callers that checked it is available; RuntimeError if it is not."""
    lib = kernel()
    if lib is None:
        raise RuntimeError(f"the C Top-K kernel is unavailable ({error})")
    return lib


def reset() -> None:
    """Forget the loaded kernel and any build error (the next :func:`kernel` call builds again)."""
    global _lib, error
    with _lock:
        _lib, error = None, None
