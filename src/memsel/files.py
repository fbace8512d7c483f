"""Writing results without ever leaving a half-written file where a good one was, and reading memsel's
torch files back only when they are exactly what memsel wrote (a checksum inside each file)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The temporary name keeps ``path``'s suffix, so writers that pick a format by suffix (np.savez,
    matplotlib) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


CHECKSUM_KEY = "checksum"
"""The key under which :func:`save_torch_atomic` stores the sha256 of a blob's other contents."""
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Hash ``obj`` canonically: tensors by dtype, shape and bytes; mappings by sorted key; the rest as JSON.

    Canonical rather than the file's bytes, because a zip written twice from equal contents need not
    be byte-identical, and a blob must verify after any faithful save/load round trip.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"tensor:{t.dtype}:{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"dict:{len(obj)}:".encode())
        for key in sorted(obj, key=repr):
            h.update(f"{key!r}=".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"list:{len(obj)}:".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"value:{json.dumps(obj, sort_keys=True, default=repr)};".encode())


def blob_checksum(blob: dict) -> str:
    """``sha256:<hex>`` of everything in ``blob`` except its checksum."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in blob.items() if k != CHECKSUM_KEY})
    return f"sha256:{h.hexdigest()}"


def save_torch_atomic(blob: dict, path: str | Path) -> Path:
    """``torch.save`` ``blob`` with its checksum (:func:`blob_checksum`) to ``path`` atomically; returns the path."""
    import torch

    with atomic_path(path) as tmp:
        torch.save({**blob, CHECKSUM_KEY: blob_checksum(blob)}, tmp)
    return Path(path)


def _damaged(path: Path) -> ValueError:
    return ValueError(f"{path}: checksum mismatch: the file was changed or truncated after memsel wrote it")


def load_torch_file(path: str | Path, file_format: str, kind: str, missing_hint: str) -> dict:
    """A dict saved by :func:`save_torch_atomic` whose ``format`` is ``file_format``, its checksum verified
    (and removed); anything else (no file, not a torch file, another format, changed or truncated
    contents) is refused with one line naming ``path`` and ``kind``. Files written before checksums
    existed carry none and load unverified."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {kind} file ({missing_hint})")
    with path.open("rb") as f:
        ours = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unpickling errors come in many types; torch's text would suggest weights_only=False
        if ours:  # a torch archive that no longer reads: damaged, not foreign
            raise _damaged(path) from None
        raise ValueError(f"{path}: not a memsel {kind} file (expected format '{file_format}')") from None
    if not isinstance(blob, dict) or blob.get("format") != file_format:
        raise ValueError(f"{path}: not a memsel {kind} file (expected format '{file_format}')")
    stored = blob.pop(CHECKSUM_KEY, None)
    if stored is None:
        log.debug("%s: written before memsel stored checksums; not verified", path)
    elif stored != blob_checksum(blob):
        raise _damaged(path)
    return blob
