"""Memory budgets: which K of a question's memories it may see.

One function, :func:`apply_budget`, serves the environment (per episode, for ``sample``),
pretraining and evaluation, so all three see K slots chosen by the same rule.
Strategies register themselves in :data:`STRATEGIES` with their config dataclass:

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

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from memsel.data.encode import EncodedSamples
from memsel.registry import ConfigError, Registry, check

STRATEGIES = Registry("memory-budget strategy")
"""env.budget_strategy -> a :class:`BudgetStrategy` class and its config dataclass."""


class BudgetStrategy:
    """Chooses which K of each question's memory slots a budget shows; registered in :data:`STRATEGIES`.

    A strategy may hold state (a model, say): :class:`Budget` builds one instance from its config."""

    budgeted: ClassVar[bool] = True
    """False for a strategy without a budget ('all'): K must be 0 and the data passes unchanged."""
    fixed: ClassVar[bool] = True
    """True when a row's slots are the same every time (the environment then chooses them once)."""
    needs_tokens: ClassVar[bool] = False
    """True for a strategy that reads the memories' token ids: its ``select`` is then also given
    ``memories=`` (S, N, L). Strategies without it keep the four-argument ``select``."""

    def __init__(self, config: Any = None):
        self.config = config

    def select(self, mask: np.ndarray, ages: np.ndarray, k: int, rng: np.random.Generator | None) -> np.ndarray:
        """(S, k) slot indices into the N slots of each row, story order, -1 = padding; see :func:`select_slots`."""
        raise NotImplementedError

    def describe(self, k: int) -> str:
        """How the K slots are chosen, for logs."""
        return f"K = {k} ({self.name})"

    @property
    def name(self) -> str:
        return next(n for n in STRATEGIES.names() if STRATEGIES.get(n) is type(self))


@STRATEGIES.register("all")
class AllMemories(BudgetStrategy):
    """``all``: no budget; every memory, padded to the data's slot count."""

    budgeted = False

    def select(self, mask, ages, k, rng):
        idx = np.broadcast_to(np.arange(mask.shape[1]), mask.shape).copy()
        idx[~mask] = -1
        return idx

    def describe(self, k: int) -> str:
        return "no budget (all memories)"


@STRATEGIES.register("truncate")
class Truncate(BudgetStrategy):
    """``truncate``: the K most recent memories."""

    def select(self, mask, ages, k, rng):
        counts = mask.sum(1)  # (S,) memories per row, in slots 0..count-1
        keep = np.minimum(counts, k)  # (S,)
        idx = (counts - keep)[:, None] + np.arange(k)[None, :]  # the last `keep` memories
        idx[np.arange(k)[None, :] >= keep[:, None]] = -1
        return idx


@dataclass
class SampleConfig:
    """``sample``'s settings; env spells them ``sample_weighting`` and ``sample_decay``."""

    FLAT_PREFIX: ClassVar[str] = "sample_"
    """Its fields are also EnvConfig fields with this prefix (always checked, whatever the strategy)."""
    weighting: str = "uniform"
    """Draw memories uniformly or by recency weight exp(-decay * age)."""
    decay: float = 0.1
    """'recency' weighting: the rate of exp(-decay * age)."""

    def validate(self, p: str = "env") -> None:
        check(self.weighting in SAMPLE_WEIGHTINGS, f"{p}.sample_weighting", f"one of {list(SAMPLE_WEIGHTINGS)}",
              self.weighting)
        check(self.decay >= 0, f"{p}.sample_decay", "a number >= 0", self.decay)


SAMPLE_WEIGHTINGS = ("uniform", "recency")


@STRATEGIES.register("sample", SampleConfig)
class SampleMemories(BudgetStrategy):
    """``sample``: K memories drawn without replacement, uniformly or with weight exp(-decay * age)."""

    fixed = False

    def select(self, mask, ages, k, rng):
        if rng is None:
            raise ValueError("budget strategy 'sample' needs a seeded random generator")
        s_count, n = mask.shape
        counts = mask.sum(1)
        # Gumbel top-k: the k largest log-weight + Gumbel noise are a draw without replacement with
        # probabilities proportional to the weights (uniform when the weights are equal).
        keys = rng.gumbel(size=(s_count, n))  # (S, N)
        if self.config.weighting == "recency":
            keys = keys - self.config.decay * ages
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

    def describe(self, k: int) -> str:
        c = self.config
        return f"K = {k} (sample, {c.weighting}" + (f" exp(-{c.decay:g} * age))" if c.weighting == "recency" else ")")


def check_budget(k: int, name: str, env: Any, options: dict | None = None, p: str = "env") -> Any:
    """Refuse a budget memsel cannot apply (naming the field); returns the strategy's validated config.

    ``env``: an :class:`memsel.config.EnvConfig` or anything with its budget field names."""
    STRATEGIES.check(name, f"{p}.budget_strategy")
    budgeted = [n for n in STRATEGIES.names() if STRATEGIES.get(n).budgeted]
    if STRATEGIES.get(name).budgeted:
        check(k >= 1, f"{p}.memory_budget",
              f"an integer K >= 1 with budget_strategy '{name}' (0 = no budget only with "
              f"{' or '.join(repr(n) for n in STRATEGIES.names() if n not in budgeted)})", k)
    else:
        # A K that the strategy would silently ignore is refused: the user meant a budget.
        check(k == 0, f"{p}.memory_budget", f"0 with budget_strategy '{name}' (no budget); for a budget K >= 1 "
              f"set budget_strategy to {' or '.join(repr(n) for n in budgeted)}", k)
    return STRATEGIES.check_choice(name, env, options, p, "budget_strategy", "budget_options")


@dataclass(frozen=True)
class Budget:
    """A memory budget: K slots and the registered strategy that fills them."""

    k: int = 0
    """Slots per question; 0 = no budget (strategy 'all' only)."""
    strategy: str = "all"
    """A name in :data:`STRATEGIES`."""
    weighting: str = "uniform"
    """For 'sample': 'uniform' or 'recency' (env.sample_weighting)."""
    decay: float = 0.1
    """For 'sample' with 'recency': the rate of the weight exp(-decay * age) (env.sample_decay)."""
    options: dict = field(default_factory=dict)
    """Settings of a strategy whose config env does not spell with keys of its own (env.budget_options)."""

    def __post_init__(self) -> None:
        flat = _EnvKeys(self.weighting, self.decay)
        try:
            config = check_budget(self.k, self.strategy, flat, self.options)
        except ConfigError as e:
            raise ValueError(f"memory budget: {e}") from None
        object.__setattr__(self, "rule", STRATEGIES.get(self.strategy)(config))

    @classmethod
    def from_config(cls, env) -> "Budget":
        """From an :class:`memsel.config.EnvConfig` (or anything with its field names)."""
        return cls(env.memory_budget, env.budget_strategy, env.sample_weighting, env.sample_decay,
                   dict(getattr(env, "budget_options", {}) or {}))

    def slots(self, n: int) -> int:
        """Observation slots for data with ``n`` slots: K, capped at ``n`` (a larger K changes nothing)."""
        return min(self.k, n) if self.rule.budgeted else n

    def describe(self) -> str:
        return self.rule.describe(self.k)


@dataclass(frozen=True)
class _EnvKeys:
    """Budget's own fields under their env names, for :func:`check_budget`."""

    sample_weighting: str
    sample_decay: float


def select_slots(mask: np.ndarray, ages: np.ndarray, budget: Budget,
                 rng: np.random.Generator | None = None, memories: np.ndarray | None = None) -> np.ndarray:
    """(S, K') slot indices into the N slots of each row, story order, -1 = padding; K' = budget.slots(N).

    ``mask`` (S, N) bool marks memories (a prefix of each row); ``ages`` (S, N) their ages.
    ``rng`` is needed for 'sample' (one draw per row, in row order); ``memories`` (S, N, L) token ids
    for a strategy that reads them (``needs_tokens``, e.g. 'managed').
    """
    k = budget.slots(mask.shape[1])
    if budget.rule.needs_tokens:
        return budget.rule.select(mask, ages, k, rng, memories=memories)
    return budget.rule.select(mask, ages, k, rng)


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
    if not budget.rule.budgeted:
        return data
    if isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(int(rng))
    return gather(data, select_slots(data.mask, data.ages, budget, rng, data.memories))


def support_outside(data: EncodedSamples) -> dict[str, int]:
    """Supporting facts outside the slots, and questions left with none inside, for reports."""
    inside = data.support.sum(1)
    return {"support_outside_budget": int((data.n_support - inside).sum()),
            "questions_without_support": int(((inside == 0) & (data.n_support > 0)).sum())}
