"""Writing results without ever leaving a half-written file where a good one was."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


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


def save_torch_atomic(blob: dict, path: str | Path) -> Path:
    """``torch.save`` ``blob`` to ``path`` atomically; returns the path."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def load_torch_file(path: str | Path, file_format: str, kind: str, missing_hint: str) -> dict:
    """A dict saved by :func:`save_torch_atomic` whose ``format`` is ``file_format``; anything else
    (no file, not a torch file, another format) is refused with a message naming ``path`` and ``kind``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {kind} file ({missing_hint})")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not our file"
        raise ValueError(f"{path}: not a memsel {kind} file (expected format '{file_format}'): {e}") from None
    if not isinstance(blob, dict) or blob.get("format") != file_format:
        raise ValueError(f"{path}: not a memsel {kind} file (expected format '{file_format}')")
    return blob
