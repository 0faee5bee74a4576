"""`shapebias data`: a download over HTTP on loopback, checked and extracted into the user data
folder, where the jobs then find it without any setting."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest
from test_shape_bias_data import make_cue_conflict  # tests/ is on sys.path (no __init__.py)

from shapebias import settings
from shapebias.data import cue_conflict, fetch


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log on stderr
        pass


@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    """A user without settings and without shared/: data go to the cache folder under HOME."""
    for name in ("SHAPEBIAS_DATA_HOME", "SHAPEBIAS_CUE_CONFLICT_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHAPEBIAS_SHARED_DIR", str(tmp_path / "no-shared"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A small cue-conflict archive served over HTTP on 127.0.0.1, registered with its checksums."""
    src = make_cue_conflict(tmp_path / "build" / "cue-conflict", [("dog", "cat"), ("cat", "dog")], size=8)
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cue-conflict.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cue-conflict")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    digest, count = fetch.tree_digest(src)
    entry = {
        **fetch.SOURCES["cue-conflict"],
        "url": f"http://127.0.0.1:{server.server_port}/cue-conflict.tar.gz",
        "sha256": fetch.file_sha256(archive),
        "tree_sha256": digest,
        "files": count,
    }
    monkeypatch.setitem(fetch.SOURCES, "cue-conflict", entry)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    yield entry
    server.shutdown()
    server.server_close()


def test_data_home_is_the_user_cache_folder(user_home, monkeypatch, tmp_path):
    assert settings.data_home() == user_home / ".cache" / "shapebias" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings.data_home() == tmp_path / "xdg" / "shapebias" / "data"
    monkeypatch.setenv("SHAPEBIAS_DATA_HOME", str(tmp_path / "data"))
    assert settings.data_home() == tmp_path / "data"


def test_fetch_over_http_then_the_jobs_find_it_without_settings(user_home, release, capsys):
    assert settings.cue_conflict_dir() is None
    assert fetch.main([]) == 0  # `shapebias data` lists what it can fetch
    listed = capsys.readouterr().out
    assert "cue-conflict: " in listed and "not downloaded" in listed and release["url"] in listed

    assert fetch.main(["fetch", "cue-conflict"]) == 0
    out, err = capsys.readouterr()
    assert "100%" in err  # torchvision's progress bar
    expected = user_home / ".cache" / "shapebias" / "data" / "cue-conflict"
    assert f"cue-conflict: {expected}" in out and "export" not in out
    assert settings.cue_conflict_dir() == expected
    assert cue_conflict.resolve_dir("") == expected  # what the shape-bias job calls without --data-dir
    assert len(cue_conflict.scan(expected)) == 2
    assert not list(expected.parent.glob(".cue-conflict-*"))  # no temporary folder left behind

    assert fetch.main(["verify", "cue-conflict"]) == 0
    assert f"{expected} matches" in capsys.readouterr().out
    assert fetch.main(["list"]) == 0
    assert f"present at {expected}" in capsys.readouterr().out


def test_failed_download_and_unsafe_archive_are_one_line_errors(user_home, release, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(fetch.SOURCES, "cue-conflict", {**release, "url": release["url"].replace(".tar.gz", ".tgz")})
    assert fetch.main(["fetch", "cue-conflict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download http://127.0.0.1:") and err.count("\n") == 1
    # an archive member that would land outside the target folder is refused
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    monkeypatch.setitem(fetch.SOURCES, "cue-conflict", {**release, "url": evil.as_uri(), "sha256": None})
    assert fetch.main(["fetch", "cue-conflict", "--dest", str(tmp_path / "dest")]) == 2
    assert "cannot extract evil.tar.gz" in capsys.readouterr().err
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "dest" / "outside.txt").exists()
