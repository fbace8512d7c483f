"""bAbI in a haystack: a story's statements hidden among thousands of sentences of background text.

Built the way BABILong (Kuratov et al., 2024) builds its tasks from PG19 books: the statements of a
bAbI story keep their order and are placed at seeded random positions among consecutive sentences
of a book, so that the facts a question needs sit among ``length`` memories, most of them irrelevant.

One timeline per story, shared by its questions: the memory keeps growing as the story goes on,
and each question sees the ``length`` most recent memories of the timeline at the moment it is
asked (the timeline starts with enough background for the first question's list to be full).
Every statement of the story lies within the last ``length`` memories before its last question,
so no supporting fact falls out of any question's list; a question is asked at a random point
between the statement before it and the next one, so the newest memory is often background.
Questions share the timeline, which is why memory embeddings can be computed once per story
(memsel.haystack_eval). ``length`` 0 is plain bAbI.

Background: ``../shared/haystack`` (two public-domain novels) by default, or any text file or
folder of ``*.txt`` files. Text is split into sentences; a sentence of more than ``max_words``
words is cut into pieces of at most that many, and pieces of fewer than ``MIN_WORDS`` words are
dropped. A story's background is a run of consecutive sentences from a seeded random start,
wrapping around the corpus; with long timelines sentences repeat, and :class:`HaystackSummary`
says how often. Pure Python: no torch, Ray, Lightning or MLflow.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from memsel.data.babi import tokenize
from memsel.data.sample import Sample

__all__ = ["Background", "HaystackError", "HaystackSummary", "Timeline", "build_haystack", "default_background",
           "read_background", "story_groups", "timeline_lines"]

MIN_WORDS = 3
"""Background pieces with fewer words are dropped (chapter numbers, "CHAPTER I.", lone names)."""
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+")


class HaystackError(ValueError):
    """Background text or settings that cannot make a haystack, naming the file or field."""


@dataclass(frozen=True)
class Background:
    """Sentences of background text and where they came from."""

    sentences: tuple[str, ...]
    files: tuple[str, ...]
    sha1: str
    """Of the files' bytes, in order: what a run directory records to refuse other background later."""


def default_background() -> Path:
    """``../shared/haystack`` beside the working directory, else beside the repository checkout."""
    here = Path.cwd().parent / "shared" / "haystack"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[4] / "shared" / "haystack"


def _clean(text: str) -> str:
    # Underscores (italics), tabs and question marks would not survive the bAbI format: a statement
    # with a '?' reads as a question that lost its tabs.
    return " ".join(text.replace("_", " ").replace("?", ".").split())


def split_sentences(text: str, max_words: int) -> list[str]:
    """Sentences of ``text``; longer than ``max_words`` words: cut into pieces; shorter than MIN_WORDS: dropped."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        for sentence in _SENTENCE_END.split(_clean(paragraph)):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                piece = " ".join(words[start:start + max_words])
                if len(tokenize(piece)) >= MIN_WORDS:
                    out.append(piece)
    return out


def read_background(path: str | Path | None = None, max_words: int = 20) -> Background:
    """The background sentences of a text file, or of a folder's ``*.txt`` files in name order."""
    p = Path(path) if path else default_background()
    if max_words < MIN_WORDS:
        raise HaystackError(f"data.haystack_max_words: expected an integer >= {MIN_WORDS}, got {max_words}")
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        if not files:
            raise HaystackError(f"{p}: no *.txt file of background text in this folder")
    elif p.is_file():
        files = [p]
    else:
        raise HaystackError(f"{p}: no such file or folder of background text (give --background, or "
                            "data.haystack_background)")
    digest, sentences = hashlib.sha1(), []
    for f in files:
        raw = f.read_bytes()
        digest.update(raw)
        try:
            sentences += split_sentences(raw.decode("utf-8"), max_words)
        except UnicodeDecodeError as e:
            raise HaystackError(f"{f}: not UTF-8 text (byte offset {e.start})") from None
    if len(sentences) < 2:
        raise HaystackError(f"{p}: fewer than 2 sentences of at least {MIN_WORDS} words: not background text")
    return Background(tuple(sentences), tuple(str(f.resolve()) for f in files), digest.hexdigest())


@dataclass
class Timeline:
    """One story's memories in order (statements and background) and where its questions are asked."""

    memories: list[str]
    is_statement: list[bool]
    questions: list[tuple[int, int]] = field(default_factory=list)
    """(sample index in the built split, position: memories before the question)."""


@dataclass
class HaystackSummary:
    """What a split's haystack holds, for logs and ``memsel data haystack``."""

    length: int
    stories: int = 0
    questions: int = 0
    background_drawn: int = 0
    """Background sentences placed, repeats included."""
    corpus_sentences: int = 0
    distinct_background: int = 0
    """How many distinct corpus sentences were placed at least once."""
    max_repeats: int = 0
    """The most times one corpus sentence was placed in the split."""
    words_per_question: float = 0.0
    """Mean words in a question's memory list."""

    @property
    def repeats_per_sentence(self) -> float:
        """Placements per distinct sentence used: 1.0 = no sentence repeats."""
        return self.background_drawn / max(1, self.distinct_background)

    def describe(self) -> str:
        return (f"{self.questions} questions in {self.stories} stories, {self.length} memories each "
                f"({self.words_per_question:,.0f} words on average); {self.background_drawn:,} background "
                f"sentences placed from a corpus of {self.corpus_sentences:,} ({self.distinct_background:,} "
                f"distinct, {self.repeats_per_sentence:.2f} placements each on average, at most {self.max_repeats})")


def story_groups(samples: list[Sample]) -> list[list[int]]:
    """Indices of ``samples`` grouped by story (its source file and story number), in order."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[(s.source.rsplit(":", 1)[0], s.story)].append(i)
    return list(groups.values())


def _check_story(samples: list[Sample], idx: list[int], length: int) -> list[str]:
    """The story's statements up to its last question, checking that its questions share them."""
    last = max(idx, key=lambda i: len(samples[i].memories))
    statements = list(samples[last].memories)
    for i in idx:
        if tuple(statements[:len(samples[i].memories)]) != samples[i].memories:
            raise HaystackError(f"{samples[i].source}: this question's memories are not a prefix of its "
                                "story's: not a bAbI story")
    if len(statements) > length:
        raise HaystackError(f"{samples[last].source}: the story has {len(statements)} statements, more than "
                            f"data.haystack = {length} memories; use a longer haystack")
    return statements


def _positions(rng: random.Random, counts: list[int], n_statements: int, length: int) -> tuple[list[int], list[int]]:
    """Slots of the statements in a span of ``length`` and, per question, memories before it (in the span).

    ``counts``: statements before each question (ascending). The last question comes after the
    whole span, so the span (every statement) lies within its list."""
    slots = sorted(rng.sample(range(length), n_statements))
    asked = []
    for c in counts:
        lo = slots[c - 1] + 1 if c else 0
        hi = slots[c] if c < n_statements else length
        asked.append(rng.randint(lo, hi) if c < n_statements else length)
    return slots, asked


def _story_timeline(rng: random.Random, statements: list[str], counts: list[int], length: int,
                    background: Background, used: dict[int, int]) -> tuple[list[str], list[bool], list[int]]:
    """The timeline's memories, which are statements, and each question's end position."""
    slots, asked = _positions(rng, counts, len(statements), length)
    lead = length - min(asked)  # background before the span, so that the first question's list is full
    total = lead + length
    corpus = background.sentences
    start = rng.randrange(len(corpus))
    memories, is_statement = [], []
    placed = dict(zip(slots, statements))
    drawn = 0
    for pos in range(total):
        rel = pos - lead
        if rel in placed:
            memories.append(placed[rel])
            is_statement.append(True)
            continue
        k = (start + drawn) % len(corpus)
        used[k] = used.get(k, 0) + 1
        memories.append(corpus[k])
        is_statement.append(False)
        drawn += 1
    return memories, is_statement, [lead + a for a in asked]


def build_haystack(samples: list[Sample], length: int, background: Background, seed: int | str
                   ) -> tuple[list[Sample], list[Timeline], HaystackSummary]:
    """``samples`` in a haystack of ``length`` memories: the new samples (same order; supporting indices
    point at the statements in their list), the timelines (one per story) and a summary.

    Deterministic in ``seed``; ``length`` 0 returns the samples unchanged (no timelines)."""
    if length < 0:
        raise HaystackError(f"data.haystack: expected an integer >= 0 (0 = plain bAbI), got {length}")
    summary = HaystackSummary(length, corpus_sentences=len(background.sentences))
    if length == 0:
        return list(samples), [], summary
    rng = random.Random(f"memsel.haystack:{seed}:{length}")
    out: list[Sample | None] = [None] * len(samples)
    timelines, used, words, counted = [], {}, 0, {}
    for idx in story_groups(samples):
        statements = _check_story(samples, idx, length)
        idx = sorted(idx, key=lambda i: len(samples[i].memories))
        counts = [len(samples[i].memories) for i in idx]
        memories, is_statement, ends = _story_timeline(rng, statements, counts, length, background, used)
        where = [p for p, s in enumerate(is_statement) if s]  # timeline position of each statement
        timeline = Timeline(memories, is_statement)
        prefix = [0]  # words in the timeline before each position
        for m in memories:
            if m not in counted:
                counted[m] = len(tokenize(m))
            prefix.append(prefix[-1] + counted[m])
        for i, end in zip(idx, ends):
            s, first = samples[i], end - length
            support = tuple(where[j] - first for j in s.supporting)
            out[i] = Sample(tuple(memories[first:end]), s.query, s.answer, support, s.story, s.source)
            timeline.questions.append((i, end))
            words += prefix[end] - prefix[first]
        timelines.append(timeline)
    summary.stories, summary.questions = len(timelines), len(samples)
    summary.background_drawn = sum(used.values())
    summary.distinct_background, summary.max_repeats = len(used), max(used.values(), default=0)
    summary.words_per_question = words / max(1, len(samples))
    return out, timelines, summary


def timeline_lines(timelines: list[Timeline], samples: list[Sample]) -> list[str]:
    """The timelines in the bAbI format: one story each, its questions inline. Read back with
    ``data.max_memories`` = the length, each question keeps exactly its list (its most recent memories)."""
    lines = []
    for t in timelines:
        at: dict[int, list[int]] = defaultdict(list)
        for i, end in t.questions:
            at[end].append(i)
        line_id, ids = 0, []
        for pos in range(len(t.memories) + 1):
            for i in at.get(pos, []):
                s = samples[i]
                first = pos - len(s.memories)
                support = " ".join(str(ids[first + j]) for j in s.supporting)
                line_id += 1
                lines.append(f"{line_id} {s.query}\t{s.answer}\t{support}")
            if pos < len(t.memories):
                line_id += 1
                ids.append(line_id)
                lines.append(f"{line_id} {t.memories[pos]}")
    return lines
