"""The gymnasium environment (memsel.env) over encoded samples."""

from __future__ import annotations

import numpy as np
import pytest

from memsel.data.babi import parse_babi
from memsel.data.encode import EncodedSamples, Vocab, encode, spec_for
from memsel.data.generate import write_task1
from memsel.env import InvalidActionError, MemorySelectionEnv


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> EncodedSamples:
    path = write_task1(tmp_path_factory.mktemp("env") / "g_train.txt", 4, seed=11)
    samples = parse_babi(path)
    vocab = Vocab.build(samples)
    # 12 slots: the longest story has 10 memories, so every sample has padding
    return encode(samples, vocab, spec_for(samples, max_memories=12, vocab=vocab))


@pytest.fixture
def env(data) -> MemorySelectionEnv:
    return MemorySelectionEnv({"data": data})


def test_spaces_match_the_data(env, data):
    _, n, length = data.memories.shape
    assert env.action_space.n == n
    assert env.observation_space["memories"].shape == (n, length)
    assert env.observation_space["query"].shape == (length,)
    assert env.observation_space["mask"].n == n
    assert env.observation_space["ages"].shape == (n,)


def test_observations_lie_in_the_observation_space(env):
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs), seed
        assert set(obs) == {"memories", "mask", "query", "ages"}
        assert obs["mask"].dtype == np.int8
        valid = np.flatnonzero(obs["mask"])
        obs2, *_ = env.step(int(valid[-1]))
        assert env.observation_space.contains(obs2)


def test_observation_is_the_sample(env, data):
    obs, info = env.reset(seed=3)
    i = info["sample"]
    assert 0 <= i < len(data)
    np.testing.assert_array_equal(obs["memories"], data.memories[i])
    np.testing.assert_array_equal(obs["query"], data.query[i])
    np.testing.assert_array_equal(obs["ages"], data.ages[i])
    np.testing.assert_array_equal(obs["mask"].astype(bool), data.mask[i])


def test_reset_with_the_same_seed_gives_the_same_sample(data):
    a, b = MemorySelectionEnv({"data": data}), MemorySelectionEnv({"data": data})
    picks_a = [a.reset(seed=s)[1]["sample"] for s in range(8)]
    picks_b = [b.reset(seed=s)[1]["sample"] for s in range(8)]
    assert picks_a == picks_b
    assert len(set(picks_a)) > 1  # different seeds reach different samples
    # a seed in env_config seeds the first reset
    c, d = MemorySelectionEnv({"data": data, "seed": 5}), MemorySelectionEnv({"data": data})
    assert c.reset()[1]["sample"] == d.reset(seed=5)[1]["sample"]


def test_reward_is_one_exactly_on_supporting_facts(env, data):
    _, info = env.reset(seed=0)
    i = info["sample"]
    valid = np.flatnonzero(data.mask[i])
    assert len(valid) >= 2
    rewards = {}
    for a in valid:
        env.reset(seed=0)  # same sample again
        _, reward, terminated, truncated, step_info = env.step(a)
        assert step_info["sample"] == i
        assert terminated is True and truncated is False
        assert step_info["correct"] == (reward == 1.0)
        rewards[int(a)] = reward
    assert all(r in (0.0, 1.0) for r in rewards.values())
    assert {a for a, r in rewards.items() if r == 1.0} == set(np.flatnonzero(data.support[i]).tolist())


def test_padded_action_raises(env, data):
    _, info = env.reset(seed=1)
    i = info["sample"]
    n_valid = int(data.mask[i].sum())
    for bad in (n_valid, data.mask.shape[1] - 1, data.mask.shape[1], -1):
        with pytest.raises(InvalidActionError, match="padded"):
            env.step(bad)


def test_numpy_action_is_accepted(env):
    env.reset(seed=2)
    _, reward, terminated, _, _ = env.step(np.int64(0))
    assert terminated and reward in (0.0, 1.0)


def test_env_config_without_data_is_refused():
    with pytest.raises(ValueError, match="data_path"):
        MemorySelectionEnv({})
    with pytest.raises(ValueError, match="data_path"):
        MemorySelectionEnv(None)


def test_env_from_a_saved_split(tmp_path, data):
    path = tmp_path / "train.npz"
    data.save(path)
    env = MemorySelectionEnv({"data_path": str(path), "vocab_size": 100})
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.observation_space["memories"].high.max() == 99


def test_empty_split_is_refused(data):
    empty = EncodedSamples(data.memories[:0], data.mask[:0], data.query[:0], data.ages[:0],
                           data.support[:0], data.answer[:0])
    with pytest.raises(ValueError, match="no samples"):
        MemorySelectionEnv({"data": empty})
