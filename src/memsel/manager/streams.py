"""Stories as streams of statements, the eviction policies a memory of K slots can follow, and retention.

Pure numpy: no torch, Lightning, Ray or MLflow. A :class:`Stream` is one story: its statements in order,
and for each question the number of statements before it (its time) and its supporting statements.
Memory holds at most K statements, oldest first (slot i = the i-th oldest held). Statement t arrives;
while fewer than K are held it is simply kept; with a full memory a policy chooses a *decision* in
0..K: a slot to evict (0..K-1, the newcomer then takes the last slot) or K = drop the newcomer.

Retention = the fraction of (question, supporting fact) pairs whose fact is held when the question comes.

Policies (:class:`EvictionPolicy`): ``fifo`` evicts the oldest, ``lifo`` the newest held, ``random``
a uniformly drawn held slot (seeded), ``lru`` the least recently used by a selector's attention (a
callback says which held memories the selector puts in its top choices at each question; arriving
counts as a use), and ``oracle`` Belady's rule with knowledge of the future questions: evict the
memory needed latest or never, the newcomer included (dropped when it is that one). Belady's rule is
optimal when every fact is needed at most once; a fact needed several times is kept by its next use,
not by how many uses it has left, so the rule is the classic bound, not a proven optimum here.
:class:`Mixture` plays one policy or another at random (DAgger's rollouts: the manager, mixed with the oracle).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from memsel.data.encode import Vocab
from memsel.data.sample import Sample

NEVER = np.iinfo(np.int64).max
"""The next use of a memory that no later question needs."""


@dataclass(frozen=True)
class Stream:
    """One story: ``statements`` in order; question q comes after ``times[q]`` statements and is supported
    by the statements ``support[q]`` (indices into ``statements``, each < ``times[q]``)."""

    statements: tuple[str, ...]
    times: tuple[int, ...]
    support: tuple[tuple[int, ...], ...]
    source: str = ""
    """Where the story comes from (``file#story``), for messages."""
    queries: tuple[str, ...] = ()
    """The questions' text, in the order of ``times`` (for baselines that ask a selector; may be empty)."""

    def __len__(self) -> int:
        return len(self.statements)

    @property
    def pairs(self) -> int:
        """(question, supporting fact) pairs: retention's denominator."""
        return sum(len(s) for s in self.support)

    def uses(self) -> list[list[int]]:
        """For each statement, the times of the questions it supports, ascending."""
        out: list[list[int]] = [[] for _ in self.statements]
        for time, facts in zip(self.times, self.support):
            for f in facts:
                out[f].append(time)
        return [sorted(u) for u in out]


def streams_from_samples(samples: Sequence[Sample]) -> list[Stream]:
    """One stream per story, grouped by (source file, story), in order of first appearance. The questions
    of a story share a prefix of memories; the longest one holds the story's statements."""
    groups: dict[tuple[str, int], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.source.rsplit(":", 1)[0], s.story)].append(s)
    streams = []
    for (source, story), group in groups.items():
        statements = max((s.memories for s in group), key=len)
        for s in group:
            if statements[:len(s.memories)] != s.memories:
                raise ValueError(f"{s.source}: the questions of story {story} do not share their memories' prefix")
        group = sorted(group, key=lambda s: len(s.memories))
        streams.append(Stream(tuple(statements), tuple(len(s.memories) for s in group),
                              tuple(tuple(s.supporting) for s in group), f"{source}#{story}",
                              tuple(s.query for s in group)))
    return streams


def encode_stream(stream: Stream, vocab: Vocab, length: int) -> np.ndarray:
    """(T, L) token ids of the stream's statements (0 = pad), cut to ``length`` tokens as memsel.data.encode does."""
    out = np.zeros((len(stream), length), dtype=np.int64)
    for i, text in enumerate(stream.statements):
        ids = vocab.encode(text)[:length]
        out[i, :len(ids)] = ids
    return out


# ----------------------------------------------------------------------------- policies


class EvictionPolicy:
    """Chooses what a full memory gives up when a statement arrives (module docstring)."""

    name = "policy"

    def reset(self, stream: Stream) -> None:
        """Called before each stream."""

    def decide(self, held: np.ndarray, t: int) -> int:
        """``held`` (K,) statement indices, oldest first, memory full; ``t`` the arriving statement.
        Returns a slot in 0..K-1 to evict, or K to drop the newcomer."""
        raise NotImplementedError

    def question(self, q: int, held: np.ndarray) -> None:
        """Question ``q`` of the stream comes while ``held`` (statement indices) are in memory."""


class FIFO(EvictionPolicy):
    """Evict the oldest memory."""

    name = "fifo"

    def decide(self, held, t):
        return 0


class LIFO(EvictionPolicy):
    """Evict the newest memory held (never the newcomer)."""

    name = "lifo"

    def decide(self, held, t):
        return len(held) - 1


class RandomEviction(EvictionPolicy):
    """Evict a held memory drawn uniformly (the newcomer is always kept); seeded once, drawn in stream order."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def decide(self, held, t):
        return int(self.rng.integers(len(held)))


Attend = Callable[[Stream, int, np.ndarray], np.ndarray]
"""(stream, question index, held statement indices (K',)) -> the held statement indices a selector's
attention puts in its top choices at that question."""


class LRU(EvictionPolicy):
    """Evict the least recently used memory: its last use is the last question at which ``attend`` put it in
    its top choices, or its arrival; ties go to the oldest."""

    name = "lru"

    def __init__(self, attend: Attend):
        self.attend = attend
        self.stream: Stream | None = None
        self.last: dict[int, int] = {}

    def reset(self, stream):
        self.stream, self.last = stream, {}

    def decide(self, held, t):
        last = np.array([self.last.get(int(i), int(i)) for i in held])  # (K,) a memory's arrival counts as a use
        return int(np.argmin(last))

    def question(self, q, held):
        for i in self.attend(self.stream, q, held):
            self.last[int(i)] = int(self.stream.times[q])


class Oracle(EvictionPolicy):
    """Belady's rule: evict the memory needed latest or never, the newcomer included (module docstring)."""

    name = "oracle"

    def __init__(self) -> None:
        self.uses: list[list[int]] = []

    def reset(self, stream):
        self.uses = stream.uses()

    def candidates(self, held: np.ndarray, t: int) -> np.ndarray:
        """(K+1,) bool: the decisions (slots 0..K-1, K = the newcomer) Belady's rule allows, all ties."""
        nxt = np.array([next_use(self.uses[int(i)], t) for i in (*held, t)], dtype=np.int64)  # (K+1,)
        return nxt == nxt.max()

    def decide(self, held, t):
        best = self.candidates(held, t)
        return len(held) if best[-1] else int(np.argmax(best))  # drop the newcomer if allowed, else the oldest


class Mixture(EvictionPolicy):
    """DAgger's rollout policy (Ross et al. 2011): at each decision the ``expert`` with probability ``beta``,
    else the ``learner``; the draws are seeded once and made in stream order."""

    name = "mixture"

    def __init__(self, learner: EvictionPolicy, expert: EvictionPolicy, beta: float, seed: int = 0):
        self.learner, self.expert, self.beta = learner, expert, beta
        self.rng = np.random.default_rng(seed)

    def reset(self, stream):
        self.learner.reset(stream)
        self.expert.reset(stream)

    def decide(self, held, t):
        return (self.expert if self.rng.random() < self.beta else self.learner).decide(held, t)

    def question(self, q, held):
        self.learner.question(q, held)
        self.expert.question(q, held)


def eviction_costs(uses: list[list[int]], held: np.ndarray, t: int, best: np.ndarray) -> np.ndarray:
    """(K+1,) float: what each decision loses beyond the oracle's. A memory evicted is gone for good, so a
    decision loses the (question, fact) pairs its candidate supports after ``t``; the cost is that count less
    the fewest any allowed decision (``best``) loses, 0 on the allowed ones. ``uses`` = :meth:`Stream.uses`."""
    left = np.array([len(u) - np.searchsorted(u, t, side="right") for u in (uses[int(i)] for i in (*held, t))],
                    dtype=np.float32)  # (K+1,) pairs still ahead
    return np.where(best, 0.0, np.maximum(left - left[best].min(), 0.0)).astype(np.float32)


def next_use(uses: list[int], t: int) -> int:
    """The first question time after statement ``t`` arrived (> t) in ``uses`` (ascending), or :data:`NEVER`."""
    i = int(np.searchsorted(uses, t, side="right"))
    return uses[i] if i < len(uses) else NEVER


# ----------------------------------------------------------------------------- running a policy


@dataclass
class Trace:
    """What a policy did on one stream."""

    held_at: list[np.ndarray]
    """Per question, the statement indices held when it came (oldest first)."""
    decisions: list[tuple[np.ndarray, int, int]]
    """Per decision: (held (K,), arriving statement t, decision in 0..K)."""
    hits: int
    """(question, supporting fact) pairs whose fact was held."""
    pairs: int


def apply_decision(held: list[int], t: int, decision: int) -> list[int]:
    """The memory after ``decision`` (0..K-1 evicts that slot, K drops ``t``); oldest first."""
    if decision == len(held):
        return held
    return [*held[:decision], *held[decision + 1:], t]


def run_policy(stream: Stream, k: int, policy: EvictionPolicy) -> Trace:
    """Play ``policy`` with a memory of ``k`` slots over ``stream``."""
    policy.reset(stream)
    held: list[int] = []
    decisions = []
    held_at: list[np.ndarray] = []
    order = np.argsort(stream.times, kind="stable")
    q_iter = iter(order)
    q = next(q_iter, None)
    for t in range(len(stream) + 1):
        while q is not None and stream.times[q] == t:
            now = np.array(held, dtype=np.int64)
            held_at.append(now)
            policy.question(int(q), now)
            q = next(q_iter, None)
        if t == len(stream):
            break
        if len(held) < k:
            held.append(t)
            continue
        before = np.array(held, dtype=np.int64)
        d = int(policy.decide(before, t))
        if not 0 <= d <= k:
            raise ValueError(f"{policy.name}: decision {d} outside 0..{k}")
        decisions.append((before, t, d))
        held = apply_decision(held, t, d)
    ordered = [stream.support[q] for q in order]
    hits = sum(len(set(f) & set(h.tolist())) for f, h in zip(ordered, held_at))
    return Trace(held_at, decisions, hits, stream.pairs)


def retention(streams: Sequence[Stream], k: int, policy: EvictionPolicy) -> float:
    """Fraction of (question, supporting fact) pairs held when the question comes, over ``streams``."""
    hits = pairs = 0
    for s in streams:
        trace = run_policy(s, k, policy)
        hits, pairs = hits + trace.hits, pairs + trace.pairs
    return hits / pairs if pairs else float("nan")


def decision_obs(tokens: np.ndarray, held: np.ndarray, t: int) -> dict[str, np.ndarray]:
    """The manager's observation at a decision: the K held memories and the newcomer (K+1 candidates).

    ``tokens`` (T, L) the stream's statements, ``held`` (K,) statement indices (oldest first; -1 = an empty
    slot), ``t`` the arriving statement. Returns memories (K+1, L), mask (K+1,) int8, query (L,) = the
    newcomer, ages (K+1,) = t - arrival (0 for the newcomer and on empty slots)."""
    cand = np.append(held, t)  # (K+1,)
    present = cand >= 0
    memories = np.where(present[:, None], tokens[np.maximum(cand, 0)], 0)
    ages = np.where(present, t - cand, 0).astype(np.int64)
    return {"memories": memories, "mask": present.astype(np.int8), "query": tokens[t].copy(), "ages": ages}


def oracle_decisions(streams: Sequence[Stream], tokens: Sequence[np.ndarray], k: int,
                     policy: EvictionPolicy | None = None) -> dict[str, np.ndarray]:
    """Oracle-labelled decisions on ``streams`` (``tokens`` (T, L) each), as the manager's pretraining batch:
    memories (D, K+1, L), mask (D, K+1) int8, query (D, L), ages (D, K+1), ``best`` (D, K+1) bool, every
    decision Belady's rule allows from that state (ties included), and ``cost`` (D, K+1) float,
    :func:`eviction_costs`. The memory follows ``policy``'s choices (default the oracle's own); with another
    policy these are DAgger's labels: the oracle's choices from the states that policy reaches."""
    oracle = Oracle()
    rows: list[dict[str, np.ndarray]] = []
    for stream, tok in zip(streams, tokens):
        trace = run_policy(stream, k, policy or oracle)
        oracle.reset(stream)
        for held, t, _ in trace.decisions:
            best = oracle.candidates(held, t)
            cost = eviction_costs(oracle.uses, held, t, best)
            rows.append({**decision_obs(tok, held, t), "best": best, "cost": cost})
    length = tokens[0].shape[1] if len(tokens) else 1
    if not rows:
        return {"memories": np.zeros((0, k + 1, length), np.int64), "mask": np.zeros((0, k + 1), np.int8),
                "query": np.zeros((0, length), np.int64), "ages": np.zeros((0, k + 1), np.int64),
                "best": np.zeros((0, k + 1), bool), "cost": np.zeros((0, k + 1), np.float32)}
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


def stack_tokens(tokens: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Streams' (T_s, L) token ids as one padded (S, max T, L) array and their lengths (S,)."""
    counts = np.array([len(t) for t in tokens], dtype=np.int64)
    length = tokens[0].shape[1] if len(tokens) else 1
    out = np.zeros((len(tokens), max(int(counts.max(initial=0)), 1), length), dtype=np.int64)
    for i, t in enumerate(tokens):
        out[i, :len(t)] = t
    return out, counts


def snapshot_hits(streams: Sequence[Stream], snapshots: np.ndarray) -> tuple[int, int]:
    """(hits, pairs) from the memory before each arrival, ``snapshots`` (S, T+1, K) statement indices (-1 =
    empty): a question after t statements sees ``snapshots[s, t]``."""
    hits = pairs = 0
    for s, stream in enumerate(streams):
        for time, facts in zip(stream.times, stream.support):
            held = set(snapshots[s, time].tolist())
            hits += sum(f in held for f in facts)
            pairs += len(facts)
    return hits, pairs
