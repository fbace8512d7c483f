"""Streams, eviction policies and retention (memsel.manager.streams): hand-made stories and real bAbI."""

from __future__ import annotations

import numpy as np
import pytest

from memsel.data.sample import Sample
from memsel.manager.streams import (FIFO, LIFO, LRU, NEVER, Mixture, Oracle, RandomEviction, Stream, apply_decision,
                                    decision_obs, eviction_costs, next_use, oracle_decisions, retention, run_policy,
                                    streams_from_samples)


def _stream(n: int, questions: list[tuple[int, tuple[int, ...]]]) -> Stream:
    return Stream(tuple(f"s{i}" for i in range(n)), tuple(t for t, _ in questions), tuple(f for _, f in questions))


def test_streams_group_questions_by_file_and_story():
    def sample(memories, supporting, story, source):
        return Sample(tuple(memories), "q?", "a", tuple(supporting), story, source)

    samples = [sample(["a", "b"], [0], 0, "f.txt:3"), sample(["a", "b", "c", "d"], [3, 1], 0, "f.txt:6"),
               sample(["x"], [0], 0, "g.txt:2"), sample(["y", "z"], [1], 1, "f.txt:9")]
    streams = streams_from_samples(samples)
    assert [s.statements for s in streams] == [("a", "b", "c", "d"), ("x",), ("y", "z")]
    assert streams[0].times == (2, 4) and streams[0].support == ((0,), (3, 1))
    assert streams[0].pairs == 3 and streams[0].uses() == [[2], [4], [], [4]]
    with pytest.raises(ValueError, match="prefix"):
        streams_from_samples([sample(["a", "b"], [0], 0, "f:1"), sample(["a", "c", "d"], [0], 0, "f:2")])


def test_next_use_and_apply_decision():
    assert next_use([3, 7], 2) == 3 and next_use([3, 7], 3) == 7 and next_use([3, 7], 7) == NEVER
    assert apply_decision([0, 1, 2], 3, 1) == [0, 2, 3]
    assert apply_decision([0, 1, 2], 3, 3) == [0, 1, 2]


def test_fifo_lifo_and_questions_before_memory_fills():
    # K = 2; statements 0..3; q0 after 1 statement needs 0; q1 after 4 needs 0 and 3
    s = _stream(4, [(1, (0,)), (4, (0, 3))])
    fifo = run_policy(s, 2, FIFO())
    assert [h.tolist() for h in fifo.held_at] == [[0], [2, 3]]
    assert fifo.hits == 2 and fifo.pairs == 3
    lifo = run_policy(s, 2, LIFO())
    assert [h.tolist() for h in lifo.held_at] == [[0], [0, 3]]
    assert lifo.hits == 3
    assert [d for _, _, d in lifo.decisions] == [1, 1]


def test_oracle_keeps_what_is_needed_and_drops_a_useless_newcomer():
    # K = 2. Statement 0 is needed at the end, 1 never, 2 never, 3 at the end.
    s = _stream(4, [(4, (0, 3))])
    trace = run_policy(s, 2, Oracle())
    # t=2 arrives: held [0, 1]; 1 and 2 are never needed -> drop the newcomer (it ties for "never")
    # t=3 arrives: held [0, 1]; 1 is never needed -> evict slot 1
    assert [(h.tolist(), t, d) for h, t, d in trace.decisions] == [([0, 1], 2, 2), ([0, 1], 3, 1)]
    assert trace.hits == trace.pairs == 2


def test_oracle_evicts_the_memory_needed_latest():
    # K = 2: 0 needed at time 5, 1 at time 3, 2 (newcomer) at time 4 -> evict 0 (slot 0)
    s = _stream(5, [(3, (1,)), (4, (2,)), (5, (0,))])
    oracle = Oracle()
    oracle.reset(s)
    assert oracle.candidates(np.array([0, 1]), 2).tolist() == [True, False, False]
    assert oracle.decide(np.array([0, 1]), 2) == 0
    trace = run_policy(s, 2, oracle)
    assert trace.hits == 2 and trace.pairs == 3  # one of the three must go: the latest is lost
    assert trace.hits >= run_policy(s, 2, FIFO()).hits


def test_random_is_seeded_and_lru_follows_attention():
    s = _stream(12, [(t, (1,)) for t in range(3, 13)])
    a = [d for _, _, d in run_policy(s, 3, RandomEviction(4)).decisions]
    assert a == [d for _, _, d in run_policy(s, 3, RandomEviction(4)).decisions]

    def attend(stream, q, held):  # the selector always looks at statement 1
        return [i for i in held if i == 1]

    trace = run_policy(s, 3, LRU(attend))
    assert all(1 in h.tolist() for h in trace.held_at)  # used at every question: never the least recently used
    assert trace.hits == trace.pairs
    assert run_policy(s, 3, FIFO()).held_at[-1].tolist() == [9, 10, 11]


def test_decision_obs_fields():
    tokens = np.arange(1, 13).reshape(6, 2)
    obs = decision_obs(tokens, np.array([0, 3, -1]), 5)
    assert obs["memories"].tolist() == [[1, 2], [7, 8], [0, 0], [11, 12]]
    assert obs["mask"].tolist() == [1, 1, 0, 1]
    assert obs["ages"].tolist() == [5, 2, 0, 0]
    assert obs["query"].tolist() == [11, 12]


@pytest.mark.parametrize("task", [2, 3])
def test_oracle_is_never_beaten_on_real_babi(babi_en, task):
    from memsel.data.babi import find_task_files, parse_babi

    streams = streams_from_samples(parse_babi(find_task_files(babi_en, task)[1]))[:60]
    for k in (4, 8, 16):
        best = retention(streams, k, Oracle())
        others = {p.name: retention(streams, k, p) for p in (FIFO(), LIFO(), RandomEviction(0))}
        assert all(best >= v for v in others.values()), (k, best, others)


def test_dagger_labels_the_states_another_policy_reaches_with_the_oracle():
    # K = 2; statements 0..3; one question after 4 statements needs 0 and 3. FIFO evicts 0 at t = 2, so its
    # second state ([1, 2], 3) is one the oracle never reaches; there the oracle may evict 1 or 2, not 3.
    s = _stream(4, [(4, (0, 3))])
    tokens = np.arange(1, 9).reshape(4, 2)
    own = oracle_decisions([s], [tokens], 2)
    assert own["memories"][:, :2, 0].tolist() == [[1, 3], [1, 3]]  # the oracle keeps 0 and 1
    d = oracle_decisions([s], [tokens], 2, policy=FIFO())
    assert d["memories"][:, :, 0].tolist() == [[1, 3, 5], [3, 5, 7]]  # FIFO's states: ([0, 1], 2), ([1, 2], 3)
    assert d["best"].tolist() == [[False, True, True], [True, True, False]]
    assert d["cost"].tolist() == [[1, 0, 0], [0, 0, 1]]  # evicting 0 (or the newcomer 3) loses its pair


def test_eviction_costs_count_the_pairs_lost_beyond_the_oracle():
    # statement 3 arrives after 0..2, all needed later: 0 twice (5, 7), 1 at 4, 2 at 6, 3 at 8. Belady drops
    # the newcomer (needed latest), which loses one pair; evicting 0 loses two, so one more than the oracle.
    uses = [[5, 7], [4], [6], [8]]
    best = np.array([False, False, False, True])
    assert eviction_costs(uses, np.array([0, 1, 2]), 3, best).tolist() == [1, 0, 0, 0]
    assert eviction_costs([[2, 5, 7], [4], [3, 6], [8]], np.array([0, 1, 2]), 3, best).tolist() == [1, 0, 0, 0]


def test_mixture_plays_the_expert_with_probability_beta():
    s = _stream(12, [(12, (0,))])
    expert = [d for _, _, d in run_policy(s, 3, Mixture(FIFO(), LIFO(), 1.0)).decisions]
    learner = [d for _, _, d in run_policy(s, 3, Mixture(FIFO(), LIFO(), 0.0)).decisions]
    assert expert == [2] * 9 and learner == [0] * 9
    mixed = [d for _, _, d in run_policy(s, 3, Mixture(FIFO(), RandomEviction(1), 0.5, seed=3)).decisions]
    assert mixed == [d for _, _, d in run_policy(s, 3, Mixture(FIFO(), RandomEviction(1), 0.5, seed=3)).decisions]
