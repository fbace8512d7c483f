"""Selection among thousands of memories: a test split in haystacks of several lengths (memsel.data.haystack),
scored by a trained selector, BM25 and the recency baselines.

Train short, test long: a selector trained on lists of at most 1k memories is evaluated at 0 (plain
bAbI), 1k, 4k and 16k. The questions of a story share one timeline, and a memory's embedding does not
depend on the others (``Selector.encode_memories``), so every distinct sentence of the split is encoded
once, in chunks of ``chunk`` memories; a question's list is then a gather of cached rows, scored with
``Selector.score`` one story's questions at a time. Peak memory is the cache (distinct sentences x d)
plus one story's (questions x length x d) scores, never (questions x length x tokens x d).

Methods: ``memsel`` (each selector given), ``bm25`` (the top memories by BM25 against the question,
bm25s's Lucene variant with English stop words, the h-th best at hop h, ties to the newer memory; the
index is built over the question's own list), ``most_recent``, ``recency_prior`` (the h-th newest at
hop h) and ``random`` (exact expectation). A network with a ``table`` age encoding scores only the
newest ``max_memories`` memories of a longer list (the others get probability 0).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from memsel.data.babi import tokenize
from memsel.data.encode import Vocab, question_hops
from memsel.data.haystack import Timeline, story_groups
from memsel.data.sample import Sample
from memsel.evaluate import random_scores, score_choices
from memsel.network import Selector

log = logging.getLogger(__name__)

__all__ = ["Split", "answer_accuracy", "bm25_choices", "embed_texts", "story_batch", "token_ids", "haystack_split", "recency_choices", "selector_choices",
           "score_methods"]


@dataclass
class Split:
    """A test split as timelines: the distinct texts, each timeline as rows into them, each question's window."""

    samples: list[Sample]
    texts: list[str]
    rows: list[np.ndarray]
    """Per timeline: (T,) indices into ``texts``."""
    windows: np.ndarray
    """(S, 3) per question: its timeline, first and end position (its list is rows[t][first:end])."""
    stories: list[list[int]]
    """Question indices per timeline."""

    @property
    def lengths(self) -> np.ndarray:
        return self.windows[:, 2] - self.windows[:, 1]

    def words_per_question(self) -> float:
        """Mean word tokens in a question's list (memsel.data.babi.tokenize, as the haystack's summary counts)."""
        words = np.array([len(tokenize(t)) for t in self.texts], dtype=np.int64)
        totals = [words[self.rows[t][first:end]].sum() for t, first, end in self.windows]
        return float(np.mean(totals)) if totals else 0.0

    def scoring_view(self):
        """What memsel.evaluate's scoring functions read: mask, support, n_support (lists padded on the right)."""
        n = int(self.lengths.max())
        mask = np.arange(n)[None, :] < self.lengths[:, None]
        support = np.zeros_like(mask)
        for i, s in enumerate(self.samples):
            support[i, list(s.supporting)] = True
        return _View(mask, support, np.array([len(s.supporting) for s in self.samples], dtype=np.int64))


@dataclass
class _View:
    mask: np.ndarray
    support: np.ndarray
    n_support: np.ndarray

    def __len__(self) -> int:
        return len(self.mask)


def haystack_split(samples: list[Sample], timelines: list[Timeline]) -> Split:
    """The split's timelines; without any (plain bAbI), each story's longest list is its timeline."""
    if not timelines:
        timelines = []
        for idx in story_groups(samples):
            last = max(idx, key=lambda i: len(samples[i].memories))
            timelines.append(Timeline(list(samples[last].memories), [],
                                      [(i, len(samples[i].memories)) for i in idx]))
    index: dict[str, int] = {}
    rows, windows, stories = [], np.zeros((len(samples), 3), dtype=np.int64), []
    for t, tl in enumerate(timelines):
        rows.append(np.array([index.setdefault(m, len(index)) for m in tl.memories], dtype=np.int64))
        stories.append([i for i, _ in tl.questions])
        for i, end in tl.questions:
            windows[i] = (t, end - len(samples[i].memories), end)
    return Split(samples, list(index), rows, windows, stories)


def token_ids(vocab: Vocab, texts: list[str], length: int) -> torch.Tensor:
    """(len(texts), length) token ids of ``texts`` (0 = padding), each cut to ``length``."""
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for j, text in enumerate(texts):
        ids = vocab.encode(text)[:length]
        out[j, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


@torch.inference_mode()
def embed_texts(net: Selector, vocab: Vocab, texts: list[str], chunk: int = 2048) -> torch.Tensor:
    """(U, d) memory embeddings of ``texts``, ``chunk`` at a time."""
    length = net.spec.max_sentence_len
    parts = [net.encode_memories(token_ids(vocab, texts[i:i + chunk], length)[None])[0]
             for i in range(0, len(texts), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, net.config.embed_dim)


def story_batch(split: Split, cache: torch.Tensor, questions: list[int], slots: int):
    """Padded embeddings (B, n, d), ages and mask (B, n) of ``questions``' lists, each cut to its newest ``slots``."""
    t = split.windows[questions[0], 0]
    firsts = np.maximum(split.windows[questions, 1], split.windows[questions, 2] - slots)
    ends = split.windows[questions, 2]
    n = int((ends - firsts).max())
    idx = torch.zeros(len(questions), n, dtype=torch.long)
    mask = torch.zeros(len(questions), n, dtype=torch.bool)
    ages = torch.zeros(len(questions), n, dtype=torch.long)
    for b, (first, end) in enumerate(zip(firsts, ends)):
        k = int(end - first)
        idx[b, :k] = torch.from_numpy(split.rows[t][first:end])
        mask[b, :k] = True
        ages[b, :k] = torch.arange(k - 1, -1, -1)
    return cache[idx], ages, mask, firsts - split.windows[questions, 1]


@torch.inference_mode()
def selector_choices(net: Selector, vocab: Vocab, split: Split, hops: int, chunk: int = 2048) -> np.ndarray:
    """(S, H) greedy choices of ``net`` (positions in each question's list; -1 past a question's hops)."""
    net.eval()
    cache = embed_texts(net, vocab, split.texts, chunk)
    queries = net.encode_query(token_ids(vocab, [s.query for s in split.samples], net.spec.max_sentence_len))
    n_hops = question_hops(hops, np.array([len(s.supporting) for s in split.samples], dtype=np.int64))
    chosen = np.full((len(split.samples), int(n_hops.max(initial=1))), -1, dtype=np.int64)
    slots = net.spec.max_memories if net.age_embed is not None else int(split.lengths.max(initial=1))
    for questions in split.stories:
        x, ages, mask, offset = story_batch(split, cache, questions, slots)
        u = queries[questions]
        selected = torch.zeros(mask.shape)
        for h in range(int(n_hops[questions].max())):
            pick = net.score(x, u, ages, mask, selected).argmax(-1)  # (B,)
            active = torch.from_numpy(n_hops[questions] > h)
            rows = np.asarray(questions)[active.numpy()]
            chosen[rows, h] = (pick[active].numpy() + offset[active.numpy()])
            selected[active.nonzero(as_tuple=True)[0], pick[active]] = 1.0
    return chosen


def recency_choices(split: Split, hops: np.ndarray) -> dict[str, np.ndarray]:
    """(S, H) choices of ``most_recent`` (the newest memory every hop) and ``recency_prior`` (the h-th newest)."""
    h = int(hops.max(initial=1))
    last = split.lengths[:, None] - 1
    ranks = np.arange(h)[None, :]
    live = ranks < hops[:, None]
    return {"most_recent": np.where(live, last, -1),
            "recency_prior": np.where(live & (last - ranks >= 0), last - ranks, -1)}


def bm25_choices(split: Split, hops: np.ndarray) -> np.ndarray:
    """(S, H): at hop h the h-th best memory of the question's list by BM25 against the question."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG: a line per question otherwise

    def tokens(texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)

    words = tokens(split.texts)
    chosen = np.full((len(split.samples), int(hops.max(initial=1))), -1, dtype=np.int64)
    for i, (s, (t, first, end)) in enumerate(zip(split.samples, split.windows)):
        docs = [words[j] for j in split.rows[t][first:end]]
        retriever = bm25s.BM25()
        retriever.index(docs, show_progress=False)
        scores = retriever.get_scores(tokens([s.query])[0])  # (n,)
        order = np.lexsort((-np.arange(len(docs)), -scores))  # best score first, ties: the newer memory
        k = min(int(hops[i]), len(docs))
        chosen[i, :k] = order[:k]
    return chosen


@torch.inference_mode()
def answer_accuracy(reader, vocab: Vocab, split: Split, chosen: np.ndarray) -> float:
    """Fraction of questions the answer reader (memsel.reader) answers right from the memories ``chosen`` (S, H)."""
    length = reader.spec.max_sentence_len
    s_count, h = chosen.shape
    memories = torch.zeros(s_count, h, length, dtype=torch.long)
    for i, row in enumerate(chosen):
        t, first, _ = split.windows[i]
        live = [c for c in row if c >= 0]
        if live:
            memories[i, :len(live)] = token_ids(vocab, [split.texts[split.rows[t][first + c]] for c in live], length)
    reads = torch.from_numpy(np.where(chosen >= 0, np.arange(h)[None, :], -1))
    query = token_ids(vocab, [s.query for s in split.samples], length)
    said = reader.answer(memories, query, reads).numpy()
    answers = np.array([(vocab.encode(s.answer) or [1])[0] for s in split.samples])
    return float((said == answers).mean())


def score_methods(split: Split, hops: int, selectors: dict[str, Selector], vocab: Vocab,
                  bm25: bool = True, reader=None) -> dict[str, dict]:
    """{method: metrics} of the baselines, BM25 and each selector on ``split`` (memsel.evaluate's metrics,
    with ``seconds`` and, for selectors, ``memories_per_second``: memories scored per wall second; with an
    answer ``reader``, every method but random also has ``answer_accuracy``)."""
    view = split.scoring_view()
    n_hops = question_hops(hops, view.n_support)
    results = {"random": random_scores(view, n_hops)}
    for name, chosen in recency_choices(split, n_hops).items():
        results[name] = score_choices(view, chosen, n_hops)
        if reader is not None:
            results[name]["answer_accuracy"] = answer_accuracy(reader, vocab, split, chosen)
    timed = {}
    if bm25:
        t = time.perf_counter()
        timed["bm25"] = (bm25_choices(split, n_hops), time.perf_counter() - t)
    for name, net in selectors.items():
        t = time.perf_counter()
        timed[name] = (selector_choices(net, vocab, split, hops), time.perf_counter() - t)
    memories = float(split.lengths.sum())
    for name, (chosen, seconds) in timed.items():
        results[name] = {**score_choices(view, chosen, n_hops), "seconds": seconds,
                         "memories_per_second": memories / max(seconds, 1e-9)}
        if reader is not None:
            results[name]["answer_accuracy"] = answer_accuracy(reader, vocab, split, chosen)
    return results


LENGTH_METHODS = ("random", "most_recent", "recency_prior", "bm25")


def format_lengths(results: dict[str, dict]) -> str:
    """A table: one row per method, one column per length, selection accuracy (%)."""
    lengths = list(results)
    methods = [m for m in LENGTH_METHODS if any(m in results[k]["results"] for k in lengths)]
    methods += sorted({m for k in lengths for m in results[k]["results"]} - set(methods))
    head = f"{'method':<16}" + "".join(f"{'len ' + k:>12}" for k in lengths)
    rows = [head, "-" * len(head)]
    for m in methods:
        cells = [results[k]["results"].get(m, {}).get("selection_accuracy") for k in lengths]
        rows.append(f"{m:<16}" + "".join(f"{'-' if c is None else f'{100 * c:.1f}':>12}" for c in cells))
    words = "".join(f"{results[k]['words_per_question']:>12,.0f}" for k in lengths)
    rows.append(f"{'words/question':<16}{words}")
    return "\n".join(rows)
