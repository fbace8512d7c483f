"""Memory budgets: which K of a question's memories it may see.

One function, :func:`apply_budget`, serves the environment (per episode, for ``sample``),
pretraining and evaluation, so all three see K slots chosen by the same rule:

- ``all``: no budget; every memory, padded to the data's slot count (``data.max_memories``).
- ``truncate``: the K most recent memories.
- ``sample``: K memories drawn without replacement, uniformly or with weight
  exp(-decay * age) (recency), from the random generator it is given (seeded by the caller).

Chosen memories stay in story order (oldest first, padding after) and keep their ages in the
full story, so a network's age embedding means the same with and without a budget. Supporting
facts that fall outside the budget are counted (``EncodedSamples.dropped_support`` and
:func:`support_outside`), never hidden: a question whose facts all fall outside cannot be
answered, and evaluation counts it as a miss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memsel.data.encode import EncodedSamples

STRATEGIES = ("all", "truncate", "sample")
WEIGHTINGS = ("uniform", "recency")


@dataclass(frozen=True)
class Budget:
    """A memory budget: K slots and the rule that fills them."""

    k: int = 0
    """Slots per question; 0 = no budget (strategy 'all' only)."""
    strategy: str = "all"
    weighting: str = "uniform"
    """For 'sample': 'uniform' or 'recency'."""
    decay: float = 0.1
    """For 'sample' with 'recency': the rate of the weight exp(-decay * age)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"budget strategy: expected one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"budget sample weighting: expected one of {list(WEIGHTINGS)}, got {self.weighting!r}")
        if self.strategy == "all" and self.k != 0:
            raise ValueError(f"memory budget: expected 0 with strategy 'all' (no budget), got {self.k}")
        if self.strategy != "all" and self.k < 1:
            raise ValueError(f"memory budget: expected K >= 1 with strategy {self.strategy!r}, got {self.k}")
        if self.decay < 0:
            raise ValueError(f"budget sample decay: expected a number >= 0, got {self.decay}")

    @classmethod
    def from_config(cls, env) -> "Budget":
        """From an :class:`memsel.config.EnvConfig` (or anything with its field names)."""
        return cls(env.memory_budget, env.budget_strategy, env.sample_weighting, env.sample_decay)

    def slots(self, n: int) -> int:
        """Observation slots for data with ``n`` slots: K, capped at ``n`` (a larger K changes nothing)."""
        return n if self.strategy == "all" else min(self.k, n)

    def describe(self) -> str:
        if self.strategy == "all":
            return "no budget (all memories)"
        rule = f"sample, {self.weighting}" + (f" exp(-{self.decay:g} * age)" if self.weighting == "recency" else "")
        return f"K = {self.k} ({self.strategy if self.strategy != 'sample' else rule})"


def select_slots(mask: np.ndarray, ages: np.ndarray, budget: Budget,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """(S, K') slot indices into the N slots of each row, story order, -1 = padding; K' = budget.slots(N).

    ``mask`` (S, N) bool marks memories (a prefix of each row); ``ages`` (S, N) their ages.
    ``rng`` is needed for 'sample' (one draw per row, in row order).
    """
    s_count, n = mask.shape
    k = budget.slots(n)
    counts = mask.sum(1)  # (S,) memories per row, in slots 0..count-1
    if budget.strategy == "all":
        idx = np.broadcast_to(np.arange(n), (s_count, n)).copy()
        idx[~mask] = -1
        return idx
    if budget.strategy == "truncate":
        keep = np.minimum(counts, k)  # (S,)
        idx = (counts - keep)[:, None] + np.arange(k)[None, :]  # the last `keep` memories
        idx[np.arange(k)[None, :] >= keep[:, None]] = -1
        return idx
    if rng is None:
        raise ValueError("budget strategy 'sample' needs a seeded random generator")
    # Gumbel top-k: the k largest log-weight + Gumbel noise are a draw without replacement with
    # probabilities proportional to the weights (uniform when the weights are equal).
    keys = rng.gumbel(size=(s_count, n))  # (S, N)
    if budget.weighting == "recency":
        keys = keys - budget.decay * ages
    keys[~mask] = -np.inf
    if k < n:
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]  # (S, k), unordered
        top.sort(axis=1)  # story order
    else:
        top = np.broadcast_to(np.arange(n), (s_count, n)).copy()
    # A row with fewer than k memories keeps all of them: memories are the slots 0..count-1, so
    # after sorting they come first and the slots past count are padding.
    top[top >= counts[:, None]] = -1
    return top


def gather(data: EncodedSamples, idx: np.ndarray) -> EncodedSamples:
    """The samples with only the slots ``idx`` (S, K) (-1 = padding), from :func:`select_slots`."""
    safe = np.maximum(idx, 0)
    present = idx >= 0  # (S, K)
    rows = np.arange(len(data))[:, None]
    memories = np.where(present[..., None], data.memories[rows, safe], 0)  # (S, K, L)
    mask = present & data.mask[rows, safe]
    ages = np.where(mask, data.ages[rows, safe], 0)
    support = mask & data.support[rows, safe]
    rank = np.where(support, data.support_rank[rows, safe], 0).astype(np.int8)
    dropped = int((data.n_support - support.sum(1)).sum())
    return EncodedSamples(memories, mask, data.query, ages, support, data.answer, dropped, data.n_support, rank)


def apply_budget(data: EncodedSamples, budget: Budget, rng: np.random.Generator | int | None = None) -> EncodedSamples:
    """``data`` seen through ``budget``; ``dropped_support`` then counts every supporting fact
    outside the K slots (including those already older than the data's slots).

    ``rng``: a generator or a seed, used by 'sample' (one draw per sample).
    """
    if budget.strategy == "all":
        return data
    if isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(int(rng))
    return gather(data, select_slots(data.mask, data.ages, budget, rng))


def support_outside(data: EncodedSamples) -> dict[str, int]:
    """Supporting facts outside the slots, and questions left with none inside, for reports."""
    inside = data.support.sum(1)
    return {"support_outside_budget": int((data.n_support - inside).sum()),
            "questions_without_support": int(((inside == 0) & (data.n_support > 0)).sum())}
