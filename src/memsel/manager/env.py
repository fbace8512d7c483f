"""A gymnasium environment for the memory manager: one episode is one story (memsel.manager.streams).

Statements arrive in order; while the memory holds fewer than K they are kept without asking. At every
arrival with a full memory the agent acts: an action in 0..K evicts that held memory (0 = the oldest) or,
K, drops the newcomer. The observation has the selector's keys (memsel.manager.streams.decision_obs):
memories (K+1, L) = the K held memories and the newcomer, mask (K+1,) (1 where a candidate exists: an empty
slot is masked, though the env only asks with a full memory), query (L,) = the newcomer, ages (K+1,).

Reward (as the Episodic Memory Reader, Han et al. 2019): each question pays the number of its supporting
facts held when it comes. A step is paid for the questions between its decision and the next one; the
questions before the first decision (nothing was evicted yet) are paid at the first step. An episode's
return is therefore the retention count (hits) of its decisions. Stories too short to need a decision
are never drawn.

env_config: ``streams`` (list of Stream), ``tokens`` (list of (T, L) token ids, one per stream), ``k``,
``seed``, ``vocab_size``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np

from memsel.env import InvalidActionError
from memsel.manager.streams import apply_decision, decision_obs


class MemoryManagerEnv(gym.Env):
    """Eviction decisions over stories; see the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_config: dict | None = None):
        cfg = dict(env_config or {})
        self.streams, self.tokens, self.k = list(cfg["streams"]), list(cfg["tokens"]), int(cfg["k"])
        if self.k < 1:
            raise ValueError(f"env_config['k']: expected an integer >= 1, got {self.k}")
        self.playable = [i for i, s in enumerate(self.streams) if len(s) > self.k]
        if not self.playable:
            raise ValueError(f"MemoryManagerEnv: no story has more than K = {self.k} statements (nothing to decide)")
        length = self.tokens[0].shape[1]
        vocab_high = max(max(int(t.max(initial=0)) for t in self.tokens), int(cfg.get("vocab_size", 1)) - 1, 1)
        max_age = max(len(s) for s in self.streams)
        k1 = self.k + 1
        self.observation_space = gym.spaces.Dict({
            "memories": gym.spaces.Box(0, vocab_high, shape=(k1, length), dtype=np.int64),
            "mask": gym.spaces.MultiBinary(k1),
            "query": gym.spaces.Box(0, vocab_high, shape=(length,), dtype=np.int64),
            "ages": gym.spaces.Box(0, max_age, shape=(k1,), dtype=np.int64),
        })
        self.action_space = gym.spaces.Discrete(k1)
        self._seed = cfg.get("seed")
        self._seeded = False
        self._active = False

    def _questions(self, i: int) -> dict[int, list[tuple[int, ...]]]:
        at: dict[int, list[tuple[int, ...]]] = defaultdict(list)
        stream = self.streams[i]
        for time, facts in zip(stream.times, stream.support):
            at[int(time)].append(tuple(facts))
        return at

    def _advance(self) -> float:
        """Pay the questions that come, keep statements while there is room; stop at the next decision or the
        story's end. Returns the reward collected."""
        reward = 0.0
        n = len(self.streams[self._i])
        while True:
            held = set(self._held)
            reward += sum(f in held for facts in self._at.get(self._t, ()) for f in facts)
            if self._t == n:
                self._active = False
                return reward
            if len(self._held) < self.k:
                self._held.append(self._t)
                self._t += 1
                continue
            return reward

    def _obs(self) -> dict[str, np.ndarray]:
        tok = self.tokens[self._i]
        t = min(self._t, len(tok) - 1)  # after the last arrival the final observation repeats the last one
        return decision_obs(tok, np.array(self._held, dtype=np.int64), t)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and not self._seeded and self._seed is not None:
            seed = self._seed
        super().reset(seed=seed)
        self._seeded = True
        self._i = int(self.playable[int(self.np_random.integers(len(self.playable)))])
        self._at = self._questions(self._i)
        self._held: list[int] = []
        self._t = 0
        self._active = True
        self._pending = self._advance()  # the questions before the first decision: paid at the first step
        return self._obs(), {"story": self._i}

    def step(self, action):
        if not self._active:
            raise InvalidActionError("step() outside an episode: call reset() first (the last episode ended)")
        a = int(action)
        if not 0 <= a <= self.k:
            raise InvalidActionError(f"action {a} outside 0..{self.k} (K = {self.k} slots and the newcomer)")
        self._held = apply_decision(self._held, self._t, a)
        self._t += 1
        reward = self._pending + self._advance()
        self._pending = 0.0
        done = not self._active
        return self._obs(), float(reward), done, False, {"story": self._i, "t": self._t}
