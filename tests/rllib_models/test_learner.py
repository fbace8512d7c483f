"""The PPO learner's distillation schedules and stabilisers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from memsel.config import ConfigError, load_config
from memsel.rllib_models.learner import distill_weight


def test_constant_schedule_keeps_the_weight():
    assert distill_weight("constant", 0.5, 0.0, 100, 1e6, 0.9, 0.5) == 0.5


@pytest.mark.parametrize("steps, expected", [(0, 1.0), (50, 0.6), (100, 0.2), (1000, 0.2)])
def test_linear_schedule_interpolates_then_holds(steps, expected):
    assert distill_weight("linear", 1.0, 0.2, 100, steps, None, None) == pytest.approx(expected)


@pytest.mark.parametrize("student, expected", [(0.0, 0.8), (0.5, 0.4), (1.0, 0.0), (1.5, 0.0)])
def test_adaptive_schedule_fades_as_the_student_catches_up(student, expected):
    # QDagger: weight * (1 - student / teacher), clipped to [0, weight]
    assert distill_weight("adaptive", 0.8, 0.0, 1, 0, student, 1.0) == pytest.approx(expected)


def test_adaptive_schedule_without_returns_keeps_the_weight():
    assert distill_weight("adaptive", 0.8, 0.0, 1, 0, None, 1.0) == 0.8


def test_unknown_schedule_and_bad_switches_are_refused():
    with pytest.raises(ValueError, match="distill_schedule"):
        distill_weight("cosine", 1.0, 0.0, 1, 0, None, None)
    with pytest.raises(ConfigError, match="ppo.distill_schedule"):
        load_config(sets=["ppo.distill_schedule=cosine"])
    with pytest.raises(ConfigError, match="ppo.dual_clip"):
        load_config(sets=["ppo.dual_clip=0.5"])


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    from memsel.data.prepare import prepare_data
    from memsel.pretrain import pretrain

    run = tmp_path_factory.mktemp("learner_run")
    cfg = load_config(None, [f"run_dir={run}", "data.train_stories=60", "data.test_stories=10",
                             "pretrain.max_epochs=5", "ppo.train_batch_size=256", "ppo.minibatch_size=64",
                             "ppo.num_epochs=2"])
    data = prepare_data(cfg)
    return cfg, data, pretrain(cfg, data.train, data.val, data.spec)


def _one_iteration(cfg, data, path, **ppo):
    from memsel.rl import build_ppo_config

    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, **ppo))
    algo = build_ppo_config(cfg, data.files["train_npz"], data.spec, path, teacher_return=0.9).build_algo()
    try:
        learner = algo.learner_group._learner  # local learner: num_learners = 0
        before = {k: v.clone() for k, v in learner.module["default_policy"].state_dict().items()}
        result = algo.train()
        after = learner.module["default_policy"].state_dict()
        adam = learner.get_optimizer()
        steps = max(int(st["step"]) for st in adam.state.values())
    finally:
        algo.stop()
    moved = any(not torch.equal(before[k], after[k]) for k in before)
    return result["learners"]["default_policy"], moved, steps


def test_stabiliser_switches_reach_the_learner(pretrained_run, ray_session):
    cfg, data, path = pretrained_run
    stats, moved, _ = _one_iteration(cfg, data, path, distill_schedule="linear", distill_coeff=1.0,
                                  distill_final=0.0, distill_decay_steps=1024, dual_clip=3.0,
                                  minibatch_advantage_norm=True, entropy_coeff=0.02, entropy_coeff_final=0.0,
                                  entropy_decay_steps=1024)
    assert moved
    # One iteration sampled 256 env steps: linear schedules are a quarter of the way down.
    assert stats["distill_coeff"] == pytest.approx(0.75, abs=1e-6)
    assert stats["curr_entropy_coeff"] == pytest.approx(0.015, abs=1e-6)
    for key in ("approx_kl", "clipfrac", "distill_kl", "update_stopped_early", "policy_loss", "vf_loss"):
        assert key in stats, key
    assert stats["update_stopped_early"] == 0.0


def test_hard_trust_region_stops_the_update(pretrained_run, ray_session):
    cfg, data, path = pretrained_run
    # At the first minibatch the policy is the sampling policy (KL 0): one optimiser step is taken;
    # any KL above 1e-12 after it stops the rest (>= 8: 256 steps / 64 per minibatch x 2 epochs; RLlib
    # also adds one bootstrap row per episode, which doubles the rows of these one-step episodes).
    stats, moved, steps = _one_iteration(cfg, data, path, target_kl=1e-12)
    assert stats["update_stopped_early"] == 1.0 and moved
    assert steps == 1
    stats_free, _, steps_free = _one_iteration(cfg, data, path, target_kl=0.0)
    assert stats_free["update_stopped_early"] == 0.0
    assert steps_free >= 8


def test_conjugate_gradient_solves_a_positive_definite_system():
    from memsel.rllib_models.learner import conjugate_gradient

    gen = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=6)  # exact in n steps (up to rounding)
    assert torch.allclose(a @ x, b, atol=1e-8)
    rough = conjugate_gradient(lambda v: a @ v, b, iters=1)  # one step: the steepest-descent point
    assert not torch.allclose(a @ rough, b, atol=1e-3)


def test_natural_update_is_refused_with_bad_settings():
    with pytest.raises(ConfigError, match="ppo.update"):
        load_config(sets=["ppo.update=trpo"])
    with pytest.raises(ConfigError, match="ppo.max_kl"):
        load_config(sets=["ppo.update=natural", "ppo.max_kl=0"])


def test_natural_update_stays_in_its_trust_region(pretrained_run, ray_session):
    cfg, data, path = pretrained_run
    # Classic TRPO: one step per train batch (one epoch, one minibatch of the whole batch).
    stats, moved, _ = _one_iteration(cfg, data, path, update="natural", max_kl=0.005, num_epochs=1,
                                     minibatch_size=256, use_kl_loss=False)
    assert moved
    for key in ("natural_accepted", "natural_step_kl", "natural_improvement", "natural_backtracks", "distill_kl"):
        assert key in stats, key
    assert stats["natural_accepted"] == 1.0
    assert 0.0 < stats["natural_step_kl"] <= 0.005
    assert stats["natural_improvement"] > 0.0


def test_natural_update_leaves_the_selector_to_the_trust_region_not_to_adam(pretrained_run, ray_session):
    from memsel.rl import build_ppo_config

    cfg, data, path = pretrained_run
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, update="natural", max_kl=0.005))
    algo = build_ppo_config(cfg, data.files["train_npz"], data.spec, path, teacher_return=0.9).build_algo()
    try:
        learner = algo.learner_group._learner
        algo.train()
        module = learner.module["default_policy"]
        adam = learner.get_optimizer()
        stepped = {id(p) for p, st in adam.state.items() if st}
    finally:
        algo.stop()
    assert all(id(p) in stepped for p in module.value_head.parameters())
    assert not any(id(p) in stepped for p in module.selector.parameters())
