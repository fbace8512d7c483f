"""`memsel data download` (memsel.data.download) on a small local archive: served from a file:// URL
and from an HTTP server on 127.0.0.1 (no network), checksum refusal, hostile archives."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from memsel.cli import main, run
from memsel.data.babi import parse_babi
from memsel.data.download import ARCHIVE_ROOT, ARCHIVE_SHA256, ARCHIVE_URL, DownloadError, download_babi

QA1 = "1 Mary moved to the bathroom.\n2 John went to the hallway.\n3 Where is Mary? \tbathroom\t1\n"


def _archive(path: Path, members: dict[str, str | None]) -> str:
    """A tar.gz with ``members`` (name -> text, None = folder); returns its SHA-256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            if text is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            data = text.encode("utf-8")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path) -> tuple[Path, str]:
    """A miniature of the official archive: the same top folder, en/ and en-10k/ with task 1."""
    path = tmp_path / "served" / "tasks_1-20_v1-2.tar.gz"
    path.parent.mkdir()
    digest = _archive(path, {
        f"{ARCHIVE_ROOT}": None, f"{ARCHIVE_ROOT}/en": None,
        f"{ARCHIVE_ROOT}/en/qa1_single-supporting-fact_train.txt": QA1,
        f"{ARCHIVE_ROOT}/en/qa1_single-supporting-fact_test.txt": QA1,
        f"{ARCHIVE_ROOT}/en-10k/qa1_single-supporting-fact_train.txt": QA1,
        f"{ARCHIVE_ROOT}/LICENSE.txt": "CC BY 3.0\n",
    })
    return path, digest


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_constants_name_the_official_archive():
    assert ARCHIVE_URL == "https://dl.fbaipublicfiles.com/babi/tasks_1-20_v1-2.tar.gz"
    assert len(ARCHIVE_SHA256) == 64 and int(ARCHIVE_SHA256, 16) >= 0


def test_download_from_a_file_url_verifies_and_unpacks(tmp_path, archive):
    path, digest = archive
    dest = tmp_path / "data"
    target = download_babi(dest, url=path.as_uri(), sha256=digest)
    assert target == dest.resolve() / ARCHIVE_ROOT
    assert _leftovers(dest) == [ARCHIVE_ROOT]  # no archive, no temporary folder
    assert len(parse_babi(target / "en" / "qa1_single-supporting-fact_train.txt")) == 1
    assert (target / "LICENSE.txt").read_text() == "CC BY 3.0\n"


def test_download_over_http_from_a_local_server(tmp_path, archive):
    path, digest = archive
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        target = download_babi(tmp_path / "d", url=url, sha256=digest.upper())  # case does not matter
        assert (target / "en" / "qa1_single-supporting-fact_test.txt").read_text() == QA1
        with pytest.raises(DownloadError, match="cannot download"):
            download_babi(tmp_path / "missing", url=url + ".nope", sha256=digest)
        assert _leftovers(tmp_path / "missing") == []
    finally:
        server.shutdown()
        server.server_close()


def test_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, archive):
    path, digest = archive
    dest = tmp_path / "data"
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(DownloadError, match="does not match") as info:
        download_babi(dest, url=path.as_uri(), sha256=wrong)
    assert digest in str(info.value) and wrong in str(info.value)
    assert _leftovers(dest) == []  # nothing unpacked, no temporary folder left


def test_an_existing_copy_is_kept_unless_forced(tmp_path, archive):
    path, digest = archive
    dest = tmp_path / "data"
    target = download_babi(dest, url=path.as_uri(), sha256=digest)
    (target / "mine.txt").write_text("local note")
    assert download_babi(dest, url="file:///nonexistent", sha256=digest) == target  # not fetched at all
    assert (target / "mine.txt").exists()
    # a failed forced download keeps the old copy untouched
    with pytest.raises(DownloadError):
        download_babi(dest, url=path.as_uri(), sha256="f" * 64, force=True)
    assert (target / "mine.txt").exists() and _leftovers(dest) == [ARCHIVE_ROOT]
    download_babi(dest, url=path.as_uri(), sha256=digest, force=True)
    assert not (target / "mine.txt").exists() and _leftovers(dest) == [ARCHIVE_ROOT]


@pytest.mark.parametrize("members, match", [
    ({f"{ARCHIVE_ROOT}/../evil.txt": "x"}, "outside"),
    ({"/etc/evil.txt": "x"}, "outside"),
    ({"other_root/en/qa1_train.txt": "x"}, "outside"),
    ({}, f"no folder {ARCHIVE_ROOT}"),
])
def test_hostile_or_foreign_archives_are_refused(tmp_path, members, match):
    path = tmp_path / "bad.tar.gz"
    digest = _archive(path, members)
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match=match):
        download_babi(dest, url=path.as_uri(), sha256=digest)
    assert _leftovers(dest) == []
    assert not (tmp_path / "evil.txt").exists()


def test_links_in_the_archive_are_refused(tmp_path):
    path = tmp_path / "link.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{ARCHIVE_ROOT}/en/passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DownloadError, match="link"):
        download_babi(tmp_path / "data", url=path.as_uri(), sha256=digest)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    path = tmp_path / "not.tar.gz"
    path.write_bytes(b"<html>moved</html>")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DownloadError, match="cannot unpack"):
        download_babi(tmp_path / "data", url=path.as_uri(), sha256=digest)
    assert _leftovers(tmp_path / "data") == []


def test_cli_download(tmp_path, archive, capsys):
    path, digest = archive
    dest = tmp_path / "cli"
    assert run(["data", "download", "--dest", str(dest), "--url", path.as_uri(), "--sha256", digest]) == 0
    out = capsys.readouterr().out
    assert str(dest.resolve() / ARCHIVE_ROOT) in out
    with pytest.raises(SystemExit) as info:
        main(["data", "download", "--dest", str(tmp_path / "cli2"), "--url", path.as_uri(), "--sha256", "0" * 64])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("memsel: error:") and "SHA-256" in err
    assert _leftovers(tmp_path / "cli2") == []
    with pytest.raises(SystemExit) as info:
        main(["data", "download", "--dest", str(tmp_path / "cli3"), "--sha256", "abc"])
    assert info.value.code == 2 and "64 hexadecimal" in capsys.readouterr().err
