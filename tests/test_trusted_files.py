"""memsel's torch files carry a checksum: a changed, truncated or foreign file is refused in one line
that names it, never with torch's advice to unpickle with ``weights_only=False``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec
from memsel.files import CHECKSUM_KEY, load_torch_file, save_torch_atomic
from memsel.network import FILE_FORMAT, Selector
from memsel.reader import AnswerReader

SPEC = DataSpec(vocab_size=12, max_memories=4, max_sentence_len=6)
WORDS = ["<pad>", "<unk>", "mary", "went", "to", "the", "kitchen", "john", "moved", "garden", "where", "is"]
MISMATCH = "checksum mismatch: the file was changed or truncated after memsel wrote it"


def _selector(path: Path) -> Path:
    torch.manual_seed(0)
    net = Selector(SelectorConfig(), SPEC)
    net.vocab = list(WORDS)
    return net.save(path)


def _flip_tensor_bytes(path: Path, count: int = 200) -> None:
    """Flip ``count`` bytes inside the largest stored tensor (the zip's entries stay readable)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    # The entry's data follows its 30-byte local header, the name and the extra field.
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    assert info.file_size >= count
    for i in range(start, start + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_saved_file_carries_a_checksum_and_loads(tmp_path):
    path = _selector(tmp_path / "selector.pt")
    assert torch.load(path, weights_only=True)[CHECKSUM_KEY].startswith("sha256:")
    blob = load_torch_file(path, FILE_FORMAT, "selector", "hint")
    assert CHECKSUM_KEY not in blob
    assert Selector.load(path).vocab == WORDS


def test_flipped_bytes_are_refused_naming_the_file(tmp_path):
    path = _selector(tmp_path / "selector.pt")
    _flip_tensor_bytes(path)
    with pytest.raises(ValueError) as info:
        Selector.load(path)
    assert str(info.value) == f"{path}: {MISMATCH}"


def test_truncated_file_is_refused_naming_the_file(tmp_path):
    path = _selector(tmp_path / "selector.pt")
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ValueError) as info:
        Selector.load(path)
    assert str(info.value) == f"{path}: {MISMATCH}"


def test_random_bytes_are_not_a_selector_file(tmp_path):
    path = tmp_path / "selector.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError) as info:
        Selector.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a memsel selector file") and "\n" not in message
    assert "weights_only" not in message


def test_file_written_before_checksums_still_loads(tmp_path):
    torch.manual_seed(0)
    net = Selector(SelectorConfig(), SPEC)
    path = tmp_path / "old.pt"
    torch.save(net.export(), path)  # as memsel wrote it before checksums: no checksum field
    loaded = Selector.load(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))


def test_changed_metadata_is_refused(tmp_path):
    """The checksum covers the settings and vocabulary too, not only the weights."""
    path = _selector(tmp_path / "selector.pt")
    blob = torch.load(path, weights_only=True)
    blob["vocab"][2] = "marie"
    torch.save(blob, path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        Selector.load(path)


def test_reader_file_is_checked_too(tmp_path):
    path = AnswerReader(SPEC, dim=8, hops=1, candidates=[6, 9]).save(tmp_path / "reader.pt")
    assert AnswerReader.load(path).hops == 1
    _flip_tensor_bytes(path, count=50)
    with pytest.raises(ValueError, match=f"reader.pt: {MISMATCH}"):
        AnswerReader.load(path)


def test_rl_module_pretrained_load_goes_through_the_check(tmp_path):
    pytest.importorskip("ray.rllib")
    from memsel.rllib_models.module import load_pretrained_selector

    path = _selector(tmp_path / "selector.pt")
    _flip_tensor_bytes(path)
    with pytest.raises(ValueError, match=MISMATCH):
        load_pretrained_selector(Selector(SelectorConfig(), SPEC), str(path))


def test_checksum_ignores_how_the_blob_was_saved(tmp_path):
    """A faithful copy (loaded and saved again by memsel) verifies."""
    path = _selector(tmp_path / "a.pt")
    blob = load_torch_file(path, FILE_FORMAT, "selector", "hint")
    copy = save_torch_atomic(blob, tmp_path / "b.pt")
    assert Selector.load(copy).vocab == WORDS


@pytest.mark.parametrize("damage", ["flip", "random"])
def test_select_on_a_damaged_file_exits_2_in_one_line(tmp_path, damage):
    path = _selector(tmp_path / "selector.pt")
    if damage == "flip":
        _flip_tensor_bytes(path)
    else:
        path.write_bytes(bytes(range(256)) * 8)
    out = subprocess.run([sys.executable, "-m", "memsel.cli", "select", "--checkpoint", str(path), "--query",
                          "Where is Mary?", "--memory", "Mary went to the kitchen."],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and str(path) in out.stderr and "weights_only" not in out.stderr
    assert (MISMATCH if damage == "flip" else "not a memsel selector file") in out.stderr
    assert out.stdout == ""
