"""The gymnasium environment (memsel.env): budgets, multi-hop episodes, rewards, invalid actions."""

from __future__ import annotations

import numpy as np
import pytest

from memsel.config import EnvConfig
from memsel.data.babi import parse_babi
from memsel.data.encode import EncodedSamples, Vocab, encode, spec_for
from memsel.data.generate import write_task, write_task1
from memsel.env import (OBS_KEYS, ContainsReader, InvalidActionError, MemorySelectionEnv, make_env_config,
                        make_reader)


def _encoded(path, max_memories=0) -> EncodedSamples:
    samples = parse_babi(path)
    vocab = Vocab.build(samples)
    return encode(samples, vocab, spec_for(samples, max_memories=max_memories, vocab=vocab))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> EncodedSamples:
    # 12 slots: the longest story has 10 memories, so every sample has padding
    return _encoded(write_task1(tmp_path_factory.mktemp("env") / "g_train.txt", 4, seed=11), max_memories=12)


@pytest.fixture(scope="module")
def task2(tmp_path_factory) -> EncodedSamples:
    """Generated task 2: every question has two supporting facts."""
    return _encoded(write_task(tmp_path_factory.mktemp("env2") / "g2_train.txt", 2, 8, seed=3))


@pytest.fixture
def env(data) -> MemorySelectionEnv:
    return MemorySelectionEnv({"data": data})


def _support_slots(env: MemorySelectionEnv) -> list[int]:
    return np.flatnonzero(env._support).tolist()


def _non_support_slot(env: MemorySelectionEnv) -> int:
    return int(np.flatnonzero(env._mask & ~env._support)[0])


# --------------------------------------------------------------------------- spaces and observations


def test_spaces_match_the_data(env, data):
    _, n, length = data.memories.shape
    assert env.action_space.n == n
    assert env.observation_space["memories"].shape == (n, length)
    assert env.observation_space["query"].shape == (length,)
    assert env.observation_space["mask"].n == n
    assert env.observation_space["ages"].shape == (n,)
    assert env.observation_space["selected"].n == n


def test_observations_lie_in_the_observation_space(env):
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs), seed
        assert set(obs) == set(OBS_KEYS)
        assert obs["mask"].dtype == np.int8 and obs["selected"].dtype == np.int8
        assert not obs["selected"].any()  # nothing chosen yet
        valid = np.flatnonzero(obs["mask"])
        obs2, *_ = env.step(int(valid[-1]))
        assert env.observation_space.contains(obs2)
        assert np.flatnonzero(obs2["selected"]).tolist() == [int(valid[-1])]


def test_observation_is_the_sample(env, data):
    obs, info = env.reset(seed=3)
    i = info["sample"]
    assert 0 <= i < len(data)
    np.testing.assert_array_equal(obs["memories"], data.memories[i])
    np.testing.assert_array_equal(obs["query"], data.query[i])
    np.testing.assert_array_equal(obs["ages"], data.ages[i])
    np.testing.assert_array_equal(obs["mask"].astype(bool), data.mask[i])
    assert info["support_outside_budget"] == 0 and info["hops"] == 1


def test_reset_with_the_same_seed_gives_the_same_sample(data):
    a, b = MemorySelectionEnv({"data": data}), MemorySelectionEnv({"data": data})
    picks_a = [a.reset(seed=s)[1]["sample"] for s in range(8)]
    picks_b = [b.reset(seed=s)[1]["sample"] for s in range(8)]
    assert picks_a == picks_b
    assert len(set(picks_a)) > 1  # different seeds reach different samples
    # a seed in env_config seeds the first reset
    c, d = MemorySelectionEnv({"data": data, "seed": 5}), MemorySelectionEnv({"data": data})
    assert c.reset()[1]["sample"] == d.reset(seed=5)[1]["sample"]


def test_every_mode_keeps_observations_in_the_space(data, task2):
    # (gymnasium's check_env steps random, unmasked actions, which this env refuses by design.)
    rng = np.random.default_rng(0)
    for cfg in ({"data": data, "memory_budget": 4, "budget_strategy": "sample", "sample_weighting": "recency"},
                {"data": data, "memory_budget": 4, "budget_strategy": "truncate"},
                {"data": task2, "hops": 0, "reward_timing": "final", "reward_mode": "answer"}):
        env = MemorySelectionEnv(cfg)
        obs, _ = env.reset(seed=0)
        for _ in range(50):
            assert env.observation_space.contains(obs)
            obs, reward, done, _, _ = env.step(rng.choice(np.flatnonzero(obs["mask"])))
            assert 0.0 <= reward <= 1.0
            if done:
                obs, _ = env.reset()


# --------------------------------------------------------------------------- single-hop reward


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


def test_numpy_action_is_accepted(env):
    env.reset(seed=2)
    _, reward, terminated, _, _ = env.step(np.int64(0))
    assert terminated and reward in (0.0, 1.0)


# --------------------------------------------------------------------------- invalid actions


def test_padded_action_raises(env, data):
    _, info = env.reset(seed=1)
    i = info["sample"]
    n_valid = int(data.mask[i].sum())
    for bad in (n_valid, data.mask.shape[1] - 1, data.mask.shape[1], -1):
        with pytest.raises(InvalidActionError, match="padded"):
            env.step(bad)
    env.step(0)  # the failed attempts did not end or change the episode


def test_step_outside_an_episode_raises(data):
    env = MemorySelectionEnv({"data": data})
    with pytest.raises(InvalidActionError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(InvalidActionError, match="reset"):
        env.step(0)  # the one-hop episode is over


def test_invalid_actions_are_impossible_under_the_mask(data):
    """A masked policy (sampling only where the mask is 1) never trips the check, in any mode."""
    rng = np.random.default_rng(0)
    for cfg in ({}, {"memory_budget": 3, "budget_strategy": "truncate"},
                {"memory_budget": 3, "budget_strategy": "sample", "hops": 2}):
        env = MemorySelectionEnv({"data": data, **cfg})
        obs, _ = env.reset(seed=1)
        for _ in range(200):
            obs, _, done, _, _ = env.step(rng.choice(np.flatnonzero(obs["mask"])))
            if done:
                obs, _ = env.reset()


# --------------------------------------------------------------------------- budgets


def test_truncate_budget_shows_the_k_most_recent_memories(data):
    env = MemorySelectionEnv({"data": data, "memory_budget": 3, "budget_strategy": "truncate"})
    assert env.action_space.n == 3 and env.observation_space["memories"].shape[0] == 3
    assert env.observation_space["ages"].high.max() == data.mask.shape[1] - 1  # ages of the full story
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        i = info["sample"]
        count = int(data.mask[i].sum())
        keep = min(count, 3)
        np.testing.assert_array_equal(obs["memories"][:keep], data.memories[i, count - keep:count])
        assert obs["ages"][:keep].tolist() == list(range(keep - 1, -1, -1))
        outside = int(data.n_support[i]) - int(data.support[i, count - keep:count].sum())
        assert info["support_outside_budget"] == outside


def test_support_outside_the_budget_is_reported_and_caps_the_reward(data):
    env = MemorySelectionEnv({"data": data, "memory_budget": 1, "budget_strategy": "truncate"})
    seen_outside = False
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        _, reward, _, _, step_info = env.step(0)
        assert step_info["support_outside_budget"] == info["support_outside_budget"]
        if info["support_outside_budget"]:
            seen_outside = True
            assert reward == 0.0  # the only fact is not among the slots: nothing to earn
    assert seen_outside


def test_sample_budget_draws_per_episode_and_is_seeded(data):
    cfg = {"data": data, "memory_budget": 3, "budget_strategy": "sample", "seed": 4}
    a, b = MemorySelectionEnv(cfg), MemorySelectionEnv(cfg)
    seq_a, seq_b = [], []
    for env, seq in ((a, seq_a), (b, seq_b)):
        for _ in range(12):
            obs, info = env.reset()
            seq.append((info["sample"], obs["memories"].tobytes(), obs["ages"].tobytes()))
            env.step(0)
    assert seq_a == seq_b  # same seed, same samples and same draws
    c = MemorySelectionEnv({**cfg, "seed": 5})
    seq_c = []
    for _ in range(12):
        obs, info = c.reset()
        seq_c.append((info["sample"], obs["memories"].tobytes(), obs["ages"].tobytes()))
        c.step(0)
    assert seq_c != seq_a
    # one question, drawn again: the kept memories change between episodes
    draws = set()
    for _ in range(40):
        obs, info = a.reset()
        if info["sample"] == seq_a[0][0]:
            draws.add(obs["ages"].tobytes())
        a.step(0)
    assert len(draws) > 1


def test_bad_env_config_is_refused_naming_the_key(data):
    for cfg, key in (({"budget_strategy": "newest", "memory_budget": 3}, "strategy"),
                     ({"budget_strategy": "truncate"}, "K >= 1"),
                     ({"reward_mode": "bleu"}, "reward_mode"),
                     ({"reward_timing": "later"}, "reward_timing"),
                     ({"hops": -1}, "hops"),
                     ({"reward_mode": "answer", "reader": "nosuchreader"}, "reader"),
                     ({"reward_mode": "answer", "reader": "memsel.nosuch:reader"}, "reader")):
        with pytest.raises(ValueError, match=key):
            MemorySelectionEnv({"data": data, **cfg})


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
    empty = data.take(slice(0, 0))
    with pytest.raises(ValueError, match="no samples"):
        MemorySelectionEnv({"data": empty})


def test_make_env_config_carries_every_env_field(tmp_path):
    cfg = make_env_config(EnvConfig(memory_budget=8, budget_strategy="sample", hops=0), data_path="x.npz",
                          seed=3, vocab_size=20)
    assert cfg["memory_budget"] == 8 and cfg["budget_strategy"] == "sample" and cfg["hops"] == 0
    assert cfg["data_path"] == "x.npz" and cfg["seed"] == 3 and cfg["vocab_size"] == 20
    assert {"sample_weighting", "sample_decay", "reward_mode", "reader", "reward_timing"} <= set(cfg)


# --------------------------------------------------------------------------- multi-hop


def test_multi_hop_episode_has_one_selection_per_supporting_fact(task2):
    env = MemorySelectionEnv({"data": task2, "hops": 0})
    obs, info = env.reset(seed=0)
    assert info["hops"] == 2  # task 2: two supporting facts
    first, second = _support_slots(env)
    mask_before = obs["mask"].copy()
    obs, r1, done1, _, i1 = env.step(first)
    assert not done1 and r1 == pytest.approx(0.5) and i1["hop"] == 1 and not i1["correct"]
    assert np.flatnonzero(obs["selected"]).tolist() == [first]
    np.testing.assert_array_equal(obs["mask"], mask_before)  # the mask stays the validity mask
    obs, r2, done2, _, i2 = env.step(second)
    assert done2 and r2 == pytest.approx(0.5) and i2["correct"]
    assert np.flatnonzero(obs["selected"]).tolist() == sorted([first, second])


def test_choosing_a_memory_again_is_allowed_but_earns_nothing(task2):
    env = MemorySelectionEnv({"data": task2, "hops": 0})
    env.reset(seed=0)
    fact = _support_slots(env)[0]
    rewards, infos, obs = _run_again(env, [fact, fact])
    assert rewards == [pytest.approx(0.5), 0.0]
    assert not infos[-1]["correct"]
    assert obs[-1]["selected"].sum() == 1


def _run_again(env, actions, seed=0):
    """Reset to the sample of ``seed`` and step ``actions``."""
    env.reset(seed=seed)
    rewards, infos, observations = [], [], []
    for a in actions:
        o, r, done, _, info = env.step(a)
        rewards.append(r)
        infos.append(info)
        observations.append(o)
    return rewards, infos, observations


def test_final_reward_timing_pays_the_same_return_at_the_end(task2):
    per_hop = MemorySelectionEnv({"data": task2, "hops": 0, "reward_timing": "per_hop"})
    final = MemorySelectionEnv({"data": task2, "hops": 0, "reward_timing": "final"})
    per_hop.reset(seed=2)
    fact, other = _support_slots(per_hop)[0], _non_support_slot(per_hop)
    for plan in ([fact, other], [other, fact], [other, other]):
        r_hop, _, _ = _run_again(per_hop, plan, seed=2)
        r_fin, info_fin, _ = _run_again(final, plan, seed=2)
        assert r_fin[0] == 0.0  # nothing before the last selection
        assert sum(r_hop) == pytest.approx(sum(r_fin)) == pytest.approx(r_fin[-1])
    both = _support_slots(per_hop)
    r_fin, info_fin, _ = _run_again(final, both, seed=2)
    assert r_fin == [0.0, 1.0] and info_fin[-1]["correct"]


def test_fixed_hops_beyond_the_supporting_facts_cap_the_return_at_one(data):
    env = MemorySelectionEnv({"data": data, "hops": 3})
    _, info = env.reset(seed=0)
    assert info["hops"] == 3
    fact = _support_slots(env)[0]
    rewards, infos, obs = _run_again(env, [fact, _non_support_slot(env), fact])
    assert rewards == [1.0, 0.0, 0.0] and infos[-1]["hop"] == 3
    assert sum(rewards) == 1.0


def test_single_hop_observation_space_equals_multi_hop_space(data, task2):
    one = MemorySelectionEnv({"data": task2})
    many = MemorySelectionEnv({"data": task2, "hops": 0, "reward_timing": "final"})
    assert one.observation_space == many.observation_space


# --------------------------------------------------------------------------- answer reward


def test_contains_reader_reads_token_ids_only():
    memories = np.array([[5, 6, 0], [7, 8, 9], [0, 0, 0]])
    reader = ContainsReader()
    assert reader(memories, [0], np.array([1, 2, 3])) == {5, 6}
    assert reader(memories, [0, 1], np.array([1, 2, 3])) == {5, 6, 7, 8, 9}
    assert 0 not in reader(memories, [2], np.array([1, 2, 3]))


def test_answer_reward_with_the_default_reader(task2):
    env = MemorySelectionEnv({"data": task2, "reward_mode": "answer"})
    obs, info = env.reset(seed=1)
    answer = int(task2.answer[info["sample"]])
    holds = [j for j in np.flatnonzero(obs["mask"]) if answer in obs["memories"][j]]
    lacks = [j for j in np.flatnonzero(obs["mask"]) if answer not in obs["memories"][j]]
    assert holds and lacks
    for slot, expected in ((holds[0], 1.0), (lacks[0], 0.0)):
        env.reset(seed=1)
        _, reward, done, _, step_info = env.step(slot)
        assert done and reward == expected and step_info["correct"] == bool(expected)


def test_answer_reward_over_hops_pays_once_the_answer_is_read(task2):
    env = MemorySelectionEnv({"data": task2, "reward_mode": "answer", "hops": 2})
    obs, info = env.reset(seed=1)
    answer = int(task2.answer[info["sample"]])
    holds = next(j for j in np.flatnonzero(obs["mask"]) if answer in obs["memories"][j])
    lacks = next(j for j in np.flatnonzero(obs["mask"]) if answer not in obs["memories"][j])
    rewards, infos, _ = _run_again(env, [lacks, holds], seed=1)
    assert rewards == [0.0, 1.0] and infos[-1]["correct"]
    assert _run_again(env, [holds, lacks], seed=1)[0] == [1.0, 0.0]  # read at the first hop: paid then


def test_a_learned_reader_plugs_in_through_env_config(task2):
    calls = []

    def always(memories, chosen, query):
        calls.append((memories.shape, list(chosen), query.shape))
        return 424242  # one answer id, never right

    env = MemorySelectionEnv({"data": task2, "reward_mode": "answer", "reader": always, "hops": 2})
    env.reset(seed=0)
    assert _run_again(env, [0, 1])[0] == [0.0, 0.0]
    assert calls[-1][1] == [0, 1] and calls[-1][0] == task2.memories.shape[1:]
    # 'package.module:factory' with reader_config, as a config file would name it
    reader = make_reader("memsel.env:ContainsReader", {})
    assert isinstance(reader, ContainsReader)
    env2 = MemorySelectionEnv({"data": task2, "reward_mode": "answer", "reader": "memsel.env:ContainsReader"})
    assert isinstance(env2.reader, ContainsReader)


def test_config_and_env_allow_the_same_values():
    from memsel import config
    from memsel.data import budget
    from memsel import env as env_module

    # One definition each, which the config checks use: the same objects, not copies.
    assert config.check_budget is budget.check_budget and config.READERS is env_module.READERS
    assert config.REWARD_MODES is env_module.REWARD_MODES and config.REWARD_TIMINGS is env_module.REWARD_TIMINGS
    assert not any(hasattr(config, name) for name in ("BUDGET_STRATEGIES", "SAMPLE_WEIGHTINGS", "SELECTOR_KINDS"))
    assert set(budget.STRATEGIES.names()) >= {"all", "truncate", "sample"}
    assert set(env_module.READERS.names()) >= {"contains", "learned"}
