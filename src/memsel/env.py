"""A gymnasium environment over the same encoded samples that pretraining uses.

One episode is one question: the observation is the (padded, masked) memory list, the query and
the memories' ages; the action picks a memory slot; reward is 1 when the chosen memory is a
supporting fact, else 0. Padded slots are invalid actions: the mask makes them impossible for a
masked policy, and forcing one raises an error instead of quietly scoring 0.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from memsel.data.encode import EncodedSamples


class InvalidActionError(ValueError):
    """An action that names a padded (masked) memory slot."""


class MemorySelectionEnv(gym.Env):
    """env_config: ``data_path`` (an encoded ``.npz`` split) or ``data`` (EncodedSamples); ``seed``."""

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
        self.data = data
        _, n, length = data.memories.shape
        vocab_high = max(int(data.memories.max()), int(data.query.max()), int(cfg.get("vocab_size", 1)) - 1, 1)
        self.observation_space = gym.spaces.Dict({
            "memories": gym.spaces.Box(0, vocab_high, shape=(n, length), dtype=np.int64),
            "mask": gym.spaces.MultiBinary(n),
            "query": gym.spaces.Box(0, vocab_high, shape=(length,), dtype=np.int64),
            "ages": gym.spaces.Box(0, max(n - 1, 1), shape=(n,), dtype=np.int64),
        })
        self.action_space = gym.spaces.Discrete(n)
        self._seed = cfg.get("seed")
        self._seeded = False
        self._i = 0

    def _obs(self) -> dict[str, np.ndarray]:
        d, i = self.data, self._i
        return {"memories": d.memories[i], "mask": d.mask[i].astype(np.int8), "query": d.query[i],
                "ages": d.ages[i]}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and not self._seeded and self._seed is not None:
            seed = self._seed
        super().reset(seed=seed)
        self._seeded = True
        self._i = int(self.np_random.integers(len(self.data)))
        return self._obs(), {"sample": self._i}

    def step(self, action):
        a = int(action)
        if not (0 <= a < self.action_space.n) or not self.data.mask[self._i, a]:
            raise InvalidActionError(
                f"action {a} names a padded memory slot (sample {self._i} has "
                f"{int(self.data.mask[self._i].sum())} memories in slots 0..{int(self.data.mask[self._i].sum()) - 1})")
        reward = float(self.data.support[self._i, a])
        return self._obs(), reward, True, False, {"sample": self._i, "correct": bool(reward)}
