"""Vocabulary, padding/masking/truncation (memsel.data.encode) and run-dir data preparation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memsel.config import Config, DataConfig
from memsel.data.babi import Sample, parse_babi, tokenize
from memsel.data.encode import (DataSpec, EncodedSamples, Vocab, encode, load_spec, save_spec,
                                spec_for)
from memsel.data.prepare import generated_files, prepare_data, split_by_story


def _sample(memories, query, answer, supporting, story=0):
    return Sample(tuple(memories), query, answer, frozenset(supporting), story, "test:1")


@pytest.fixture
def samples() -> list[Sample]:
    return [
        _sample(["Mary went to the kitchen.", "John went to the garden.", "Mary moved to the office."],
                "Where is John?", "garden", {1}),
        _sample(["Fred went to the park."], "Where is Fred?", "park", {0}, story=1),
        # six memories, two supporting facts; with 4 slots the oldest two memories fall out
        _sample([f"Sandra went to the place{i}." for i in range(6)], "Where is Sandra?", "place5", {0, 4},
                story=2),
    ]


# --------------------------------------------------------------------------- Vocab


def test_vocab_reserves_pad_and_unk(samples):
    vocab = Vocab.build(samples)
    assert vocab.tokens[:2] == ["<pad>", "<unk>"]
    assert vocab.index["<pad>"] == 0 and vocab.index["<unk>"] == 1
    # ids in order of first appearance (memories, then query, then answer), not alphabetical
    assert vocab.tokens[2:11] == ["mary", "went", "to", "the", "kitchen", "john", "garden", "moved", "office"]
    assert vocab.tokens[11:13] == ["where", "is"]
    assert len(vocab) == len(set(vocab.tokens))
    # answers are in the vocabulary too
    assert "garden" in vocab.index and "place5" in vocab.index


def _renamed(samples, mapping):
    """The samples with every word renamed through ``mapping`` (lower-cased tokens)."""
    def rename(text):
        return " ".join(mapping[t] for t in tokenize(text))
    return [Sample(tuple(rename(m) for m in s.memories), rename(s.query), rename(s.answer), s.supporting, s.story,
                   s.source) for s in samples]


def test_renamed_words_encode_to_identical_arrays(samples):
    """No id depends on a word itself: a bijective renaming of the words changes no array."""
    words = sorted({t for s in samples for x in (*s.memories, s.query, s.answer) for t in tokenize(x)})
    shuffled = list(reversed(words))  # "zzz" names sort the other way round
    mapping = {w: f"w{shuffled.index(w):03d}x" for w in words}
    renamed = _renamed(samples, mapping)
    a_vocab, b_vocab = Vocab.build(samples), Vocab.build(renamed)
    assert [mapping.get(t, t) for t in a_vocab.tokens] == b_vocab.tokens
    spec = DataSpec(len(a_vocab), 4, 7)
    a, b = encode(samples, a_vocab, spec), encode(renamed, b_vocab, spec)
    for name in ("memories", "mask", "query", "ages", "support", "answer", "n_support"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_vocab_unknown_word_is_one(samples):
    vocab = Vocab.build(samples)
    ids = vocab.encode("Mary teleported to the kitchen!")
    assert ids[1] == 1
    assert ids[0] == vocab.index["mary"] and ids[-1] == vocab.index["kitchen"]
    assert 0 not in ids  # a word never becomes padding
    assert vocab.encode("") == []


def test_vocab_must_start_with_pad_unk():
    with pytest.raises(ValueError, match="<pad>"):
        Vocab(["a", "b", "c"])


def test_vocab_save_load_roundtrip(samples, tmp_path):
    vocab = Vocab.build(samples)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded.tokens == vocab.tokens
    assert loaded.encode("Where is Mary?") == vocab.encode("Where is Mary?")
    assert json.loads(path.read_text(encoding="utf-8")) == vocab.tokens


# --------------------------------------------------------------------------- encode


def test_encode_shapes_masks_and_ages(samples):
    vocab = Vocab.build(samples)
    spec = DataSpec(len(vocab), max_memories=4, max_sentence_len=7)
    enc = encode(samples, vocab, spec)
    assert len(enc) == 3
    assert enc.memories.shape == (3, 4, 7) and enc.memories.dtype == np.int64
    assert enc.mask.shape == (3, 4) and enc.mask.dtype == bool
    assert enc.query.shape == (3, 7)
    assert enc.ages.shape == (3, 4) and enc.support.shape == (3, 4)
    assert enc.answer.shape == (3,)
    # mask counts = memory counts (capped by the slots)
    assert enc.mask.sum(1).tolist() == [3, 1, 4]
    # real memories first, padding after
    for row in enc.mask:
        k = int(row.sum())
        assert row[:k].all() and not row[k:].any()
    # ages: 0 for the most recent memory, counting up backwards; 0 in padding
    assert enc.ages.tolist() == [[2, 1, 0, 0], [0, 0, 0, 0], [3, 2, 1, 0]]
    # padded slots hold only padding tokens
    assert (enc.memories[~enc.mask] == 0).all()
    assert (enc.memories[enc.mask].max(-1) > 0).all()


def test_encode_token_ids_query_and_answer(samples):
    vocab = Vocab.build(samples)
    enc = encode(samples, vocab, DataSpec(len(vocab), 4, 7))
    first = vocab.encode("John went to the garden.")
    assert enc.memories[0, 1, : len(first)].tolist() == first
    assert (enc.memories[0, 1, len(first):] == 0).all()
    assert enc.query[0, :3].tolist() == vocab.encode("Where is John?")
    assert enc.answer.tolist() == [vocab.index["garden"], vocab.index["park"], vocab.index["place5"]]


def test_encode_support_lands_on_the_right_slot(samples):
    vocab = Vocab.build(samples)
    enc = encode(samples, vocab, DataSpec(len(vocab), 8, 7))
    assert enc.support[0].tolist() == [False, True] + [False] * 6
    assert enc.support[1].tolist() == [True] + [False] * 7
    assert np.flatnonzero(enc.support[2]).tolist() == [0, 4]
    assert enc.dropped_support == 0
    # supporting flags only where there is a memory
    assert not (enc.support & ~enc.mask).any()


def test_encode_truncation_keeps_the_most_recent_and_counts_dropped(samples):
    vocab = Vocab.build(samples)
    enc = encode(samples, vocab, DataSpec(len(vocab), 4, 7))
    # sample 2 had 6 memories: place2..place5 are kept, oldest first
    kept = [vocab.index[f"place{i}"] for i in range(2, 6)]
    assert enc.memories[2, :, 4].tolist() == kept  # "sandra went to the placeN": the place is token 5
    # supporting fact 0 fell out (counted), fact 4 is now in slot 2
    assert np.flatnonzero(enc.support[2]).tolist() == [2]
    assert enc.dropped_support == 1
    assert enc.n_support.tolist() == [1, 1, 2]  # facts per question, kept or not
    # a smaller memory budget drops more
    enc2 = encode(samples, vocab, DataSpec(len(vocab), 1, 7))
    # kept: only the last memory; sample 0 loses {1}, sample 2 loses {0, 4}
    assert enc2.dropped_support == 3
    assert enc2.support[:, 0].tolist() == [False, True, False]


def test_encode_truncates_long_sentences():
    s = [_sample(["a b c d e f g."], "q r s t?", "a", {0})]
    vocab = Vocab.build(s)
    enc = encode(s, vocab, DataSpec(len(vocab), 1, 3))
    assert enc.memories[0, 0].tolist() == vocab.encode("a b c")
    assert enc.query[0].tolist() == vocab.encode("q r s")


def test_spec_for_is_automatic_where_zero(samples):
    vocab = Vocab.build(samples)
    spec = spec_for(samples, vocab=vocab)
    assert spec == DataSpec(len(vocab), 6, 5)  # longest story 6 memories; longest sentence 5 words
    assert spec_for(samples, max_memories=2, max_sentence_len=9, vocab=vocab) == DataSpec(len(vocab), 2, 9)


def test_spec_save_load_roundtrip(tmp_path):
    spec = DataSpec(12, 5, 7)
    save_spec(spec, tmp_path / "spec.json")
    assert load_spec(tmp_path / "spec.json") == spec


def test_encoded_samples_save_load_roundtrip(samples, tmp_path):
    vocab = Vocab.build(samples)
    enc = encode(samples, vocab, DataSpec(len(vocab), 4, 7))
    path = tmp_path / "split.npz"
    enc.save(path)
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["split.npz"]  # no temporary file left behind
    loaded = EncodedSamples.load(path)
    for name in ("memories", "mask", "query", "ages", "support", "answer"):
        a, b = getattr(enc, name), getattr(loaded, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert loaded.dropped_support == enc.dropped_support == 1
    np.testing.assert_array_equal(loaded.n_support, enc.n_support)
    assert set(loaded.tensors()) == {"memories", "mask", "query", "ages"}


def test_split_files_without_n_support_still_load(samples, tmp_path):
    """Files written before n_support existed: it defaults to the facts the slots show."""
    vocab = Vocab.build(samples)
    enc = encode(samples, vocab, DataSpec(len(vocab), 8, 7))
    arrays = {k: getattr(enc, k) for k in ("memories", "mask", "query", "ages", "support", "answer")}
    np.savez(tmp_path / "old.npz", dropped_support=np.int64(0), **arrays)
    loaded = EncodedSamples.load(tmp_path / "old.npz")
    assert loaded.n_support.tolist() == [1, 1, 2]


def test_take_selects_rows_and_recounts_dropped_facts(samples):
    vocab = Vocab.build(samples)
    enc = encode(samples, vocab, DataSpec(len(vocab), 4, 7))  # sample 2 loses one fact
    assert enc.take(np.array([0, 1])).dropped_support == 0
    part = enc.take(np.array([2]))
    assert part.dropped_support == 1 and len(part) == 1
    np.testing.assert_array_equal(part.memories[0], enc.memories[2])


# --------------------------------------------------------------------------- prepare_data


def _cfg(run_dir: Path, **data) -> Config:
    knobs = dict(train_stories=20, test_stories=8)
    knobs.update(data)
    return Config(run_dir=str(run_dir), data=DataConfig(**knobs)).validate()


def _arrays(enc: EncodedSamples) -> dict[str, np.ndarray]:
    return {k: getattr(enc, k) for k in ("memories", "mask", "query", "ages", "support", "answer")}


def test_prepare_data_writes_the_run_files(tmp_path):
    cfg = _cfg(tmp_path)
    data = prepare_data(cfg)
    folder = tmp_path / "data"
    for name in ("vocab.json", "spec.json", "train.npz", "val.npz", "test.npz"):
        assert (folder / name).is_file(), name
    assert Vocab.load(folder / "vocab.json").tokens == data.vocab.tokens
    assert load_spec(folder / "spec.json") == data.spec
    assert data.spec.vocab_size == len(data.vocab)
    assert data.files["train_npz"] == str(folder / "train.npz")
    assert Path(data.files["train_file"]).is_file() and Path(data.files["test_file"]).is_file()
    # 5 questions per generated story; validation takes whole stories out of the train file
    assert len(data.train) + len(data.val) == 20 * 5
    assert len(data.test) == 8 * 5
    assert len(data.val) == 2 * 5  # round(20 * 0.1) stories
    np.testing.assert_array_equal(EncodedSamples.load(folder / "val.npz").memories, data.val.memories)
    assert data.train.memories.shape[1:] == (data.spec.max_memories, data.spec.max_sentence_len)


def test_split_by_story_holds_out_whole_stories(tmp_path):
    cfg = _cfg(tmp_path, train_stories=30)
    train_file, _ = generated_files(cfg, tmp_path)
    samples = parse_babi(train_file)
    train, val = split_by_story(samples, 0.2, seed=0)
    train_stories, val_stories = {s.story for s in train}, {s.story for s in val}
    assert not train_stories & val_stories
    assert train_stories | val_stories == set(range(30))
    assert len(val_stories) == 6
    assert len(train) + len(val) == len(samples)
    # every question of a held-out story is held out
    assert len(val) == sum(1 for s in samples if s.story in val_stories)
    # deterministic in the seed; another seed picks other stories
    assert [s.source for s in split_by_story(samples, 0.2, seed=0)[1]] == [s.source for s in val]
    assert {s.story for s in split_by_story(samples, 0.2, seed=1)[1]} != val_stories


def test_split_by_story_keeps_at_least_one_val_story():
    samples = [_sample(["x."], "q?", "x", {0}, story=i) for i in range(3)]
    train, val = split_by_story(samples, 0.05, seed=0)
    assert len(val) == 1 and len(train) == 2
    assert split_by_story(samples, 0.0, seed=0) == (samples, [])


def test_prepare_data_is_deterministic(tmp_path):
    first = prepare_data(_cfg(tmp_path / "a"))
    again = prepare_data(_cfg(tmp_path / "a"))  # same run dir: reuses vocab and spec
    fresh = prepare_data(_cfg(tmp_path / "b"))  # another run dir, same seed
    for other in (again, fresh):
        assert other.vocab.tokens == first.vocab.tokens
        assert other.spec == first.spec
        for split in ("train", "val", "test"):
            for name, arr in _arrays(getattr(first, split)).items():
                np.testing.assert_array_equal(arr, getattr(getattr(other, split), name), err_msg=f"{split}.{name}")


def test_prepare_data_seed_changes_the_data(tmp_path):
    a = prepare_data(_cfg(tmp_path / "a"))
    cfg_b = _cfg(tmp_path / "b")
    cfg_b.seed = 1
    b = prepare_data(cfg_b)
    assert not np.array_equal(a.test.memories, b.test.memories)


def test_prepare_data_refuses_a_run_dir_prepared_from_other_files(tmp_path, babi_en):
    prepare_data(_cfg(tmp_path))
    real = _cfg(tmp_path, path=str(babi_en / "qa1_single-supporting-fact_train.txt"))
    with pytest.raises(ValueError, match="run directory"):
        prepare_data(real)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_data_refuses_another_seed_before_writing(tmp_path):
    """--seed 3 on a seed-0 run directory: refused naming both seeds, its files untouched."""
    prepare_data(_cfg(tmp_path))
    assert json.loads((tmp_path / "data" / "sources.json").read_text())["seed"] == 0
    before = _tree(tmp_path)
    other = _cfg(tmp_path)
    other.seed = 3
    with pytest.raises(ValueError, match="prepared with seed 0; this command gives seed 3"):
        prepare_data(other)
    assert _tree(tmp_path) == before
    prepare_data(_cfg(tmp_path))  # the same seed still reuses the directory


def test_recorded_seed_of_a_run_prepared_before_sources_kept_it(tmp_path):
    """Older run directories: the seed comes from their config.yaml."""
    from memsel.data.prepare import check_run_seed, recorded_seed

    cfg = _cfg(tmp_path)
    assert recorded_seed(cfg) is None
    prepare_data(cfg)
    sources = tmp_path / "data" / "sources.json"
    sources.write_text(json.dumps({k: v for k, v in json.loads(sources.read_text()).items() if k != "seed"}))
    assert recorded_seed(cfg) is None
    (tmp_path / "config.yaml").write_text("name: x\nseed: 5\n")
    assert recorded_seed(cfg) == 5
    with pytest.raises(ValueError, match="seed 5"):
        check_run_seed(cfg)


def test_prepare_data_does_not_reuse_a_stale_vocabulary(tmp_path):
    """Re-preparing a run dir with other generated data must not silently encode new words as <unk>.

    Either the run dir is refused (as it is for a different source file) or the encoding covers
    every word of the new data.
    """
    prepare_data(_cfg(tmp_path, num_actors=2))
    try:
        data = prepare_data(_cfg(tmp_path, num_actors=8))
    except ValueError:
        return
    unk = int((data.train.memories == 1).sum() + (data.train.query == 1).sum())
    assert unk == 0, f"{unk} tokens of the re-generated data were encoded as <unk> with the old vocabulary"


def test_support_rank_follows_the_files_reasoning_order(babi_en):
    """qa2 lists the object's fact first, then where its holder went: ranks 1 and 2, in that order."""
    from memsel.data.babi import find_task_files, parse_babi

    train, _ = find_task_files(babi_en, 2)
    samples = parse_babi(train)[:50]
    enc = encode(samples, Vocab.build(samples), spec_for(samples))
    first = samples[0]  # "Where is the football? garden 3 6": 'Mary got the football there.', then her move
    assert first.supporting == (2, 5)
    assert enc.support_rank[0, 2] == 1 and enc.support_rank[0, 5] == 2
    assert ((enc.support_rank > 0) == enc.support).all()
    assert (enc.support_rank.max(1) == enc.n_support).all()
    # the rank survives saving, taking rows and a memory budget
    from memsel.data.budget import Budget, apply_budget

    kept = apply_budget(enc, Budget(3, "truncate"))
    assert ((kept.support_rank > 0) == kept.support).all()
    assert (enc.take(np.array([0])).support_rank == enc.support_rank[:1]).all()


def test_question_hops_is_one_rule_for_ints_arrays_and_tensors():
    import torch

    from memsel.data.encode import question_hops

    n = np.array([0, 1, 3])
    assert question_hops(0, n).tolist() == [1, 1, 3]
    assert question_hops(2, n).tolist() == [2, 2, 2]
    assert question_hops(0, torch.tensor([0, 2])).tolist() == [1, 2]
    assert question_hops(0, 0) == 1 and question_hops(0, 4) == 4 and question_hops(3, 1) == 3
    with pytest.raises(ValueError, match="hops"):
        question_hops(-1, n)
