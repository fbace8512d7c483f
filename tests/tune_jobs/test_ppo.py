"""memsel.tune_jobs.ppo directly: one tiny real PPO run through Tune whose exported selector is its checkpoint's
module (weights and vocabulary), how a trial's values and a search space reach RLlib, and the teacher's
return on cases computable by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModule

from memsel.config import load_config
from memsel.network import Selector
from memsel.tune_jobs.ppo import MODULE_SUBDIR, expected_return, pretrained_return, run_ppo


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Generated task 1 (one supporting fact per question), tiny, on the CPU."""
    from memsel.data.prepare import prepare_data

    run = tmp_path_factory.mktemp("ppo_job")
    cfg = load_config(None, [f"run_dir={run}", "data.train_stories=20", "data.test_stories=5", "device=cpu",
                             "ppo.iterations=2", "ppo.train_batch_size=64", "ppo.minibatch_size=32",
                             "ppo.num_epochs=1", "ppo.num_envs_per_env_runner=2"])
    return cfg, prepare_data(cfg)


def _zero_selector(cfg, data, path):
    """A selector whose every weight is 0: equal scores, so a uniform policy over the valid slots."""
    net = Selector(cfg.selector, data.spec)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net.save(path)


def test_expected_return_of_a_uniform_selector_is_support_over_valid_slots(prepared, tmp_path):
    cfg, data = prepared
    path = _zero_selector(cfg, data, tmp_path / "uniform.pt")
    by_hand = float((data.train.support.sum(1) / data.train.mask.sum(1)).mean())
    assert expected_return(path, data.train) == pytest.approx(by_hand, abs=1e-5)
    # One hop, supporting-fact reward: the teacher's return is that exact expectation.
    assert pretrained_return(cfg, path, data.train) == pytest.approx(by_hand, abs=1e-5)


def test_expected_return_of_a_selector_on_the_supporting_fact_is_one_per_hop(prepared, monkeypatch):
    cfg, data = prepared
    assert (data.train.support.sum(1) == 1).all()  # task 1: one hop, one supporting fact

    def oracle(obs):  # all mass on the supporting fact of each question
        return torch.where(torch.from_numpy(data.train.support), 0.0, -1e9)

    monkeypatch.setattr(Selector, "load", lambda path: oracle)
    assert expected_return("oracle.pt", data.train) == pytest.approx(1.0)


def test_run_ppo_trains_and_exports_the_checkpoints_selector(prepared, ray_session, tmp_path):
    cfg, data = prepared
    cfg.layout.pretrain.mkdir(parents=True, exist_ok=True)
    _zero_selector(cfg, data, cfg.layout.pretrained_selector)  # the teacher the trial gets in its payload
    outcome = run_ppo(cfg, data.files, False)
    assert [row["iteration"] for row in outcome.curve] == [1, 2]
    assert all(np.isfinite(row["return"]) and np.isfinite(row["distill_kl"]) for row in outcome.curve)
    # The validation score of the greedy policy, every iteration (tune.eval_every 1).
    assert all(0.0 <= row["val_selection_accuracy"] <= 1.0 for row in outcome.curve)
    assert outcome.best_config == {} and len(outcome.trials) == 1
    # The exported file is the checkpoint's selector, with the run's vocabulary.
    module = RLModule.from_checkpoint(f"{outcome.checkpoint}/{MODULE_SUBDIR}")
    exported = Selector.load(outcome.selector_path)
    for k, v in module.selector.state_dict().items():
        assert torch.equal(exported.state_dict()[k], v), k
    assert exported.vocab is not None and len(exported.vocab) == data.spec.vocab_size
    written = json.loads(cfg.layout.outcome("ppo").read_text())
    assert written["selector_path"] == str(outcome.selector_path)


def test_a_trials_values_reach_rllib_and_the_learner_copy_alike(prepared):
    """A trial applies its sampled values to the memsel config before the PPOConfig is built: RLlib's key and
    the learner's copy of the ppo settings hold the same value (one draw, whoever reads it)."""
    from memsel.config import with_overrides
    from memsel.rl import build_ppo_config

    cfg, data = prepared
    trial_cfg = with_overrides(cfg, {"ppo.lr": np.float64(1e-4), "ppo.distill_coeff": 0.25,
                                     "ppo.train_batch_size": 96, "env.hops": 2})
    trial = build_ppo_config(trial_cfg, data.files["train_npz"], data.spec, None).to_dict()
    copy = trial["learner_config_dict"]["ppo"]
    assert trial["lr"] == copy["lr"] == 1e-4 and type(copy["lr"]) is float
    assert trial["_train_batch_size_per_learner"] == copy["train_batch_size"] == 96
    assert copy["distill_coeff"] == 0.25 and trial["env_config"]["hops"] == 2


@pytest.mark.parametrize("kind", ["loguniform", "grid"])
def test_a_search_space_draws_each_field_once_per_trial(kind):
    """Samplers are keyed by dotted field; a grid multiplies the trials by its points, a sampler does not;
    search_alg grid turns a choice into grid points."""
    from ray.tune.search.variant_generator import generate_variants

    from memsel.config import TuneSettings
    from memsel.tune_jobs.ppo import search_space

    spec = {"loguniform": [1e-5, 1e-3]} if kind == "loguniform" else {"grid": [1e-4, 3e-4, 1e-3]}
    trials = [t for _, t in generate_variants(search_space(TuneSettings(
        search_space={"ppo.lr": spec, "ppo.distill_coeff": {"choice": [0.0, 0.5]}})))]
    assert len(trials) == (3 if kind == "grid" else 1)
    assert all(1e-5 <= t["ppo.lr"] <= 1e-3 and t["ppo.distill_coeff"] in (0.0, 0.5) for t in trials)
    grid = [t for _, t in generate_variants(search_space(TuneSettings(
        search_alg="grid", search_space={"ppo.lr": {"choice": [1e-4, 1e-3]}, "env.hops": {"choice": [1, 2]}})))]
    assert sorted((t["ppo.lr"], t["env.hops"]) for t in grid) == [(1e-4, 1), (1e-4, 2), (1e-3, 1), (1e-3, 2)]
