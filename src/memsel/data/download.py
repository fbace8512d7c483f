"""``memsel data download``: fetch the official bAbI archive, verify its SHA-256, unpack it.

Nothing half-done is ever left where the data belongs: the archive is downloaded into a temporary
folder next to the destination, its SHA-256 checked, unpacked there (refusing members that would
land outside it, links and devices), and only then renamed into place. Any failure removes the
temporary folder and leaves the destination as it was (a process killed outright may leave a
hidden ``.memsel-download-*`` folder in the destination, safe to delete).
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

ARCHIVE_URL = "https://dl.fbaipublicfiles.com/babi/tasks_1-20_v1-2.tar.gz"
"""Facebook's public file server; the archive Weston et al. published (bAbI v1.2, CC BY 3.0)."""
ARCHIVE_SHA256 = "0364ebde659f14d11bc21744516c5ec49d3d06cb692733f66680771244998898"
"""SHA-256 of tasks_1-20_v1-2.tar.gz (15,719,851 bytes) as published in Hugging Face datasets'
``babi_qa`` download checksums (for the same archive at its original address,
http://www.thespermwhale.com/jaseweston/babi/). Override with ``--sha256`` if Facebook ever
republishes the archive."""
ARCHIVE_ROOT = "tasks_1-20_v1-2"
"""The one top-level folder of the archive."""
CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download that failed or was refused (network, checksum, archive contents)."""


def fetch(url: str, dest: Path, timeout: float = 60.0) -> str:
    """Stream ``url`` into ``dest``; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    return digest.hexdigest()


def _check_members(tar: tarfile.TarFile, root: str) -> list[tarfile.TarInfo]:
    """Every member must be a plain file or folder under ``root``; anything else refuses the archive."""
    members = tar.getmembers()
    for m in members:
        parts = PurePosixPath(m.name).parts
        if m.name.startswith("/") or ".." in parts or not parts or parts[0] != root:
            raise DownloadError(f"archive member {m.name!r} lies outside {root}/: refused")
        if not (m.isfile() or m.isdir()):
            raise DownloadError(f"archive member {m.name!r} is a link or device: refused")
    return members


def unpack(archive: Path, into: Path, root: str = ARCHIVE_ROOT) -> Path:
    """Unpack ``archive`` (tar.gz) into ``into``; returns ``into / root``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _check_members(tar, root)
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DownloadError(f"cannot unpack {archive.name}: {e}") from None
    out = into / root
    if not out.is_dir():
        raise DownloadError(f"the archive has no folder {root}/")
    return out


def download_babi(dest: str | Path, url: str = ARCHIVE_URL, sha256: str = ARCHIVE_SHA256, force: bool = False,
                  timeout: float = 60.0) -> Path:
    """Download, verify and unpack the bAbI archive into ``dest``; returns ``dest/tasks_1-20_v1-2``.

    An existing ``dest/tasks_1-20_v1-2`` is kept (and returned) unless ``force``.
    """
    dest = Path(dest).resolve()
    target = dest / ARCHIVE_ROOT
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise DownloadError(f"--sha256: expected 64 hexadecimal digits, got {sha256!r}")
    if target.exists() and not force:
        log.info("%s already exists; not downloading (use --force to fetch and replace it)", target)
        return target
    dest.mkdir(parents=True, exist_ok=True)
    # Next to the destination, so that the final rename stays on one file system (atomic).
    with tempfile.TemporaryDirectory(dir=dest, prefix=".memsel-download-") as tmp:
        work = Path(tmp)
        archive = work / "archive.tar.gz"
        log.info("downloading %s", url)
        got = fetch(url, archive, timeout=timeout)
        if got != expected:
            raise DownloadError(f"{url}: SHA-256 {got} does not match the expected {expected}; "
                                "nothing was unpacked (pass --sha256 only if you trust this archive)")
        log.info("SHA-256 verified (%s); unpacking", got)
        unpacked = unpack(archive, work / "unpacked")
        if target.exists():  # --force: move the old copy into the temporary folder, removed with it
            target.rename(work / "previous")
        unpacked.rename(target)
    return target

