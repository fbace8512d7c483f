"""bAbI in a haystack: lengths exact, facts in order and labelled, one timeline per story, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memsel.config import load_config
from memsel.data.babi import parse_babi
from memsel.data.encode import DataSpec, Vocab, encode
from memsel.data.generate import write_task
from memsel.data.haystack import (MIN_WORDS, HaystackError, build_haystack, read_background, split_sentences,
                                  story_groups, timeline_lines)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "haystack"

BOOK = ("CHAPTER I.\n\nThe owl sat on the old oak tree. Was it wise? It said nothing at all, "
        "but it listened to every word the farmer and his wife spoke below. " * 3 + "\n\nA long sentence "
        + " ".join(f"w{i}" for i in range(45)) + ".\n")


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bg")
    (folder / "book.txt").write_text(BOOK, encoding="utf-8")
    (folder / "notes.md").write_text("not read: not a .txt file", encoding="utf-8")
    return read_background(folder, max_words=10)


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    path = write_task(tmp_path_factory.mktemp("gen") / "qa2_train.txt", 2, 6, seed=3)
    return parse_babi(path)


def test_background_sentences_are_cut_cleaned_and_counted(background):
    assert all(MIN_WORDS <= len(s.split()) <= 10 for s in background.sentences)
    assert not any("?" in s or "\t" in s for s in background.sentences)
    assert "CHAPTER I." not in background.sentences  # too short
    assert len(background.files) == 1 and background.files[0].endswith("book.txt")
    long = [s for s in background.sentences if s.startswith("w") or " w1" in s]
    assert long and all(len(s.split()) <= 10 for s in long)
    assert split_sentences("One two three. Four five six!", 20) == ["One two three.", "Four five six!"]


@pytest.mark.parametrize("length", [40, 97])
def test_every_list_holds_exactly_length_memories_with_its_facts_in_order(stories, background, length):
    built, timelines, summary = build_haystack(stories, length, background, seed=0)
    assert [len(s.memories) for s in built] == [length] * len(stories)
    for old, new in zip(stories, built):
        # the supporting facts keep their labels: the same statements, in the listed order
        assert [new.memories[i] for i in new.supporting] == [old.memories[i] for i in old.supporting]
        # every statement of the story before the question is in its list, in story order
        kept = [m for m in new.memories if m in set(old.memories)]
        assert kept == list(old.memories)
        assert (new.query, new.answer, new.story) == (old.query, old.answer, old.story)
    assert summary.questions == len(stories) and summary.stories == len(story_groups(stories))
    assert summary.background_drawn == sum(len(t.memories) - sum(t.is_statement) for t in timelines)


def test_the_questions_of_a_story_see_one_timeline(stories, background):
    built, timelines, _ = build_haystack(stories, 60, background, seed=1)
    for t in timelines:
        ends = [end for _, end in t.questions]
        assert ends == sorted(ends) and ends[-1] == len(t.memories)
        for i, end in t.questions:
            assert built[i].memories == tuple(t.memories[end - 60:end])
        # the statements are the story's, in order, and the newest memory is often background
        assert [m for m, s in zip(t.memories, t.is_statement) if s] == list(
            stories[max(i for i, _ in t.questions)].memories)


def test_seeded_and_repeats_reported(stories, background):
    a, _, summary = build_haystack(stories, 50, background, seed=0)
    b, _, _ = build_haystack(stories, 50, background, seed=0)
    c, _, _ = build_haystack(stories, 50, background, seed=2)
    assert a == b and a != c
    # a tiny corpus must repeat: the summary says how often
    assert summary.repeats_per_sentence > 1 and summary.max_repeats > 1
    assert summary.distinct_background <= summary.corpus_sentences
    assert "placements each" in summary.describe()


def test_plain_and_bad_lengths(stories, background):
    same, timelines, _ = build_haystack(stories, 0, background, seed=0)
    assert same == stories and timelines == []
    with pytest.raises(HaystackError, match="data.haystack"):
        build_haystack(stories, -1, background, seed=0)
    longest = max(len(s.memories) for s in stories)
    with pytest.raises(HaystackError, match="more than data.haystack"):
        build_haystack(stories, longest - 1, background, seed=0)


def test_missing_or_empty_background_is_refused(tmp_path):
    with pytest.raises(HaystackError, match="no such file or folder"):
        read_background(tmp_path / "missing")
    with pytest.raises(HaystackError, match=r"no \*\.txt"):
        read_background(tmp_path)
    (tmp_path / "a.txt").write_bytes(b"\xff\xfe not text")
    with pytest.raises(HaystackError, match="a.txt: not UTF-8"):
        read_background(tmp_path)


def test_written_files_read_back_to_the_same_lists(stories, background, tmp_path):
    built, timelines, _ = build_haystack(stories, 45, background, seed=0)
    path = tmp_path / "qa2_haystack45_train.txt"
    path.write_text("\n".join(timeline_lines(timelines, built)) + "\n", encoding="utf-8")
    back = parse_babi(path)
    order = [i for t in timelines for i, _ in t.questions]
    vocab = Vocab.build(built)
    spec = DataSpec(len(vocab), 45, 12)
    ours, theirs = encode([built[i] for i in order], vocab, spec), encode(back, vocab, spec)
    for key in ("memories", "mask", "ages", "support", "answer"):
        assert np.array_equal(getattr(ours, key), getattr(theirs, key)), key


def test_a_run_with_a_haystack_has_its_words_in_the_vocabulary(tmp_path, background):
    from memsel.data.prepare import prepare_data

    book = tmp_path / "book.txt"
    book.write_text(BOOK, encoding="utf-8")
    cfg = load_config(None, ["data.haystack=70", f"data.haystack_background={str(book)!r}", "data.train_stories=6",
                             "data.test_stories=3", "data.task=2"], name="h", run_dir=str(tmp_path / "run"))
    data = prepare_data(cfg)
    assert data.spec.max_memories == 70 and data.train.mask.all() and data.test.mask.all()
    assert {"owl", "farmer", "w44"} <= set(data.vocab.tokens)
    assert data.train.dropped_support == 0 and data.test.dropped_support == 0
    sources = (tmp_path / "run" / "data" / "sources.json").read_text()
    assert '"haystack": "70"' in sources


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/haystack is absent")
def test_the_shared_novels_give_about_ten_thousand_sentences():
    bg = read_background(SHARED, max_words=20)
    assert len(bg.files) == 2 and 9000 <= len(bg.sentences) <= 20000


@pytest.mark.parametrize("task", [1, 3, 4, 5])
def test_every_generated_task_goes_into_a_haystack(tmp_path, background, task):
    samples = parse_babi(write_task(tmp_path / f"qa{task}_train.txt", task, 4, seed=0))
    length = max(len(s.memories) for s in samples) + 20
    built, _, _ = build_haystack(samples, length, background, seed=0)
    assert all(len(s.memories) == length for s in built)
    assert all([n.memories[i] for i in n.supporting] == [o.memories[i] for i in o.supporting]
               for n, o in zip(built, samples))
