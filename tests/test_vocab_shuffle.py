"""Nothing in memsel depends on English words: a copy of a task with every word renamed (a bijection)
encodes to the same arrays and trains exactly as the original does (real Lightning, same seed)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from memsel.config import load_config
from memsel.data.babi import tokenize
from memsel.data.generate import write_task
from memsel.data.prepare import prepare_data
from memsel.network import Selector
from memsel.pretrain import pretrain


def rename_file(src: Path, dest: Path, mapping: dict[str, str]) -> Path:
    """``src`` with every word renamed through ``mapping``; ids, tabs and supporting ids kept."""
    out = []
    for line in src.read_text(encoding="utf-8").splitlines():
        line_id, text = line.split(" ", 1)
        parts = text.split("\t")
        renamed = [" ".join(mapping[t] for t in tokenize(p)) for p in parts[:2]]
        out.append(" ".join([line_id, "\t".join(renamed + parts[2:])]))
    dest.write_text("\n".join(out) + "\n", encoding="utf-8")
    return dest


def renamed_copy(train: Path, test: Path, folder: Path, seed: int = 0) -> tuple[Path, Path, dict[str, str]]:
    """Train/test files with the words of both renamed by one random bijection."""
    words = sorted({t for f in (train, test) for line in f.read_text().splitlines()
                    for t in tokenize(" ".join(line.split(" ", 1)[1].split("\t")[:2]))})
    names = [f"w{i:02d}" for i in range(len(words))]
    random.Random(seed).shuffle(names)
    mapping = dict(zip(words, names))
    folder.mkdir(parents=True, exist_ok=True)
    return (rename_file(train, folder / "qa1_renamed_train.txt", mapping),
            rename_file(test, folder / "qa1_renamed_test.txt", mapping), mapping)


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("original")
    train = write_task(folder / "qa1_original_train.txt", 1, 60, seed=1)
    test = write_task(folder / "qa1_original_test.txt", 1, 20, seed=2)
    return train, test


def test_the_renamed_copy_shares_no_word_and_keeps_the_structure(task_files, tmp_path):
    train, test = task_files
    r_train, _, mapping = renamed_copy(train, test, tmp_path)
    original_words = set(mapping)
    renamed_text = r_train.read_text()
    assert not original_words & set(tokenize(renamed_text))
    a, b = train.read_text().splitlines(), renamed_text.splitlines()
    assert len(a) == len(b)
    assert [line.split(" ", 1)[0] for line in a] == [line.split(" ", 1)[0] for line in b]
    assert [line.split("\t")[2:] for line in a] == [line.split("\t")[2:] for line in b]


def _prepare(run: Path, train: Path):
    cfg = load_config(None, [f"run_dir={run}", f"data.path={train}", "pretrain.max_epochs=3", "seed=7"])
    return cfg, prepare_data(cfg)


def test_renamed_copy_encodes_to_identical_arrays(task_files, tmp_path):
    train, test = task_files
    r_train, _, mapping = renamed_copy(train, test, tmp_path / "renamed")
    _, a = _prepare(tmp_path / "a", train)
    _, b = _prepare(tmp_path / "b", r_train)
    assert a.spec == b.spec
    assert [mapping.get(t, t) for t in a.vocab.tokens] == b.vocab.tokens
    for split in ("train", "val", "test"):
        for name in ("memories", "mask", "query", "ages", "support", "answer", "n_support"):
            np.testing.assert_array_equal(getattr(getattr(a, split), name), getattr(getattr(b, split), name),
                                          err_msg=f"{split}.{name}")


@pytest.mark.slow
def test_renamed_copy_trains_exactly_as_the_original(task_files, tmp_path):
    """Three epochs of real Lightning pretraining on each: bitwise equal weights and accuracy."""
    train, test = task_files
    r_train, _, _ = renamed_copy(train, test, tmp_path / "renamed")
    nets = []
    for name, path in (("a", train), ("b", r_train)):
        cfg, data = _prepare(tmp_path / name, path)
        nets.append(Selector.load(pretrain(cfg, data.train, data.val, data.spec)))
    a, b = (n.state_dict() for n in nets)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and training really moved the weights (the comparison above could fail)
    fresh = Selector(nets[0].config, nets[0].spec).state_dict()
    assert any(not torch.equal(fresh[k], a[k]) for k in a)
