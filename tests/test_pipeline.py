"""The stages' shared pieces (memsel.pipeline): the memory budget that pretraining, PPO and evaluation share."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memsel.config import load_config
from memsel.data.prepare import prepare_data
from memsel.pipeline import budgeted


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = load_config(None, [f"run_dir={tmp_path_factory.mktemp('run')}", "data.train_stories=20",
                             "data.test_stories=10"])
    return prepare_data(cfg)


def test_no_budget_passes_the_split_through(prepared):
    cfg = load_config()
    assert budgeted(cfg, prepared.test, "test") is prepared.test


def test_a_budget_gives_every_stage_k_slots_and_logs_what_it_leaves_out(prepared, caplog):
    cfg = load_config(None, ["env.budget_strategy=truncate", "env.memory_budget=2"])
    with caplog.at_level("INFO", logger="memsel.pipeline"):
        test = budgeted(cfg, prepared.test, "test")
    assert test.mask.shape == (len(prepared.test), 2)
    assert (test.ages == np.array([1, 0])).all()  # the two most recent memories of every question
    assert "supporting facts outside it" in caplog.text
    assert test.dropped_support == int((prepared.test.n_support - test.support.sum(1)).sum()) > 0


def test_sampled_budget_is_fixed_per_seed_and_split(prepared):
    cfg = load_config(None, ["env.budget_strategy=sample", "env.memory_budget=3"])
    a, b = budgeted(cfg, prepared.train, "train"), budgeted(cfg, prepared.train, "train")
    np.testing.assert_array_equal(a.memories, b.memories)
    assert a.ages.max() > 2  # older memories are drawn too, with their ages in the full story
    other = load_config(None, ["env.budget_strategy=sample", "env.memory_budget=3", "seed=1"])
    assert not np.array_equal(budgeted(other, prepared.train, "train").memories, a.memories)


@pytest.mark.slow
def test_evaluate_command_reports_support_outside_the_budget(tmp_path, capfd):
    from memsel.cli import run

    from memsel.data.prepare import prepare_data
    from memsel.network import Selector

    sets = ["data.train_stories=10", "data.test_stories=10", "env.budget_strategy=truncate", "env.memory_budget=1"]
    # evaluate needs a trained run: its prepared data and a selector (an untrained one will do here)
    cfg = load_config(None, sets, run_dir=str(tmp_path))
    Selector(cfg.selector, prepare_data(cfg).spec).save(cfg.layout.pretrained_selector)
    argv = ["evaluate", "--run-dir", str(tmp_path), *(a for item in sets for a in ("--set", item)), "--json"]
    assert run(argv) == 0
    results = json.loads(capfd.readouterr().out)
    assert results["random"]["support_outside_budget"] > 0
    assert results["random"]["questions"] == 50
    assert (tmp_path / "results.txt").read_text().count("outside the memory budget") == 1


def test_evaluate_puts_every_ppo_run_in_one_table_with_its_sample_efficiency(tmp_path, capfd):
    """Selector files under ppo/, ppo_scratch/ and ppo_no_distill/ are all evaluated; their curves
    (outcome.json) give env steps to 95% of the best final return."""
    import torch

    from memsel.cli import run
    from memsel.network import Selector

    cfg = load_config(None, [f"run_dir={tmp_path}", "data.train_stories=10", "data.test_stories=10"])
    data = prepare_data(cfg)
    torch.manual_seed(0)
    net = Selector(cfg.selector, data.spec)
    curves = {"ppo": [0.93, 0.97], "ppo_scratch": [0.2, 0.5], "ppo_no_distill": [0.8, 0.95]}
    for folder, returns in curves.items():
        net.save(tmp_path / folder / "selector.pt")
        curve = [{"iteration": i + 1, "env_steps": 512.0 * (i + 1), "return": r} for i, r in enumerate(returns)]
        (tmp_path / folder / "outcome.json").write_text(json.dumps({"curve": curve}))
    argv = ["evaluate", "--run-dir", str(tmp_path), "--set", "data.train_stories=10", "--set",
            "data.test_stories=10", "--json"]
    assert run(argv) == 0
    results = json.loads(capfd.readouterr().out)
    assert list(results)[-3:] == ["ppo_scratch", "ppo_no_distill", "ppo"]
    assert results["ppo"]["selection_accuracy"] == results["ppo_scratch"]["selection_accuracy"]  # the same net
    assert results["ppo"]["env_steps_to_95_best"] == 512.0  # 0.93 >= 0.95 * 0.97
    assert results["ppo_no_distill"]["env_steps_to_95_best"] == 1024.0
    assert results["ppo_scratch"]["env_steps_to_95_best"] is None
    assert "PPO from scratch" in (tmp_path / "results.txt").read_text()
