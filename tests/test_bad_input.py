"""Bad input through every job and the `shapebias` command: one table, one contract.

Each case runs in a child process of its own, in a fresh folder with its own SQLite store, and
must end within seconds with exit status 2, exactly one ``error:`` line on stderr naming the
value, no traceback, every MLflow run it created FAILED, and no file outside the store.

The children are forked from this process after the job modules are imported once (a fresh
``python -m`` costs 5-15 s of imports per case on a small machine); each calls the same ``main``
that ``python -m`` calls. One case also runs as a real ``python -m shapebias.cli`` process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import traceback
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CASE_TIMEOUT_S = 60
RUN_ID = "0123456789abcdef0123456789abcdef"


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A 70-byte PNG whose header claims side x side pixels (a decompression bomb)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR chunk CRC
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _imagenet_with_bomb(d: Path) -> list[str]:
    wnids = ("n01440764", "n02102040")
    for split in ("train", "val"):
        for w in wnids:
            bomb_png(d / "in" / split / w / "a.png")
    (d / "classes.txt").write_text("\n".join(wnids) + "\n")
    return ["--dataset", "IN-S2", "--data-dir", str(d / "in"), "--class-list", str(d / "classes.txt")]


@dataclasses.dataclass
class Case:
    id: str
    module: str  # the module whose main() runs (shapebias.cli: the `shapebias` command)
    argv: list  # may hold callables: f(case_dir) -> str or list (files the case needs)
    expect: str  # in the error line: the value, or what it names
    env: dict = dataclasses.field(default_factory=dict)
    no_store: bool = False  # the store itself is bad: nothing may be created at all


R, G, S, T = "training.train_resnet", "training.train_fastgan", "training.shape_bias", "training.texture_synthesis"
C, P, CLI = "training.compare", "training.reproduce", "shapebias.cli"
GAN = ["--im-size", "64", "--recon-loss", "l1", "--fid-every", "0"]
few_shot = lambda d: str(bomb_png(d / "shots" / "a.png").parent)  # noqa: E731
CASES = [
    Case("resnet-epochs-not-a-number", R, ["--epochs", "abc"], "epochs='abc'"),
    Case("resnet-lr-nan", R, ["--lr", "nan"], "lr=nan"),
    Case("resnet-lr-inf", R, ["--lr", "inf"], "lr=inf"),
    Case("resnet-lr-absurd", R, ["--lr", "1e9"], "lr=1000000000.0"),
    Case("resnet-seed-negative", R, ["--seed", "-1"], "seed=-1"),
    Case("resnet-batch-absurd", R, ["--batch-size", "1e9"], "batch_size=1000000000"),
    Case("resnet-epochs-absurd", R, ["--epochs", "1e12"], "epochs=1000000000000"),
    Case("resnet-image-size-absurd", R, ["--image-size", "100000"], "image_size=100000"),
    Case("resnet-topk-out-of-range", R, ["--topk", "2"], "topk=2.0"),
    Case("resnet-sparsity-unknown", R, ["--sparsity", "dense!"], "sparsity='dense!'"),
    Case("resnet-workers-beyond-cluster", R, ["--num-workers", "1000"], "num_workers=1000"),
    Case("resnet-run-id-malformed", R, ["--run-id", "../etc"], "run id '../etc' is malformed"),
    Case("resnet-run-id-unknown", R, ["--run-id", RUN_ID], f"run id '{RUN_ID}' does not exist"),
    Case("resnet-decompression-bomb", R, [_imagenet_with_bomb], "a.png' is refused"),
    Case("resnet-uri-bad-scheme", R, [], "scheme 'htp'", env={"MLFLOW_TRACKING_URI": "htp://x"}, no_store=True),
    Case(
        "resnet-uri-unreachable",
        R,
        [],
        "is unreachable",
        env={"MLFLOW_TRACKING_URI": lambda d: f"http://127.0.0.1:{_closed_port()}"},
        no_store=True,
    ),
    Case(
        "resnet-uri-missing-folder",
        R,
        [],
        "does not exist",
        env={"MLFLOW_TRACKING_URI": lambda d: f"sqlite:///{d}/no/such/mlflow.db"},
        no_store=True,
    ),
    Case("resnet-run-id-env-unknown", R, [], f"run id '{RUN_ID}' does not exist", env={"MLFLOW_RUN_ID": RUN_ID}),
    Case(
        "fastgan-iterations-absurd",
        G,
        ["--data-dir", few_shot, *GAN, "--iterations", "1e12"],
        "iterations=1000000000000",
    ),
    Case("fastgan-lr-negative", G, ["--data-dir", few_shot, *GAN, "--lr", "-1"], "lr=-1.0"),
    Case("fastgan-seed-not-a-number", G, ["--data-dir", few_shot, *GAN, "--seed", "x1"], "seed='x1'"),
    Case("fastgan-decompression-bomb", G, ["--data-dir", few_shot, *GAN], "a.png"),
    Case("shape-bias-batch-negative", S, ["--weights", "random", "--batch-size", "-5"], "batch_size='-5'"),
    Case("shape-bias-limit-not-a-number", S, ["--weights", "random", "--limit", "ten"], "limit='ten'"),
    Case("shape-bias-seed-absurd", S, ["--weights", "random", "--seed", "1e40"], "seed='1e40'"),
    Case("shape-bias-topk-zero", S, ["--weights", "random", "--topk", "0"], "topk='0'"),
    Case("texture-image-size-absurd", T, ["--weights", "random", "--image-size", "1e6"], "image_size='1e6'"),
    Case("texture-steps-negative", T, ["--weights", "random", "--steps", "-1"], "steps='-1'"),
    Case("texture-topk-nan", T, ["--weights", "random", "--topk", "nan"], "topk='nan'"),
    Case(
        "texture-decompression-bomb",
        T,
        ["--weights", "random", "--image", lambda d: str(bomb_png(d / "b.png"))],
        "b.png' is refused",
    ),
    Case(
        "compare-uri-bad-scheme", C, ["--experiment", "e", "--tracking-uri", "htp://x"], "scheme 'htp'", no_store=True
    ),
    Case("compare-unknown-experiment", C, ["--experiment", "nosuch"], "no experiment named 'nosuch'"),
    Case(
        "compare-output-dir-is-a-file",
        C,
        ["--experiment", "e", "--output-dir", lambda d: _file(d / "f.txt")],
        "f.txt' is a file",
    ),
    Case("reproduce-unbalanced-quotes", P, ["table1", "--job-args=--data-dir '/in"], "No closing quotation"),
    Case("reproduce-unknown-table", P, ["table9"], "table='table9'"),
    Case(
        "reproduce-uri-malformed",
        P,
        ["table1", "--tracking-uri", "sqlite://relative.db"],
        "three slashes",
        no_store=True,
    ),
    Case("cli-train-resnet-lr-inf", CLI, ["train-resnet", "--lr", "inf"], "lr=inf"),
    Case("cli-reproduce-unbalanced-quotes", CLI, ["reproduce", "table1", "--job-args", '"'], "No closing quotation"),
    Case(
        "cli-compare-uri-unreachable",
        CLI,
        ["compare", "--experiment", "e", "--tracking-uri", lambda d: f"http://127.0.0.1:{_closed_port()}"],
        "is unreachable",
        no_store=True,
    ),
    Case("cli-texture-seed-negative", CLI, ["texture-synthesis", "--weights", "random", "--seed", "-2"], "seed='-2'"),
]


def _file(path: Path) -> str:
    path.write_text("x")
    return str(path)


def _resolve(value, d: Path):
    return value(d) if callable(value) else value


def _child(case: Case, argv: list[str], d: Path, out: Path) -> None:
    """In the forked child: run the case's main() with stdout/stderr to files; record its runs; exit."""
    rc = 99
    try:
        signal.alarm(CASE_TIMEOUT_S)
        os.chdir(d)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        import importlib

        try:
            rc = importlib.import_module(case.module).main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        runs = []
        if not case.no_store:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
            ids = [e.experiment_id for e in client.search_experiments()]
            runs = [[r.info.status, r.data.tags.get("shapebias.error", "")] for r in client.search_runs(ids)]
        (out / "runs.json").write_text(json.dumps(runs))
    except BaseException:  # noqa: BLE001 - reported through the stderr file
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    """A migrated SQLite store made once (in a separate process), copied into each case's folder.

    The job modules (and what MLflow imports lazily) are imported here, before any fork, so that
    each child only runs its main().
    """
    import importlib

    for module in sorted({c.module for c in CASES}) + ["mlflow.store.tracking.sqlalchemy_store", "git"]:
        importlib.import_module(module)
    import sqlalchemy.orm
    from PIL import Image

    sqlalchemy.orm.configure_mappers()
    Image.init()  # Pillow's format plugins
    d = tmp_path_factory.mktemp("template")
    pid = os.fork()
    if pid == 0:  # this process itself never opens a store: the children get fresh connections
        os.chdir(d)
        from shapebias.integrity import open_store

        os._exit(0 if open_store(f"sqlite:///{d / 'mlflow.db'}") else 1)
    assert os.waitpid(pid, 0)[1] == 0
    yield d / "mlflow.db"
    assert not (d / "mlruns").exists(), "a failed case uploaded artifacts"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_ends_in_one_error_line(case, template_store, tmp_path, monkeypatch):
    d, out = tmp_path / "work", tmp_path / "out"
    d.mkdir()
    out.mkdir()
    argv = []
    for a in case.argv:
        value = _resolve(a, d)
        argv += value if isinstance(value, list) else [value]
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    if not case.no_store:
        shutil.copy(template_store, d / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    monkeypatch.setenv("SHAPEBIAS_CUE_CONFLICT_DIR", str(d / "no-cue-conflict"))
    for k, v in case.env.items():
        monkeypatch.setenv(k, _resolve(v, d))
    before = _files(d)

    pid = os.fork()
    if pid == 0:
        _child(case, argv, d, out)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"{case.id}: killed by signal {os.WTERMSIG(status)} (over {CASE_TIMEOUT_S} s?)"
    err = (out / "stderr").read_text()
    assert "Traceback" not in err, err[-3000:]
    assert os.WEXITSTATUS(status) == 2, err[-3000:]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), err[-3000:]
    assert case.expect in errors[0], errors[0]
    runs = json.loads((out / "runs.json").read_text())
    assert all(status == "FAILED" for status, _ in runs), runs
    assert all(case.expect in message for _, message in runs), runs
    allowed = set() if case.no_store else {"mlflow.db", "mlflow.db.lock"}
    assert _files(d) - before - allowed == set()


def test_a_real_command_line_process(tmp_path):
    """The same contract through `python -m shapebias.cli` (no fork): a malformed store URI."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "htp://nowhere", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "shapebias.cli", "train-resnet", "--epochs", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and errors[0].startswith("error: tracking URI 'htp://nowhere'"), proc.stderr
    assert list(tmp_path.iterdir()) == []
