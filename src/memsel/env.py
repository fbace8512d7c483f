"""A gymnasium environment over the same encoded samples that pretraining uses.

One episode is one question. The observation is the question's memories seen through the memory
budget (padded, masked), the query, the memories' ages in the full story, and ``selected``, the
memories already chosen in this episode. An action picks a memory slot.

- Memory budget (``memory_budget`` K, ``budget_strategy``): ``all`` shows every memory, padded to
  the data's slot count; ``truncate`` the K most recent; ``sample`` K drawn anew every episode
  (uniformly or by recency weight, from the env's seeded generator). Supporting facts outside the
  budget are counted in ``info["support_outside_budget"]``; they cap what an episode can earn.
- Hops (``hops``): selections per episode; 0 = as many as the question has supporting facts.
  After each selection the observation's ``selected`` marks the chosen memory (the network adds
  it to its query, as MemN2N's u_{k+1} = u_k + o_k). Choosing a memory again is allowed (the mask
  is the validity mask and stays fixed within an episode) but earns nothing.
- Reward (``reward_mode``): ``supporting`` scores the chosen set by the supporting facts it
  holds, |chosen & support| / min(hops, supporting facts); ``answer`` asks a reader to answer
  from the chosen memories and scores 1 when it is right. ``reward_timing``: ``per_hop`` pays each
  selection what it adds to that score, ``final`` pays the score after the last selection; both
  sum to the same return, in [0, 1].
- Padded slots are invalid actions: the mask makes them impossible for a masked policy, and
  forcing one raises :class:`InvalidActionError` instead of quietly scoring 0.

One observation space serves every mode: ``selected`` is always there (all zeros for one hop).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence

import gymnasium as gym
import numpy as np

from memsel.data.budget import Budget, apply_budget, select_slots
from memsel.data.encode import EncodedSamples, question_hops
from memsel.registry import Registry

log = logging.getLogger(__name__)

REWARD_MODES = ("supporting", "answer")
"""env.reward_mode: what an episode's score counts (memsel.config checks against this)."""
REWARD_TIMINGS = ("per_hop", "final")
"""env.reward_timing: when the score is paid."""
OBS_KEYS = ("memories", "mask", "query", "ages", "selected")


class InvalidActionError(ValueError):
    """An action that names a padded (masked) memory slot, or a step outside an episode."""


class Reader(Protocol):
    """Answers a question from the chosen memories; the env's ``answer`` reward asks one.

    ``memories`` (K, L) token ids of the observation's slots, ``chosen`` the slots chosen so far
    (in order, possibly repeated), ``query`` (L,) token ids. Returns the answer's token id, or a
    collection of candidate ids when the reader cannot tell them apart: the answer counts as
    read when the true answer's id is the one returned, or among the candidates.
    """

    def __call__(self, memories: np.ndarray, chosen: Sequence[int], query: np.ndarray) -> int | Collection[int]: ...


READERS = Registry("answer reader")
"""env.reader -> a reader class (or factory) and its config dataclass (the env's ``reader_config``)."""


@READERS.register("contains")
class ContainsReader:
    """The default reader: needs no training and no words, only token ids.

    It "reads" every token of the chosen memories, so an answer counts as read when its token
    appears in one of them.
    """

    def __call__(self, memories: np.ndarray, chosen: Sequence[int], query: np.ndarray) -> Collection[int]:
        tokens = memories[list(chosen)]
        return frozenset(int(t) for t in np.unique(tokens) if t > 0)


@dataclass
class LearnedReaderConfig:
    """``learned``: a trained :class:`memsel.reader.AnswerReader` file (pretraining with ``pretrain.answer_weight > 0``)."""

    path: str = ""
    """The reader file, <run>/pretrain/reader.pt."""

    def validate(self) -> None:
        if not self.path:
            raise ValueError("env_config['reader'] 'learned' needs reader_config {'path': <run>/pretrain/reader.pt}")


# The learned reader needs torch: registered by reference so that configs check its name without it.
READERS.register_config("learned", "memsel.reader:LearnedReader")(LearnedReaderConfig)


def make_reader(spec: Any, reader_config: dict | None = None, field: str = "env_config['reader']") -> Reader:
    """A reader from env_config: a name in :data:`READERS`, 'package.module:factory', or a callable reader;
    errors name ``field`` (the config's ``env.reader`` when memsel.preflight asks before a run)."""
    if spec is None:
        spec = "contains"
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"{field}: expected {READERS.expected()}, 'package.module:factory' or a "
                         f"callable, got {spec!r}")
    if spec in READERS:
        config_cls = READERS.config_cls(spec)
        if config_cls is None:
            return READERS.get(spec)(**(reader_config or {}))
        config = config_cls(**(reader_config or {}))
        config.validate()
        return READERS.get(spec)(**asdict(config))
    if ":" not in spec:
        raise ValueError(f"{field}: expected {READERS.expected()} or 'package.module:factory', "
                         f"got {spec!r}")
    module, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{field}: cannot load {spec!r}: {e}") from None
    return factory(**(reader_config or {}))


def make_env_config(env: Any, *, data_path: str | None = None, data: EncodedSamples | None = None,
                    seed: int | None = None, vocab_size: int = 0, reader_config: dict | None = None) -> dict:
    """env_config for :class:`MemorySelectionEnv` from an :class:`memsel.config.EnvConfig`."""
    cfg = dict(asdict(env))
    cfg.update({"seed": seed, "vocab_size": vocab_size})
    if data_path is not None:
        cfg["data_path"] = str(data_path)
    if data is not None:
        cfg["data"] = data
    if reader_config:
        cfg["reader_config"] = reader_config
    return cfg


def _choice(cfg: dict, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = cfg.get(key, default)
    if value not in allowed:
        raise ValueError(f"env_config['{key}']: expected one of {list(allowed)}, got {value!r}")
    return value


class MemorySelectionEnv(gym.Env):
    """env_config: ``data_path`` (an encoded ``.npz`` split) or ``data`` (EncodedSamples); ``seed``;
    ``vocab_size``; and the :class:`memsel.config.EnvConfig` fields ``memory_budget``,
    ``budget_strategy``, ``sample_weighting``, ``sample_decay``, ``reward_mode``, ``reader`` (+
    ``reader_config``), ``hops``, ``reward_timing``. Missing keys take the defaults (all
    memories, one hop, reward for a supporting fact)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_config: dict | None = None):
        cfg = dict(env_config or {})
        data = cfg.get("data")
        if data is None:
            if "data_path" not in cfg:
                raise ValueError("MemorySelectionEnv needs env_config['data_path'] (an encoded .npz split) "
                                 "or env_config['data']")
            data = EncodedSamples.load(cfg["data_path"])
        if len(data) == 0:
            raise ValueError("MemorySelectionEnv: the data split has no samples")
        try:
            self.budget = Budget(int(cfg.get("memory_budget", 0)), cfg.get("budget_strategy", "all"),
                                 cfg.get("sample_weighting", "uniform"), float(cfg.get("sample_decay", 0.1)),
                                 dict(cfg.get("budget_options") or {}))
        except ValueError as e:
            raise ValueError(f"env_config: {e}") from None
        self.reward_mode = _choice(cfg, "reward_mode", REWARD_MODES, "supporting")
        self.reward_timing = _choice(cfg, "reward_timing", REWARD_TIMINGS, "per_hop")
        self.hops = int(cfg.get("hops", 1))
        if self.hops < 0:
            raise ValueError(f"env_config['hops']: expected an integer >= 0 (0 = as many as the supporting facts), "
                             f"got {self.hops}")
        self.reader = make_reader(cfg.get("reader"), cfg.get("reader_config")) if self.reward_mode == "answer" else None

        self.data = data
        _, n, length = data.memories.shape
        self.n_slots = k = self.budget.slots(n)
        # Strategies that choose the same slots every time ('all', 'truncate') choose them once.
        self._view = apply_budget(data, self.budget) if self.budget.rule.fixed else None
        vocab_high = max(int(data.memories.max()), int(data.query.max()), int(cfg.get("vocab_size", 1)) - 1, 1)
        self.observation_space = gym.spaces.Dict({
            "memories": gym.spaces.Box(0, vocab_high, shape=(k, length), dtype=np.int64),
            "mask": gym.spaces.MultiBinary(k),
            "query": gym.spaces.Box(0, vocab_high, shape=(length,), dtype=np.int64),
            # ages stay ages in the full story, whatever the budget keeps
            "ages": gym.spaces.Box(0, max(n - 1, 1), shape=(k,), dtype=np.int64),
            "selected": gym.spaces.MultiBinary(k),
        })
        self.action_space = gym.spaces.Discrete(k)
        log.debug("MemorySelectionEnv: %d questions, %s, hops %s, reward %s (%s)", len(data), self.budget.describe(),
                  self.hops or "per question", self.reward_mode, self.reward_timing)
        self._seed = cfg.get("seed")
        self._seeded = False
        self._i = 0
        self._active = False

    # ------------------------------------------------------------------ episode state
    def _load(self, i: int) -> None:
        """Fill the episode's slots for sample ``i`` (a fresh draw for 'sample')."""
        if self._view is not None:
            v = self._view
            self._memories, self._mask, self._ages = v.memories[i], v.mask[i], v.ages[i]
            self._support = v.support[i]
        else:
            d = self.data
            idx = select_slots(d.mask[i:i + 1], d.ages[i:i + 1], self.budget, self.np_random,
                               d.memories[i:i + 1])[0]  # (k,)
            # -1 (padding) only occurs when the row has fewer memories than slots; then the slot
            # just past its memories is a padding slot (zeros, masked): point there, no copies.
            idx[idx < 0] = min(int(d.mask[i].sum()), d.mask.shape[1] - 1)
            self._memories, self._mask = d.memories[i, idx], d.mask[i, idx]
            self._ages, self._support = d.ages[i, idx], d.support[i, idx]
        self._mask8 = self._mask.astype(np.int8)
        self._selected = np.zeros(self.n_slots, dtype=np.int8)
        self._chosen: list[int] = []
        n_support = int(self.data.n_support[i])
        self._outside = n_support - int(self._support.sum())
        self._episode_hops = question_hops(self.hops, n_support)
        self._denominator = max(min(self._episode_hops, n_support), 1)
        self._score = 0.0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"memories": self._memories, "mask": self._mask8, "query": self.data.query[self._i],
                "ages": self._ages, "selected": self._selected.copy()}

    def _score_now(self) -> float:
        """The episode's score for the memories chosen so far, in [0, 1]."""
        if self.reward_mode == "supporting":
            hits = sum(bool(self._support[c]) for c in set(self._chosen))
            return min(hits / self._denominator, 1.0)
        said = self.reader(self._memories, list(self._chosen), self.data.query[self._i])
        answer = int(self.data.answer[self._i])
        if isinstance(said, (int, np.integer)):
            return float(int(said) == answer)
        return float(answer in said)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and not self._seeded and self._seed is not None:
            seed = self._seed
        super().reset(seed=seed)
        self._seeded = True
        self._i = int(self.np_random.integers(len(self.data)))
        self._load(self._i)
        self._active = True
        return self._obs(), {"sample": self._i, "hops": self._episode_hops,
                             "support_outside_budget": self._outside}

    def step(self, action):
        if not self._active:
            raise InvalidActionError("step() outside an episode: call reset() first (the last episode ended)")
        a = int(action)
        if not (0 <= a < self.n_slots) or not self._mask[a]:
            count = int(self._mask.sum())
            raise InvalidActionError(
                f"action {a} names a padded memory slot (sample {self._i} shows {count} memories in slots "
                f"0..{count - 1} of {self.n_slots}; the observation's mask marks the valid ones)")
        self._chosen.append(a)
        self._selected[a] = 1
        hop = len(self._chosen)
        done = hop >= self._episode_hops
        if self.reward_timing == "per_hop" or done:
            score = self._score_now()
        else:
            score = self._score
        reward = score - self._score if self.reward_timing == "per_hop" else (score if done else 0.0)
        self._score = score
        self._active = not done
        info = {"sample": self._i, "hop": hop, "hops": self._episode_hops, "chosen_supporting": bool(self._support[a]),
                "correct": bool(score >= 1.0 - 1e-9), "support_outside_budget": self._outside}
        return self._obs(), float(reward), done, False, info
