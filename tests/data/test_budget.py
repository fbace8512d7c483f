"""Memory budgets (memsel.data.budget): all, truncate, sample (uniform / recency), and counting
the supporting facts a budget leaves out."""

from __future__ import annotations

import numpy as np
import pytest

from memsel.data.budget import Budget, apply_budget, gather, select_slots, support_outside
from memsel.data.encode import EncodedSamples


def _data(counts=(6, 2, 9, 0), n=10, length=3, supports=((0, 5), (1,), (2, 8), ())) -> EncodedSamples:
    """Row i has counts[i] memories; memory j of row i holds tokens (100*i + j + 2, 1, 0)."""
    s = len(counts)
    mask = np.zeros((s, n), dtype=bool)
    memories = np.zeros((s, n, length), dtype=np.int64)
    ages = np.zeros((s, n), dtype=np.int64)
    support = np.zeros((s, n), dtype=bool)
    for i, c in enumerate(counts):
        mask[i, :c] = True
        memories[i, :c, 0] = 100 * i + np.arange(c) + 2
        memories[i, :c, 1] = 1
        ages[i, :c] = np.arange(c - 1, -1, -1)
        support[i, list(supports[i])] = True
    query = np.full((s, length), 7, dtype=np.int64)
    return EncodedSamples(memories, mask, query, ages, support, np.arange(s, dtype=np.int64) + 2)


def _ids(data: EncodedSamples, row: int) -> list[int]:
    """The memory ids (slot numbers in the full row) a budgeted row holds, in order."""
    return [int(t) - 100 * row - 2 for t in data.memories[row, data.mask[row], 0]]


def test_all_is_the_data_itself():
    data = _data()
    assert apply_budget(data, Budget()) is data
    idx = select_slots(data.mask, data.ages, Budget())
    assert idx.shape == (4, 10)
    assert idx[1].tolist() == [0, 1] + [-1] * 8


def test_truncate_keeps_the_k_most_recent_in_story_order_with_their_ages():
    data = _data()
    out = apply_budget(data, Budget(4, "truncate"))
    assert out.memories.shape == (4, 4, 3) and out.mask.shape == (4, 4)
    assert _ids(out, 0) == [2, 3, 4, 5]
    assert _ids(out, 1) == [0, 1]  # fewer memories than K: all of them, padding after
    assert out.mask[1].tolist() == [True, True, False, False]
    assert _ids(out, 2) == [5, 6, 7, 8]
    assert not out.mask[3].any()
    # ages are ages in the full story, not re-counted inside the budget
    assert out.ages[0].tolist() == [3, 2, 1, 0]
    assert out.ages[2].tolist() == [3, 2, 1, 0]
    # padded slots are all zeros
    assert (out.memories[~out.mask] == 0).all() and (out.ages[~out.mask] == 0).all()
    np.testing.assert_array_equal(out.query, data.query)
    np.testing.assert_array_equal(out.answer, data.answer)


def test_truncate_counts_the_supporting_facts_left_out():
    data = _data()
    out = apply_budget(data, Budget(4, "truncate"))
    # row 0 loses fact 0 (keeps 5); row 2 loses fact 2 (keeps 8); row 1 keeps fact 1
    assert out.support[0].tolist() == [False, False, False, True]
    assert out.dropped_support == 2
    assert support_outside(out) == {"support_outside_budget": 2, "questions_without_support": 0}
    tight = apply_budget(data, Budget(1, "truncate"))
    # row 0 keeps only memory 5 (a fact), row 1 only memory 1 (a fact), row 2 only memory 8 (a fact)
    assert tight.dropped_support == 2
    tighter = apply_budget(_data(supports=((0,), (0,), (2,), ())), Budget(1, "truncate"))
    assert support_outside(tighter) == {"support_outside_budget": 3, "questions_without_support": 3}


def test_facts_dropped_by_the_encoding_still_count():
    data = _data()
    data.n_support = data.n_support + np.array([1, 0, 0, 0])  # one fact of row 0 was older than the slots
    assert apply_budget(data, Budget(4, "truncate")).dropped_support == 3
    assert support_outside(data)["support_outside_budget"] == 1


def test_budget_larger_than_the_slots_changes_nothing():
    data = _data()
    out = apply_budget(data, Budget(64, "truncate"))
    assert out.mask.shape == (4, 10)
    np.testing.assert_array_equal(out.memories, data.memories)
    np.testing.assert_array_equal(out.support, data.support)
    assert Budget(64, "sample").slots(10) == 10


@pytest.mark.parametrize("weighting", ["uniform", "recency"])
def test_sample_draws_k_distinct_memories_in_story_order(weighting):
    data = _data()
    out = apply_budget(data, Budget(4, "sample", weighting, 0.5), 0)
    for row, count in enumerate((6, 2, 9, 0)):
        ids = _ids(out, row)
        assert len(ids) == min(4, count)
        assert ids == sorted(set(ids)) and all(0 <= j < count for j in ids)
        # every kept memory keeps its own age and support flag
        full_ages = data.ages[row, ids]
        assert out.ages[row, :len(ids)].tolist() == full_ages.tolist()
        assert out.support[row, :len(ids)].tolist() == data.support[row, ids].tolist()
    assert _ids(out, 1) == [0, 1]  # fewer than K: all of them


def test_sample_is_deterministic_in_the_seed():
    data = _data()
    budget = Budget(3, "sample")
    a = apply_budget(data, budget, 5)
    b = apply_budget(data, budget, np.random.default_rng(5))
    np.testing.assert_array_equal(a.memories, b.memories)  # a seed or a generator seeded alike
    draws = {tuple(_ids(apply_budget(data, budget, seed), 2)) for seed in range(20)}
    assert len(draws) > 5  # other seeds draw other memories


def test_sample_needs_a_generator():
    data = _data()
    with pytest.raises(ValueError, match="seeded"):
        select_slots(data.mask, data.ages, Budget(3, "sample"))


def test_uniform_sampling_is_uniform_and_recency_prefers_recent_memories():
    n = 8
    data = _data(counts=(n,), n=n, supports=((0,),))
    rng = np.random.default_rng(0)
    uniform = np.zeros(n)
    recency = np.zeros(n)
    for _ in range(4000):
        uniform[select_slots(data.mask, data.ages, Budget(2, "sample"), rng)[0]] += 1
        recency[select_slots(data.mask, data.ages, Budget(2, "sample", "recency", 1.0), rng)[0]] += 1
    # uniform: each memory is kept with probability 2/8
    np.testing.assert_allclose(uniform / 4000, 0.25, atol=0.03)
    # recency weight exp(-age): the newest memory (slot 7) nearly always, the oldest almost never
    assert recency[7] / 4000 > 0.8 and recency[0] / 4000 < 0.01
    assert np.all(np.diff(recency) > 0)


def test_gather_with_explicit_slots():
    data = _data()
    idx = np.array([[5, 0, -1], [1, -1, -1], [8, 2, 3], [-1, -1, -1]])
    out = gather(data, idx)
    assert _ids(out, 0) == [5, 0] and out.support[0].tolist() == [True, True, False]
    assert out.dropped_support == 0 + 0 + 0 + 0  # every fact of rows 0-2 was picked
    assert out.mask[3].tolist() == [False] * 3


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0, "strategy": "truncate"}, "K >= 1"),
    ({"k": -2, "strategy": "sample"}, "K >= 1"),
    ({"k": 5, "strategy": "all"}, "expected 0"),
    ({"k": 5, "strategy": "newest"}, "one of"),
    ({"k": 5, "strategy": "sample", "weighting": "zipf"}, "one of"),
    ({"k": 5, "strategy": "sample", "decay": -1.0}, ">= 0"),
])
def test_bad_budgets_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Budget(**kwargs)
