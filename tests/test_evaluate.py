"""Baselines, selector scoring, the results table and plot (memsel.evaluate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec, EncodedSamples
from memsel.evaluate import (METHOD_LABELS, baseline_scores, evaluate, format_table, plot_results,
                             selector_scores)
from memsel.network import Selector


def _hand_built() -> EncodedSamples:
    """Four questions over 4 slots; the answers are known by construction.

    row 0: 3 memories, support {2} (the newest)      random 1/3, most recent right
    row 1: 4 memories, support {0, 1}                random 2/4, most recent wrong
    row 2: 1 memory,   support {0}                   random 1/1, most recent right
    row 3: 2 memories, support {0}                   random 1/2, most recent wrong
    """
    counts = [3, 4, 1, 2]
    supports = [[2], [0, 1], [0], [0]]
    s, n, length = len(counts), 4, 3
    mask = np.zeros((s, n), dtype=bool)
    support = np.zeros((s, n), dtype=bool)
    ages = np.zeros((s, n), dtype=np.int64)
    memories = np.zeros((s, n, length), dtype=np.int64)
    for i, (k, sup) in enumerate(zip(counts, supports)):
        mask[i, :k] = True
        support[i, sup] = True
        ages[i, :k] = np.arange(k - 1, -1, -1)
        memories[i, :k, 0] = np.arange(2, 2 + k)
    query = np.full((s, length), 3, dtype=np.int64)
    return EncodedSamples(memories, mask, query, ages, support, np.full(s, 2, dtype=np.int64))


def test_baseline_scores_by_hand():
    scores = baseline_scores(_hand_built())
    assert set(scores) == {"random", "most_recent", "recency_prior"}  # the oracle needs a reader
    assert scores["random"]["selection_accuracy"] == pytest.approx(np.mean([1 / 3, 2 / 4, 1 / 1, 1 / 2]))
    assert scores["most_recent"]["selection_accuracy"] == pytest.approx(2 / 4)
    assert scores["random"]["questions"] == scores["most_recent"]["questions"] == 4
    # one hop: the prior's greedy pick is the newest memory
    assert scores["recency_prior"]["selection_accuracy"] == scores["most_recent"]["selection_accuracy"]


def test_baselines_skip_questions_without_memories():
    data = _hand_built()
    data.mask[3] = False
    data.support[3] = False
    scores = baseline_scores(data)
    assert scores["random"]["questions"] == 3
    assert scores["random"]["selection_accuracy"] == pytest.approx(np.mean([1 / 3, 2 / 4, 1 / 1]))
    assert scores["most_recent"]["selection_accuracy"] == pytest.approx(2 / 3)


def test_selector_scores_match_argmax():
    data = _hand_built()
    torch.manual_seed(0)
    net = Selector(SelectorConfig(embed_dim=8, hidden_dim=8), DataSpec(10, 4, 3))
    with torch.no_grad():
        choice = net({k: torch.from_numpy(v) for k, v in data.tensors().items()}).argmax(-1).numpy()
    expected = data.support[np.arange(4), choice].mean()
    got = selector_scores(net, data, batch_size=3)  # batches of 3 and 1
    assert got["hop_accuracy"] == [pytest.approx(expected)]
    assert got["selection_accuracy"] == pytest.approx(expected)
    assert got["questions"] == 4
    # a padded slot is never chosen
    assert all(data.mask[i, c] for i, c in enumerate(choice))


def test_evaluate_orders_methods(tmp_path):
    data = _hand_built()
    torch.manual_seed(0)
    path = Selector(SelectorConfig(embed_dim=8, hidden_dim=8), DataSpec(10, 4, 3)).save(tmp_path / "s.pt")
    results = evaluate(data, {"ppo": path, "pretrained": path})
    assert list(results) == ["random", "most_recent", "recency_prior", "pretrained", "ppo"]
    assert results["ppo"] == results["pretrained"]


def test_format_table_has_every_label():
    results = {"random": {"selection_accuracy": 0.25, "questions": 4.0},
               "most_recent": {"selection_accuracy": 0.5, "questions": 4.0},
               "pretrained": {"selection_accuracy": 1.0, "questions": 4.0},
               "custom": {"selection_accuracy": 0.125, "questions": 8.0}}
    table = format_table(results)
    for label in (METHOD_LABELS["random"], METHOD_LABELS["most_recent"], METHOD_LABELS["pretrained"], "custom"):
        assert label in table
    lines = table.splitlines()
    assert len(lines) == 2 + len(results)
    assert "answer" not in lines[0] and "hop 1" not in lines[0]  # one hop, no reader: one column
    assert "25.0%" in lines[2] and "50.0%" in lines[3] and "100.0%" in lines[4] and "12.5%" in lines[5]


@pytest.mark.parametrize("curve", [[], [{"env_steps": 512, "return": 0.5, "mean_kl_loss": 0.01, "distill_kl": 0.2},
                                        {"env_steps": 1024, "return": 0.7}]])
def test_plot_results_writes_a_png(tmp_path, curve):
    results = baseline_scores(_hand_built())
    path = plot_results(results, curve, tmp_path / "out" / "results.png", "test run")
    assert path == tmp_path / "out" / "results.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["results.png"]  # no temporary file left


def test_evaluate_reports_support_outside_the_memory_budget():
    from memsel.data.budget import Budget, apply_budget

    data = _hand_built()
    full = evaluate(data, {})
    assert full["random"]["support_outside_budget"] == 0 and full["random"]["questions_without_support"] == 0
    assert "outside the memory budget" not in format_table(full)
    seen = apply_budget(data, Budget(1, "truncate"))  # only the newest memory of each question
    results = evaluate(seen, {})
    # row 0 keeps its fact; row 1 loses both; row 2 keeps its fact; row 3 loses its fact
    for method in ("random", "most_recent"):
        assert results[method]["support_outside_budget"] == 3
        assert results[method]["questions_without_support"] == 2
    assert results["most_recent"]["selection_accuracy"] == pytest.approx(2 / 4)  # misses are counted
    assert "3 supporting facts lie outside the memory budget; 2 questions have none inside" in format_table(results)


# ---------------------------------------------------------------- multi-hop selection and answers
from memsel.evaluate import greedy_rollout, hop_counts, random_scores, score_choices  # noqa: E402


def _two_hop() -> EncodedSamples:
    """Two questions over 4 slots, two supporting facts each (listed newest first in row 0)."""
    data = _hand_built()
    data = data.take(np.array([0, 1]))
    data.support[:] = False
    data.support[0, [1, 2]] = True   # the two newest of 3 memories
    data.support[1, [0, 3]] = True   # the oldest and the newest of 4
    data.support_rank = np.zeros_like(data.support, dtype=np.int8)
    data.support_rank[0, 2], data.support_rank[0, 1] = 1, 2
    data.support_rank[1, 0], data.support_rank[1, 3] = 1, 2
    data.n_support = np.array([2, 2])
    return data


def test_exact_match_needs_every_hop_and_repeats_earn_nothing():
    data = _two_hop()
    hops = hop_counts(data, 0)
    assert hops.tolist() == [2, 2]
    got = score_choices(data, np.array([[2, 1], [3, 3]]), hops)  # row 1 picks the same fact twice
    assert got["selection_accuracy"] == pytest.approx(0.5)
    assert got["hop_accuracy"] == [pytest.approx(1.0), pytest.approx(0.5)]
    got = score_choices(data, np.array([[1, 2], [0, 3]]), hops)  # any order is right
    assert got["selection_accuracy"] == 1.0


def test_recency_prior_picks_the_newest_memories_in_turn():
    data = _two_hop()
    scores = baseline_scores(data, hops=0)
    assert scores["recency_prior"]["selection_accuracy"] == pytest.approx(0.5)  # row 0 right, row 1 not
    assert scores["most_recent"]["selection_accuracy"] == 0.0  # the newest twice is one fact
    assert scores["most_recent"]["hop_accuracy"] == [1.0, 0.0]


def test_random_expectations_match_a_simulation():
    data = _hand_built()
    data.n_support = np.array([1, 2, 1, 1])
    hops = hop_counts(data, 0)  # row 1 asks two hops
    exact = random_scores(data, hops)
    rng = np.random.default_rng(0)
    counts = data.mask.sum(1)
    trials = 20000
    hits, hop1, hop2 = np.zeros(4), np.zeros(4), 0.0
    for _ in range(trials):
        picks = [rng.integers(counts[i], size=hops[i]) for i in range(4)]
        for i, p in enumerate(picks):
            got = {int(c) for c in p if data.support[i, c]}
            hits[i] += len(got) >= min(hops[i], data.n_support[i])
            hop1[i] += bool(data.support[i, p[0]])
        p = picks[1]
        hop2 += bool(data.support[1, p[1]]) and p[1] != p[0]
    assert exact["selection_accuracy"] == pytest.approx(hits.mean() / trials, abs=0.01)
    assert exact["hop_accuracy"][0] == pytest.approx(hop1.mean() / trials, abs=0.01)
    assert exact["hop_accuracy"][1] == pytest.approx(hop2 / trials, abs=0.01)


def test_greedy_rollout_matches_greedy_env_episodes():
    """Evaluation's greedy multi-hop choices score exactly as the same policy's env episodes do."""
    from memsel.env import MemorySelectionEnv

    data = _two_hop()
    torch.manual_seed(3)
    net = Selector(SelectorConfig(embed_dim=8, hidden_dim=8), DataSpec(10, 4, 3))
    hops = hop_counts(data, 0)
    chosen = greedy_rollout(net, {k: torch.from_numpy(v) for k, v in data.tensors().items()},
                            torch.from_numpy(hops)).numpy()
    env = MemorySelectionEnv({"data": data, "hops": 0, "seed": 0})
    seen = {}
    for _ in range(20):
        obs, info = env.reset()
        picks, done = [], False
        while not done:
            t = {k: torch.as_tensor(v).unsqueeze(0) for k, v in obs.items()}
            with torch.no_grad():
                a = int(net(t).argmax(-1))
            picks.append(a)
            obs, _, done, _, step = env.step(a)
        seen[info["sample"]] = (picks, step["correct"])
    assert seen, "no episodes"
    for i, (picks, correct) in seen.items():
        assert picks == chosen[i].tolist()
        assert correct == bool(score_choices(data.take(np.array([i])), chosen[i:i + 1], hops[i:i + 1])[
            "selection_accuracy"])


def test_answer_accuracy_uses_the_reader_on_each_methods_choices(tmp_path):
    from memsel.reader import AnswerReader

    data = _two_hop()
    torch.manual_seed(0)
    reader = AnswerReader(DataSpec(10, 4, 3), 8, 2, candidates=[2, 5])
    path = reader.save(tmp_path / "reader.pt")
    results = evaluate(data, {}, hops=0, reader_path=path)
    assert {"oracle", "recency_prior", "most_recent", "random"} <= set(results)
    assert results["oracle"]["selection_accuracy"] == 1.0
    for metrics in results.values():
        assert 0.0 <= metrics["answer_accuracy"] <= 1.0
    # the reader's answers are the candidates only
    said = AnswerReader.load(path).answer(torch.from_numpy(data.memories), torch.from_numpy(data.query),
                                          torch.tensor([[2, 1], [0, 3]]))
    assert set(said.tolist()) <= {2, 5}
    table = format_table(results)
    assert "answer" in table.splitlines()[0] and "hop 2" in table.splitlines()[0]


def test_sample_efficiency_counts_steps_to_95_percent():
    from memsel.evaluate import sample_efficiency

    curves = {"ppo": [{"env_steps": 512, "return": 0.96}, {"env_steps": 1024, "return": 0.99}],
              "ppo_scratch": [{"env_steps": 512, "return": 0.2}, {"env_steps": 1024, "return": 0.5},
                              {"env_steps": 1536, "return": 0.6}]}
    got = sample_efficiency(curves)
    assert got["ppo"]["env_steps_to_95_best"] == 512
    assert got["ppo_scratch"]["env_steps_to_95_best"] is None  # never near 0.99
    assert got["ppo_scratch"]["env_steps_to_95_own"] == 1536  # 0.95 * 0.6 = 0.57


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_evaluation_runs_the_networks_on_a_device(device):
    """The selector and the reader run on ``device``; the scores are the CPU's."""
    from memsel.reader import AnswerReader

    data = _two_hop()
    torch.manual_seed(0)
    net = Selector(SelectorConfig(embed_dim=8, hidden_dim=8), DataSpec(10, 4, 3))
    reader = AnswerReader(DataSpec(10, 4, 3), 8, 2, candidates=[2, 5])
    on_cpu = selector_scores(net, data, hops=0, reader=reader)
    assert baseline_scores(data, hops=0, reader=reader, device=device) == baseline_scores(data, hops=0, reader=reader)
    got = selector_scores(net, data, hops=0, reader=reader, batch_size=1, device=device)
    assert next(net.parameters()).device.type == device and reader.candidates.device.type == device
    assert got == on_cpu
    with pytest.raises(ValueError, match="device"):
        selector_scores(net, data, hops=0, device=f"cuda:{torch.cuda.device_count()}")  # a GPU that is not there
