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
    assert set(scores) == {"random", "most_recent"}
    assert scores["random"]["selection_accuracy"] == pytest.approx(np.mean([1 / 3, 2 / 4, 1 / 1, 1 / 2]))
    assert scores["most_recent"]["selection_accuracy"] == pytest.approx(2 / 4)
    assert scores["random"]["questions"] == scores["most_recent"]["questions"] == 4


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
    assert got["selection_accuracy"] == pytest.approx(expected)
    assert got["questions"] == 4
    # a padded slot is never chosen
    assert all(data.mask[i, c] for i, c in enumerate(choice))


def test_evaluate_orders_methods(tmp_path):
    data = _hand_built()
    torch.manual_seed(0)
    path = Selector(SelectorConfig(embed_dim=8, hidden_dim=8), DataSpec(10, 4, 3)).save(tmp_path / "s.pt")
    results = evaluate(data, {"ppo": path, "pretrained": path})
    assert list(results) == ["random", "most_recent", "pretrained", "ppo"]
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
