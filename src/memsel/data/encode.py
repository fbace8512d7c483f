"""Samples -> fixed-shape arrays (padding + masks) that the network, Lightning and RLlib all share.

Memories sit in slots oldest first, padding after them; ``ages`` counts back from the most recent
memory (age 0). When a story has more memories than slots, the most recent ones are kept and the
supporting facts that fall outside are counted, not hidden.

Token ids follow the order in which words first appear in the training data, never the words
themselves: a copy of a task with every word renamed (a bijection) encodes to the same arrays,
so it trains exactly as the original does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from memsel.data.babi import Sample, tokenize
from memsel.files import atomic_path, write_text_atomic

PAD, UNK = "<pad>", "<unk>"


@dataclass(frozen=True)
class DataSpec:
    """The shapes a network is built for."""

    vocab_size: int
    max_memories: int
    max_sentence_len: int


class Vocab:
    """Token <-> id; id 0 is padding, id 1 stands for words not seen in training."""

    def __init__(self, tokens: list[str]):
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {tokens[:2]}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, samples: list[Sample]) -> "Vocab":
        """Ids by first appearance in ``samples`` (memories, then query, then answer), not alphabetical."""
        words: dict[str, None] = {}  # an insertion-ordered set
        previous: tuple[str, ...] = ()
        for s in samples:
            # Questions of a story share their memories' prefix: read each memory once.
            seen = len(previous) if s.memories[:len(previous)] == previous else 0
            for text in (*s.memories[seen:], s.query, s.answer):
                words.update(dict.fromkeys(tokenize(text)))
            previous = s.memories
        return cls([PAD, UNK, *(w for w in words if w not in (PAD, UNK))])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(t, 1) for t in tokenize(text)]

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.tokens))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class EncodedSamples:
    """Padded arrays for S samples with N memory slots of L tokens."""

    memories: np.ndarray  # (S, N, L) int64 token ids, 0 = pad
    mask: np.ndarray  # (S, N) bool, True where a slot holds a memory
    query: np.ndarray  # (S, L) int64
    ages: np.ndarray  # (S, N) int64, 0 = most recent memory; 0 in padding
    support: np.ndarray  # (S, N) bool, supporting facts
    answer: np.ndarray  # (S,) int64 answer token id (first token)
    dropped_support: int = 0
    """Supporting facts that fell outside the memory slots (too old)."""
    n_support: np.ndarray | None = None  # (S,) int64 supporting facts per question, in the slots or not
    """How many supporting facts each question has (None: as many as ``support`` shows, for old files)."""
    support_rank: np.ndarray | None = None  # (S, N) int8: k where a slot holds the k-th listed supporting fact
    """The order in which the data lists each question's supporting facts (1 = first, 0 = not supporting).
    bAbI lists them in reasoning order (qa2: the object's fact, then where its holder went), which is
    the order multi-hop pretraining teaches. None: story order, for old files."""

    def __post_init__(self) -> None:
        if self.n_support is None:
            self.n_support = self.support.sum(1).astype(np.int64)
        if self.support_rank is None:
            self.support_rank = np.where(self.support, np.cumsum(self.support, axis=1), 0).astype(np.int8)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def tensors(self) -> dict[str, np.ndarray]:
        """The observation fields, in the one naming every consumer uses."""
        return {"memories": self.memories, "mask": self.mask, "query": self.query, "ages": self.ages}

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            np.savez(tmp, memories=self.memories, mask=self.mask, query=self.query, ages=self.ages,
                     support=self.support, answer=self.answer, dropped_support=np.int64(self.dropped_support),
                     n_support=self.n_support, support_rank=self.support_rank)

    @classmethod
    def load(cls, path: str | Path) -> "EncodedSamples":
        with np.load(path) as z:
            return cls(z["memories"], z["mask"], z["query"], z["ages"], z["support"], z["answer"],
                       int(z["dropped_support"]), z["n_support"] if "n_support" in z.files else None,
                       z["support_rank"] if "support_rank" in z.files else None)

    def take(self, rows: np.ndarray | slice) -> "EncodedSamples":
        """The samples at ``rows`` (the count of dropped facts is recomputed for them)."""
        support, n_support = self.support[rows], self.n_support[rows]
        return EncodedSamples(self.memories[rows], self.mask[rows], self.query[rows], self.ages[rows], support,
                              self.answer[rows], int((n_support - support.sum(1)).sum()), n_support,
                              self.support_rank[rows])


def spec_for(samples: list[Sample], max_memories: int = 0, max_sentence_len: int = 0,
             vocab: Vocab | None = None) -> DataSpec:
    """Shapes that fit ``samples`` where the config leaves them automatic (0)."""
    n = max_memories or max(1, max(len(s.memories) for s in samples))
    length = max_sentence_len or max(
        len(tokenize(t)) for s in samples for t in (*s.memories, s.query))
    return DataSpec(len(vocab) if vocab else 0, n, max(1, length))


def encode(samples: list[Sample], vocab: Vocab, spec: DataSpec) -> EncodedSamples:
    """Pad, mask and truncate ``samples`` to ``spec``'s shapes."""
    s_count, n, length = len(samples), spec.max_memories, spec.max_sentence_len
    memories = np.zeros((s_count, n, length), dtype=np.int64)
    mask = np.zeros((s_count, n), dtype=bool)
    query = np.zeros((s_count, length), dtype=np.int64)
    ages = np.zeros((s_count, n), dtype=np.int64)
    support = np.zeros((s_count, n), dtype=bool)
    rank = np.zeros((s_count, n), dtype=np.int8)
    answer = np.zeros((s_count,), dtype=np.int64)
    n_support = np.array([len(s.supporting) for s in samples], dtype=np.int64)
    dropped = 0
    known: dict[str, list[int]] = {}  # haystack lists repeat their sentences: tokenise each text once
    for i, s in enumerate(samples):
        first = max(0, len(s.memories) - n)  # keep the n most recent memories
        kept = s.memories[first:]
        for j, text in enumerate(kept):
            ids = known.get(text)
            if ids is None:
                ids = known[text] = vocab.encode(text)[:length]
            memories[i, j, : len(ids)] = ids
        k = len(kept)
        mask[i, :k] = True
        ages[i, :k] = np.arange(k - 1, -1, -1)
        for r, idx in enumerate(s.supporting, start=1):
            if idx >= first:
                support[i, idx - first] = True
                rank[i, idx - first] = min(r, 127)
            else:
                dropped += 1
        q = vocab.encode(s.query)[:length]
        query[i, : len(q)] = q
        a = vocab.encode(s.answer)
        answer[i] = a[0] if a else 1
    return EncodedSamples(memories, mask, query, ages, support, answer, dropped, n_support, rank)


def save_spec(spec: DataSpec, path: Path) -> None:
    write_text_atomic(path, json.dumps(asdict(spec)))


def load_spec(path: Path) -> DataSpec:
    return DataSpec(**json.loads(Path(path).read_text(encoding="utf-8")))


def question_hops(hops: int, n_support):
    """Selections per question: ``hops``, or with ``hops`` 0 as many as the question's supporting facts (at
    least 1). ``n_support`` is an int, a numpy array or a torch tensor; the result has its type."""
    if hops < 0:
        raise ValueError(f"hops: expected an integer >= 0 (0 = as many as the supporting facts), got {hops}")
    if hops > 0:
        return n_support * 0 + hops
    return n_support + (n_support < 1)  # max(n_support, 1), elementwise, for ints, arrays and tensors alike

