"""Atomic writes: a failed write never replaces or damages the file that was there."""

import pytest

from memsel.files import atomic_path, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "selector.pt"
    path.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["selector.pt"]


def test_temporary_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "train.npz") as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "train.npz").read_bytes() == b"x"
