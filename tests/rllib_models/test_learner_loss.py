"""The learners' losses on one hand-built batch, with no Algorithm and no Ray: memsel's learner is RLlib's
PPO learner plus its terms, and each switch changes the loss only where it should."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from memsel.config import load_config
from memsel.env import MemorySelectionEnv
from memsel.network import Selector
from memsel.rllib_models.learner import (
    DistillPPOTorchLearner,
    NaturalPPOTorchLearner,
    clipped_surrogate,
    distillation_kl,
    with_minibatch_advantages,
)

MID = "default_policy"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from memsel.data.prepare import prepare_data

    cfg = load_config(None, [f"run_dir={tmp_path_factory.mktemp('loss_run')}", "data.train_stories=30",
                             "data.test_stories=5", "device=cpu"])
    return cfg, prepare_data(cfg)


def _ppo_config(cfg, data, teacher=None, **ppo):
    from memsel.rl import build_ppo_config

    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, **ppo))
    return build_ppo_config(cfg, data.files["train_npz"], data.spec, teacher, teacher_return=0.9)


def _build(config, data, learner_class=None):
    if learner_class is not None:
        config = config.copy(copy_frozen=False).learners(learner_class=learner_class)
    return config.build_learner(env=MemorySelectionEnv(config.env_config))


def _batch(learner, data, n=48, seed=0):
    """A train batch as RLlib's learner connector hands it over: obs, actions sampled from a nearby
    (perturbed) policy with their logp and logits, GAE-style advantages and value targets, a loss mask."""
    gen = torch.Generator().manual_seed(seed)
    obs = {k: torch.from_numpy(v[:n]) for k, v in data.train.tensors().items()}
    obs["mask"] = obs["mask"].to(torch.int8)  # as RLlib's connectors deliver a MultiBinary mask
    with torch.no_grad():
        logits = learner.module[MID].forward_train({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    prev = logits + 0.5 * torch.randn(logits.shape, generator=gen) * (obs["mask"] > 0)
    dist = torch.distributions.Categorical(logits=prev)
    actions = dist.sample()
    loss_mask = torch.ones(n, dtype=torch.bool)
    loss_mask[::7] = False  # RLlib's bootstrap rows
    return {Columns.OBS: obs, Columns.ACTIONS: actions, Columns.ACTION_LOGP: dist.log_prob(actions),
            Columns.ACTION_DIST_INPUTS: prev, Columns.LOSS_MASK: loss_mask,
            Postprocessing.ADVANTAGES: 2.0 * torch.randn(n, generator=gen) + 0.5,
            Postprocessing.VALUE_TARGETS: torch.rand(n, generator=gen)}


def _loss(learner, batch):
    fwd_out = learner.module[MID].forward_train(batch)
    return learner.compute_loss_for_module(module_id=MID, config=learner.config.get_config_for_module(MID),
                                           batch=batch, fwd_out=fwd_out)


def _num(x) -> float:
    """A loss or logged metric as a float (RLlib logs tensors)."""
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def _twin(learner, config, data, learner_class=PPOTorchLearner):
    """A learner of ``learner_class`` from the same config, with ``learner``'s module weights."""
    other = _build(config, data, learner_class)
    other.module[MID].load_state_dict(learner.module[MID].state_dict())
    return other


def test_every_switch_off_is_rllibs_ppo_loss(prepared):
    cfg, data = prepared
    config = _ppo_config(cfg, data, None, distill_coeff=0.0, entropy_coeff=0.01)
    ours = _build(config, data)
    assert type(ours) is DistillPPOTorchLearner and ours._teacher is None
    stock = _twin(ours, config, data)
    batch = _batch(ours, data)
    a, b = _loss(ours, batch), _loss(stock, batch)
    assert abs(_num(a) - _num(b)) < 1e-6
    assert torch.isfinite(a)


def _old_loss(learner, config, batch, teacher_logits, coeff):
    """The loss memsel's learner computed before it was built on RLlib's (its terms written out)."""
    module = learner.module[MID]
    fwd = module.forward_train(batch)
    logits, mask = fwd[Columns.ACTION_DIST_INPUTS], batch[Columns.LOSS_MASK]

    def mean(x):
        return x[mask].sum() / mask.sum()

    curr, prev = torch.distributions.Categorical(logits=logits), torch.distributions.Categorical(
        logits=batch[Columns.ACTION_DIST_INPUTS])
    ratio = torch.exp(curr.log_prob(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
    surrogate = clipped_surrogate(batch[Postprocessing.ADVANTAGES], ratio, config.clip_param)
    mean_kl = mean(torch.distributions.kl_divergence(prev, curr))
    policy = mean(-surrogate - config.entropy_coeff * curr.entropy()) + config.kl_coeff * mean_kl
    values = module.compute_values(batch, fwd[Columns.EMBEDDINGS])
    vf = torch.clamp((values - batch[Postprocessing.VALUE_TARGETS]) ** 2, 0, config.vf_clip_param)
    distill = mean(distillation_kl(teacher_logits, logits, batch[Columns.OBS]["mask"]))
    return policy + config.vf_loss_coeff * mean(vf) + coeff * distill, distill


def test_clip_loss_with_distillation_is_rllibs_plus_the_distillation_term(prepared, tmp_path):
    cfg, data = prepared
    teacher = Selector(cfg.selector, data.spec).save(tmp_path / "teacher.pt")
    config = _ppo_config(cfg, data, teacher, distill_coeff=0.7, entropy_coeff=0.01)
    ours = _build(config, data)
    with torch.no_grad():  # the student drifts from the teacher it started from
        for p in ours.module[MID].selector.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stock = _twin(ours, config, data)
    batch = _batch(ours, data)
    with torch.no_grad():
        teacher_logits = Selector.load(teacher)(batch[Columns.OBS])
    old, distill = _old_loss(ours, ours.config, batch, teacher_logits, 0.7)
    loss = _loss(ours, batch)
    assert _num(distill) > 1e-3
    assert _num(loss) == pytest.approx(_num(_loss(stock, batch) + 0.7 * distill), abs=1e-6)
    assert _num(loss) == pytest.approx(_num(old), abs=1e-6)  # results do not move
    assert _num(ours.metrics.peek((MID, "distill_coeff"))) == 0.7
    assert _num(ours.metrics.peek((MID, "distill_kl"))) == pytest.approx(_num(distill), abs=1e-6)
    for key in ("approx_kl", "clipfrac", "update_stopped_early"):
        assert ours.metrics.peek((MID, key)) is not None, key


def test_dual_clip_changes_the_loss_only_for_negative_advantages_with_large_ratios(prepared):
    cfg, data = prepared
    dual = _build(_ppo_config(cfg, data, None, distill_coeff=0.0, dual_clip=3.0), data)
    plain = _twin(dual, _ppo_config(cfg, data, None, distill_coeff=0.0), data, DistillPPOTorchLearner)
    batch = _batch(dual, data)
    with torch.no_grad():  # sampling logp = current logp: every ratio is exactly 1
        fwd = dual.module[MID].forward_train(batch)[Columns.ACTION_DIST_INPUTS]
        logp = torch.distributions.Categorical(logits=fwd).log_prob(batch[Columns.ACTIONS])
    batch[Columns.ACTION_LOGP] = logp
    assert _num(_loss(dual, batch)) == pytest.approx(_num(_loss(plain, batch)), abs=1e-6)
    ratio = torch.where(torch.arange(len(logp)) % 2 == 0, 5.0, 1.0)  # every other sample: ratio 5 > dual_clip
    batch[Columns.ACTION_LOGP] = logp - ratio.log()
    adv, mask = batch[Postprocessing.ADVANTAGES], batch[Columns.LOSS_MASK]
    hit = (adv < 0) & (ratio > 3.0) & mask
    assert hit.any()
    # There the clipped surrogate 5A is raised to 3A: the loss falls by mean(2 |A|) over those samples.
    expected = float((2.0 * adv)[hit].sum() / mask.sum())
    assert _num(_loss(dual, batch) - _loss(plain, batch)) == pytest.approx(expected, abs=1e-5)
    assert _num(dual.metrics.peek((MID, "policy_loss"))) == pytest.approx(
        _num(plain.metrics.peek((MID, "policy_loss"))) + expected, abs=1e-5)


def test_minibatch_advantage_norm_standardises_what_the_surrogate_sees(prepared):
    cfg, data = prepared
    normed = _build(_ppo_config(cfg, data, None, distill_coeff=0.0, minibatch_advantage_norm=True), data)
    stock = _twin(normed, _ppo_config(cfg, data, None, distill_coeff=0.0), data)
    batch = _batch(normed, data)
    std = with_minibatch_advantages(batch)[Postprocessing.ADVANTAGES][batch[Columns.LOSS_MASK]]
    assert float(std.mean()) == pytest.approx(0.0, abs=1e-5) and float(std.std()) == pytest.approx(1.0, abs=1e-5)
    loss = _num(_loss(normed, batch))
    assert loss == pytest.approx(_num(_loss(stock, with_minibatch_advantages(batch))), abs=1e-6)
    assert abs(loss - _num(_loss(stock, batch))) > 1e-3


def test_target_kl_stops_the_optimiser_steps(prepared):
    cfg, data = prepared
    learner = _build(_ppo_config(cfg, data, None, distill_coeff=0.0, target_kl=1e-6), data)
    batch = _batch(learner, data)  # sampled by a perturbed policy: approx KL well above 1e-6
    before = {k: v.clone() for k, v in learner.module[MID].state_dict().items()}
    loss = _loss(learner, batch)
    assert _num(learner.metrics.peek((MID, "update_stopped_early"))) == 1.0
    learner.apply_gradients(learner.compute_gradients({MID: loss}))
    after = learner.module[MID].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_update_setting_picks_the_learner_class(prepared):
    cfg, data = prepared
    assert _ppo_config(cfg, data, None, update="natural").learner_class is NaturalPPOTorchLearner
    assert _ppo_config(cfg, data, None).learner_class is DistillPPOTorchLearner
    with pytest.raises(ValueError, match="NaturalPPOTorchLearner"):
        _build(_ppo_config(cfg, data, None, update="natural"), data, DistillPPOTorchLearner)
    config = _ppo_config(cfg, data, None)
    config.learner_config_dict = {}  # .learners(...) would merge into the existing dict
    with pytest.raises(ValueError, match="learner_config_dict\\['ppo'\\]"):
        _build(config, data)


def test_natural_update_moves_the_selector_in_the_update_step_not_in_the_loss(prepared):
    cfg, data = prepared
    learner = _build(_ppo_config(cfg, data, None, distill_coeff=0.0, update="natural", max_kl=0.01,
                                 use_kl_loss=False), data)
    batch = _batch(learner, data)
    module = learner.module[MID]
    before = {k: v.clone() for k, v in module.selector.state_dict().items()}
    loss = _loss(learner, batch)
    assert all(torch.equal(before[k], v) for k, v in module.selector.state_dict().items())
    grads = learner.compute_gradients({MID: loss})
    selector_ids = {id(p) for p in module.selector.parameters()}
    assert all(g is None for pid, g in grads.items() if id(learner._params[pid]) in selector_ids)
    learner.apply_gradients(learner.postprocess_gradients(grads))
    assert any(not torch.equal(before[k], v) for k, v in module.selector.state_dict().items())
    assert _num(learner.metrics.peek((MID, "natural_accepted"))) == 1.0
    assert 0.0 < _num(learner.metrics.peek((MID, "natural_step_kl"))) <= 0.01


def test_learner_tensors_follow_the_learner_device(prepared, tmp_path):
    cfg, data = prepared
    teacher = Selector(cfg.selector, data.spec).save(tmp_path / "teacher.pt")
    config = _ppo_config(cfg, data, teacher)
    assert config.num_gpus_per_learner == 0  # device=cpu
    learner = _build(config, data)
    device = learner._device
    assert all(p.device == device for p in learner._teacher.parameters())
    assert all(p.device == device for p in learner.module[MID].parameters())
