"""The RLlib side: the RLModule built from its spec, weight transfer from Lightning, and PPO's
first iteration sampling with the pretrained weights (real Ray, real Lightning)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from memsel.config import load_config
from memsel.data.prepare import prepare_data
from memsel.env import MemorySelectionEnv
from memsel.network import Selector
from memsel.pretrain import pretrain, strip_prefix
from memsel.rllib_models import SelectorRLModule
from memsel.rllib_models.learner import distillation_kl


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Generated task 1, pretrained for a few epochs with a real Lightning Trainer (no tracking)."""
    run = tmp_path_factory.mktemp("rl_run")
    cfg = load_config(None, [f"run_dir={run}", "data.train_stories=80", "data.test_stories=20",
                             "pretrain.max_epochs=8"])
    data = prepare_data(cfg)
    path = pretrain(cfg, data.train, data.val, data.spec)
    return cfg, data, path


def _obs_batch(data, n=16):
    return {k: torch.from_numpy(v[:n]) for k, v in data.tensors().items()}


def _module(cfg, data, pretrained_path=None):
    env = MemorySelectionEnv({"data": data.train})
    spec = RLModuleSpec(module_class=SelectorRLModule, observation_space=env.observation_space,
                        action_space=env.action_space,
                        model_config={"selector": dataclasses.asdict(cfg.selector),
                                      "spec": dataclasses.asdict(data.spec), "pretrained_path": pretrained_path})
    return spec.build()


def test_module_forwards_match_the_selector(pretrained):
    cfg, data, path = pretrained
    module = _module(cfg, data, str(path))
    obs = _obs_batch(data.train)
    obs["mask"] = obs["mask"].to(torch.int8)  # as RLlib's connectors deliver a MultiBinary mask
    with torch.no_grad():
        inf = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        train = module.forward_train({Columns.OBS: obs})
        values = module.compute_values({Columns.OBS: obs})
        direct = Selector.load(path)(obs)
    assert inf.shape == (16, data.spec.max_memories)
    assert torch.allclose(inf, direct)
    assert torch.allclose(train[Columns.ACTION_DIST_INPUTS], direct)
    assert values.shape == (16,) and torch.isfinite(values).all()
    assert torch.allclose(module.compute_values({Columns.OBS: obs}, train[Columns.EMBEDDINGS]), values)


def test_lightning_weights_reach_the_rl_module(pretrained):
    cfg, data, path = pretrained
    ckpts = sorted((cfg.run_path / "pretrain" / "checkpoints").glob("best-*.ckpt"))
    assert ckpts, "pretraining left no Lightning checkpoint"
    lightning_sd = strip_prefix(torch.load(ckpts[0], map_location="cpu", weights_only=False)["state_dict"])
    module = _module(cfg, data, str(path))
    module_sd = module.selector.state_dict()
    assert set(module_sd) == set(lightning_sd)
    for k, v in lightning_sd.items():
        assert torch.equal(module_sd[k], v), k
    # And a module built without the file really differs: the test above can fail.
    fresh = _module(cfg, data, None).selector.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in lightning_sd.items())


def test_pretrained_file_for_other_shapes_is_refused(pretrained, tmp_path):
    cfg, data, path = pretrained
    other = dataclasses.replace(data.spec, max_memories=data.spec.max_memories + 3)
    Selector(cfg.selector, other).save(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="pretrained for data shapes"):
        _module(cfg, data, str(tmp_path / "other.pt"))


def test_distillation_kl_is_zero_for_identical_and_ignores_padding():
    logits = torch.randn(4, 6)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, 4:] = False
    logits = logits.masked_fill(~mask, torch.finfo(torch.float32).min)
    assert torch.allclose(distillation_kl(logits, logits, mask), torch.zeros(4), atol=1e-6)
    other = logits.clone()
    other[:, 0] += 2.0
    assert (distillation_kl(logits, other, mask) > 0).all()


def _expected_sampled_return(path, data) -> float:
    """What a policy sampling from the pretrained selector's softmax earns per episode on ``data``."""
    with torch.no_grad():
        probs = torch.softmax(Selector.load(path)(_obs_batch(data, len(data))), -1).numpy()
    return float((probs * data.support).sum(1).mean())


def test_first_ppo_iteration_samples_with_pretrained_weights(pretrained, ray_session):
    from memsel.rl import build_ppo_config

    cfg, data, path = pretrained
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, train_batch_size=400, minibatch_size=100,
                                                            num_epochs=1))
    algo = build_ppo_config(cfg, data.files["train_npz"], data.spec, path).build_algo()
    try:
        runner_sd = algo.env_runner.module.selector.state_dict()
        for k, v in Selector.load(path).state_dict().items():
            assert torch.equal(runner_sd[k], v), f"env runner's {k} is not the pretrained weight"
        result = algo.train()
    finally:
        algo.stop()
    ret = result["env_runners"]["episode_return_mean"]
    expected = _expected_sampled_return(path, data.train)
    random_return = float((data.train.support.sum(1) / data.train.mask.sum(1)).mean())
    # 400 Bernoulli episodes: the standard error is below 0.025, so 0.1 is a wide margin.
    assert abs(ret - expected) < 0.1, (ret, expected)
    assert ret > random_return + 0.3, (ret, random_return)
    learner = result["learners"]["default_policy"]
    # Student == teacher at the start: the distillation KL of the first update is tiny.
    assert learner["distill_kl"] < 0.05
    assert np.isfinite(learner["mean_kl_loss"])


# --------------------------------------------------------------------------- env settings reach RLlib


def test_env_settings_travel_in_env_config(pretrained):
    from memsel.rl import build_ppo_config

    cfg, data, path = pretrained
    cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, hops=0, reward_timing="final",
                                                           reward_mode="answer"))
    env_config = build_ppo_config(cfg, data.files["train_npz"], data.spec, path).env_config
    assert env_config["hops"] == 0 and env_config["reward_timing"] == "final" and env_config["reward_mode"] == "answer"
    assert env_config["data_path"] == data.files["train_npz"] and env_config["seed"] == cfg.seed
    env = MemorySelectionEnv(env_config)  # what every env runner builds from it
    assert env.reward_mode == "answer" and env.hops == 0


@pytest.mark.slow
def test_ppo_samples_multi_hop_episodes_on_generated_task_2(tmp_path, ray_session):
    """PPO end to end on a multi-hop env: two selections per episode, the 'selected' key in the batch."""
    from memsel.rl import build_ppo_config

    cfg = load_config(None, [f"run_dir={tmp_path}", "data.task=2", "data.train_stories=30", "data.test_stories=5",
                             "env.hops=0", "ppo.use_pretrained=false", "ppo.train_batch_size=200",
                             "ppo.minibatch_size=100", "ppo.num_epochs=1"])
    data = prepare_data(cfg)
    algo = build_ppo_config(cfg, data.files["train_npz"], data.spec, None).build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    runners = result["env_runners"]
    assert runners["episode_len_mean"] == pytest.approx(2.0)  # task 2: two hops per question
    assert 0.0 <= runners["episode_return_mean"] <= 1.0
    assert np.isfinite(result["learners"]["default_policy"]["policy_loss"])


def test_orthogonal_init_switch(pretrained):
    from memsel.rllib_models.module import orthogonal_init

    cfg, data, path = pretrained
    layer = torch.nn.Linear(8, 8)
    orthogonal_init(layer, out_gain=0.01)
    w = layer.weight.detach()
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(8), atol=1e-5)  # gain sqrt(2) squared
    assert torch.count_nonzero(layer.bias) == 0
    env = MemorySelectionEnv({"data": data.train})
    spec = RLModuleSpec(module_class=SelectorRLModule, observation_space=env.observation_space,
                        action_space=env.action_space,
                        model_config={"selector": dataclasses.asdict(cfg.selector),
                                      "spec": dataclasses.asdict(data.spec), "pretrained_path": str(path),
                                      "orthogonal_init": True})
    module = spec.build()
    out = module.value_head[-1].weight.detach()
    assert torch.allclose(out.norm(), torch.tensor(1.0), atol=1e-5)  # one output row, gain 1
    # The pretrained selector still wins over the init.
    for k, v in Selector.load(path).state_dict().items():
        assert torch.equal(module.selector.state_dict()[k], v), k
