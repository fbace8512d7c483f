"""The manager's environment (memsel.manager.env): masks, rewards on a hand-made story, returns = retention."""

from __future__ import annotations

import numpy as np
import pytest

from memsel.env import InvalidActionError
from memsel.manager.env import MemoryManagerEnv
from memsel.manager.streams import EvictionPolicy, Stream, run_policy


def _story() -> tuple[Stream, np.ndarray]:
    # 6 statements; q0 after 2 needs 0; q1 after 4 needs 0 and 3; q2 after 6 needs 5 and 1
    stream = Stream(tuple(f"s{i}" for i in range(6)), (2, 4, 6), ((0,), (0, 3), (5, 1)))
    return stream, np.arange(2, 20).reshape(6, 3)


def _env(k=2, streams=None):
    stream, tok = _story()
    return MemoryManagerEnv({"streams": streams or [stream], "tokens": [tok] * len(streams or [stream]), "k": k,
                             "seed": 0, "vocab_size": 30})


def test_observation_is_the_held_memories_and_the_newcomer():
    env = _env()
    obs, _ = env.reset()
    assert env.observation_space.contains(obs) and env.action_space.n == 3
    assert obs["mask"].tolist() == [1, 1, 1]
    assert obs["memories"][:, 0].tolist() == [2, 5, 8]  # statements 0, 1 held; 2 arrives
    assert obs["ages"].tolist() == [2, 1, 0] and obs["query"].tolist() == [8, 9, 10]
    with pytest.raises(InvalidActionError):
        env.step(3)


def test_rewards_on_a_hand_made_story():
    env = _env()
    env.reset()
    # arrival 2: evict 1 (slot 1) -> held [0, 2]; q0 (before this step) paid 1
    _, r, done, _, _ = env.step(1)
    assert r == 1.0 and not done
    # arrival 3: evict 2 (slot 1) -> held [0, 3]; q1 after 4 needs 0 and 3: 2
    _, r, done, _, _ = env.step(1)
    assert r == 2.0 and not done
    # arrival 4: drop it -> [0, 3]; arrival 5: evict 0 -> [3, 5]; q2 needs 5 and 1: 1
    assert env.step(2)[1] == 0.0
    _, r, done, _, _ = env.step(0)
    assert r == 1.0 and done
    with pytest.raises(InvalidActionError):
        env.step(0)


class Replay(EvictionPolicy):
    def __init__(self, actions):
        self.actions = list(actions)

    def decide(self, held, t):
        return self.actions.pop(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_episode_returns_the_retention_count_of_its_actions(seed):
    stream, _ = _story()
    long = Stream(tuple(f"s{i}" for i in range(12)), (3, 7, 12), ((1,), (2, 6), (0, 11)))
    env = MemoryManagerEnv({"streams": [stream, long], "tokens": [np.ones((6, 2), int), np.ones((12, 2), int)],
                            "k": 3, "seed": seed})
    rng = np.random.default_rng(seed)
    for _ in range(4):
        _, info = env.reset()
        actions, total, done = [], 0.0, False
        while not done:
            actions.append(int(rng.integers(4)))
            _, r, done, _, _ = env.step(actions[-1])
            total += r
        story = [stream, long][info["story"]]
        assert total == run_policy(story, 3, Replay(actions)).hits


def test_short_stories_are_never_drawn():
    stream, _ = _story()
    short = Stream(("a", "b"), (2,), ((0,),))
    env = MemoryManagerEnv({"streams": [short, stream], "tokens": [np.ones((2, 3), int), np.ones((6, 3), int)], "k": 2})
    assert env.playable == [1]
    with pytest.raises(ValueError, match="no story"):
        MemoryManagerEnv({"streams": [short], "tokens": [np.ones((2, 3), int)], "k": 2})
