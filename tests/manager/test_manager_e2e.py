"""End to end with a manager: real Lightning pretraining, real RLlib PPO on a local Ray, the managed budget."""

from __future__ import annotations

import json

import pytest

from memsel.config import load_config


@pytest.mark.slow
def test_pipeline_stage_trains_a_manager_that_the_budget_uses(tmp_path, ray_session):
    from memsel.data.prepare import prepare_data
    from memsel.manager.network import load_manager
    from memsel.manager.train import evaluate_managers, manager_data, manager_files
    from memsel.pipeline import budgeted, stage_manager

    cfg = load_config(None, ["data.task=2", "data.train_stories=30", "data.test_stories=10", "env.memory_budget=4",
                             "env.budget_strategy=managed", "manager.max_epochs=2", "manager.ppo_iterations=1",
                             "ppo.train_batch_size=128", "ppo.minibatch_size=64", "ppo.num_epochs=1",
                             "device=cpu", f"run_dir={tmp_path / 'run'}"])
    data = prepare_data(cfg)
    cfg = stage_manager(cfg)
    path = cfg.env.budget_options["manager"]
    _, k = load_manager(path)
    assert k == 4
    outcome = json.loads((tmp_path / "run" / "manager" / "outcome.json").read_text())
    assert outcome["chosen"] in ("pretrained.pt", "ppo.pt") and len(outcome["ppo_curve"]) == 2
    seen = budgeted(cfg, data.test, "test")
    assert seen.mask.shape[1] == 4 and (seen.mask.sum(1) <= 4).all()
    results = evaluate_managers(cfg, manager_data(cfg), "test", manager_files(cfg))
    assert set(results) == {"fifo", "lifo", "random", "oracle", "manager (pretrained)", "manager (PPO)"}
    assert all(r["retention"] <= results["oracle"]["retention"] + 1e-9 for r in results.values())
