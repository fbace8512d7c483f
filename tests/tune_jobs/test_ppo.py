"""memsel.tune_jobs.ppo directly: one tiny real PPO run through Tune, the selector export from an RLlib
checkpoint, and the teacher's return on cases computable by hand."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec

from memsel.config import load_config
from memsel.env import MemorySelectionEnv
from memsel.network import Selector
from memsel.rllib_models import SelectorRLModule
from memsel.tune_jobs.ppo import MODULE_SUBDIR, export_selector_from_checkpoint, expected_return, pretrained_return, \
    run_ppo


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


def _module(cfg, data):
    env = MemorySelectionEnv({"data": data.train})
    spec = RLModuleSpec(module_class=SelectorRLModule, observation_space=env.observation_space,
                        action_space=env.action_space,
                        model_config={"selector": dataclasses.asdict(cfg.selector), "spec": dataclasses.asdict(data.spec)})
    return spec.build()


def test_export_selector_from_checkpoint_keeps_the_modules_weights_and_the_vocab(prepared, tmp_path):
    cfg, data = prepared
    module = _module(cfg, data)
    module.save_to_path(str(tmp_path / "ckpt" / MODULE_SUBDIR))  # where an Algorithm checkpoint keeps it
    vocab = [f"w{i}" for i in range(data.spec.vocab_size)]
    out = export_selector_from_checkpoint(tmp_path / "ckpt", tmp_path / "exported.pt", vocab)
    exported = Selector.load(out)
    assert exported.vocab == vocab
    expected = module.selector.state_dict()
    assert set(exported.state_dict()) == set(expected)
    for k, v in exported.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_run_ppo_trains_and_exports_the_checkpoints_selector(prepared, ray_session, tmp_path):
    cfg, data = prepared
    teacher = _zero_selector(cfg, data, tmp_path / "teacher.pt")
    outcome = run_ppo(cfg, data.files["train_npz"], data.spec, teacher, sweep=False)
    assert [row["iteration"] for row in outcome.curve] == [1, 2]
    assert all(np.isfinite(row["return"]) and np.isfinite(row["distill_kl"]) for row in outcome.curve)
    assert outcome.best_config == {} and len(outcome.trials) == 1
    # The exported file is the checkpoint's selector, with the run's vocabulary.
    module = RLModule.from_checkpoint(f"{outcome.checkpoint}/{MODULE_SUBDIR}")
    exported = Selector.load(outcome.selector_path)
    for k, v in module.selector.state_dict().items():
        assert torch.equal(exported.state_dict()[k], v), k
    assert exported.vocab is not None and len(exported.vocab) == data.spec.vocab_size
    written = json.loads(cfg.layout.outcome("ppo").read_text())
    assert written["selector_path"] == str(outcome.selector_path)


def test_searched_fields_are_read_where_the_trial_config_keeps_them(prepared):
    from memsel.rl import build_ppo_config
    from memsel.tune_jobs.ppo import _lookup

    cfg, data = prepared
    ppo = dataclasses.replace(cfg.ppo, lr=1e-4, distill_coeff=0.25, train_batch_size=96, vf_clip=3.0)
    trial = build_ppo_config(dataclasses.replace(cfg, ppo=ppo), data.files["train_npz"], data.spec, None).to_dict()
    assert _lookup(trial, "lr") == 1e-4  # RLlib's own key
    assert _lookup(trial, "train_batch_size") == 96 and _lookup(trial, "vf_clip") == 3.0
    assert _lookup(trial, "distill_coeff") == 0.25  # the learner's copy of the ppo settings
