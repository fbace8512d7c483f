"""Everything a PPO trial needs to continue is in its checkpoint: PBT's exploit and a resumed sweep restore
an Algorithm with ``restore_from_path``, and the trial must continue its curves, not restart them.

RLlib's Learner checkpoint holds the module weights, Adam's state and its metrics; it does not hold PPO's
adaptive KL coefficient (``curr_kl_coeffs_per_module``), nor memsel's own learner state (the student-return
EMA behind the adaptive distillation weight, the env-step count, the teacher's return). memsel's learner
adds them as a ``memsel`` entry of its state.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from memsel.config import load_config
from memsel.env import MemorySelectionEnv
from memsel.network import Selector
from memsel.rllib_models.learner import MEMSEL_STATE, DistillPPOTorchLearner, NaturalPPOTorchLearner

MID = "default_policy"
SAVED_AT = 2
"""Iterations before the checkpoint."""
AFTER = 2
"""Iterations recorded after it."""
KL_COEFF = 0.2
LEARNER_STATE_FILE = ("learner_group", "learner", "state.pkl")
"""Where an Algorithm checkpoint keeps the (local) learner's non-module state."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny generated task-1 data, a teacher selector file and a PPOConfig with the adaptive distillation
    weight and the KL loss on. The teacher is a randomly initialised Selector saved as memsel saves a
    pretrained one: the state under test does not depend on the teacher's quality, and pretraining would
    cost seconds. kl_target is so large that RLlib halves the KL coefficient after every iteration, so the
    coefficient's curve is known in advance: kl_coeff * 0.5 ** iterations."""
    from memsel.data.prepare import prepare_data
    from memsel.rl import build_ppo_config

    run = tmp_path_factory.mktemp("learner_state")
    cfg = load_config(None, [f"run_dir={run}", "data.train_stories=20", "data.test_stories=5", "device=cpu",
                             "ppo.train_batch_size=64", "ppo.minibatch_size=32", "ppo.num_epochs=1",
                             "ppo.num_env_runners=0"])
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, distill_schedule="adaptive", distill_coeff=0.5,
                                                           use_kl_loss=True, kl_coeff=KL_COEFF, kl_target=1000.0))
    data = prepare_data(cfg)
    torch.manual_seed(0)
    teacher = Selector(cfg.selector, data.spec).save(run / "teacher.pt")
    config = build_ppo_config(cfg, data.files["train_npz"], data.spec, teacher, teacher_return=0.9)
    return cfg, data, config, run


def _learner(algo) -> DistillPPOTorchLearner:
    return algo.learner_group._learner  # the local learner: num_learners = 0


def _same_sampling(algo) -> None:
    """Restart what sampling draws from: the env (rebuilt, reseeded on its next reset) and the driver's
    global RNGs (actions, minibatch shuffles). Applied to the original after its save and to the restored
    copy, it lets both continue from identical random draws, so that they can be compared exactly."""
    algo.env_runner.make_env()
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)


def _curve(algo, n: int) -> list[dict[str, float]]:
    """Per iteration: the distillation weight, the KL coefficient and what they are computed from."""
    out = []
    for _ in range(n):
        result = algo.train()
        stats = result["learners"][MID]
        out.append({"distill_coeff": float(stats["distill_coeff"]), "curr_kl_coeff": float(stats["curr_kl_coeff"]),
                    "student_return_ema": float(stats["student_return_ema"]),
                    "total_loss": float(stats["total_loss"]),
                    "episode_return_mean": float(result["env_runners"]["episode_return_mean"])})
    return out


def _optimizer_state(learner) -> dict:
    return copy.deepcopy(learner.get_optimizer().state_dict())


@pytest.fixture(scope="module")
def original(setup, ray_session):
    """An algorithm trained SAVED_AT iterations, checkpointed, then trained AFTER more: its saved states
    and its curve after the save."""
    _, _, config, run = setup
    algo = config.build_algo()
    try:
        _curve(algo, SAVED_AT)
        learner = _learner(algo)
        saved = {"memsel": learner.get_state(components=MEMSEL_STATE)[MEMSEL_STATE],
                 "optimizer": _optimizer_state(learner),
                 "kl_coeff": float(learner.curr_kl_coeffs_per_module[MID])}
        algo.save_to_path(str(run / "ckpt"))
        _same_sampling(algo)
        after = _curve(algo, AFTER)
    finally:
        algo.stop()
    return run / "ckpt", saved, after


def _assert_same_optimizer(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys() and a["state"]
    for key, per_param in a["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(torch.as_tensor(per_param[name]), torch.as_tensor(b["state"][key][name])), (key, name)


@pytest.mark.slow
def test_restored_algorithm_continues_the_distillation_and_kl_curves(setup, original):
    """Restore into a fresh algorithm: memsel's learner state, Adam's state and the KL coefficient are the
    saved ones, and the iterations after the restore report what the original reported after its save.

    Sampled episodes are not part of any checkpoint (the env's and the driver's RNG states are not saved),
    so both runs restart sampling from the same seeds after the save/restore (``_same_sampling``); given the
    same draws, everything the learner computes is deterministic on the CPU and compared exactly."""
    _, _, config, _ = setup
    ckpt, saved, after = original
    assert saved["kl_coeff"] == pytest.approx(KL_COEFF * 0.5 ** SAVED_AT)
    assert saved["memsel"]["student_return"] is not None  # the adaptive weight has something to remember
    algo = config.build_algo()
    try:
        algo.restore_from_path(str(ckpt))
        learner = _learner(algo)
        assert learner.get_state(components=MEMSEL_STATE)[MEMSEL_STATE] == saved["memsel"]
        _assert_same_optimizer(_optimizer_state(learner), saved["optimizer"])
        assert float(learner.curr_kl_coeffs_per_module[MID]) == saved["kl_coeff"]
        _same_sampling(algo)
        restored = _curve(algo, AFTER)
    finally:
        algo.stop()
    assert restored == after
    assert after[0]["curr_kl_coeff"] == pytest.approx(KL_COEFF * 0.5 ** (SAVED_AT + 1))


@pytest.mark.slow
def test_a_fresh_algorithm_restarts_the_curves(setup, original):
    """Without the restore the same point of the curve differs: the test above can fail."""
    _, _, config, _ = setup
    _, _, after = original
    algo = config.build_algo()
    try:
        _same_sampling(algo)
        fresh = _curve(algo, 1)[0]
    finally:
        algo.stop()
    assert fresh["curr_kl_coeff"] == pytest.approx(KL_COEFF * 0.5)
    assert fresh["curr_kl_coeff"] != after[0]["curr_kl_coeff"]
    assert fresh["distill_coeff"] != after[0]["distill_coeff"]


@pytest.mark.slow
def test_a_checkpoint_without_memsel_state_still_restores(setup, original, tmp_path):
    """A checkpoint written before the learner saved its own state (no ``memsel`` entry) restores RLlib's
    state; memsel's starts over as in a new learner."""
    _, _, config, _ = setup
    ckpt, saved, _ = original
    old = shutil.copytree(ckpt, tmp_path / "old")
    state_file = old.joinpath(*LEARNER_STATE_FILE)
    state = pickle.loads(state_file.read_bytes())
    del state[MEMSEL_STATE]
    state_file.write_bytes(pickle.dumps(state))
    algo = config.build_algo()
    try:
        algo.restore_from_path(str(old))
        learner = _learner(algo)
        _assert_same_optimizer(_optimizer_state(learner), saved["optimizer"])
        assert learner._student_return is None
        assert float(learner.curr_kl_coeffs_per_module[MID]) == pytest.approx(KL_COEFF)
        assert "distill_coeff" in _curve(algo, 1)[0]
    finally:
        algo.stop()


@pytest.mark.slow
def test_a_restore_keeps_the_learners_own_learning_rate(setup, original):
    """PBT restores a checkpoint into a trial whose lr it mutated: the optimiser's moments come from the
    checkpoint, its learning rate from the restoring learner's config (from the first update on)."""
    _, _, config, _ = setup
    ckpt, saved, _ = original
    saved_lr = saved["optimizer"]["param_groups"][0]["lr"]
    mutated = config.copy(copy_frozen=False).training(lr=saved_lr * 3)
    algo = mutated.build_algo()
    try:
        algo.restore_from_path(str(ckpt))
        restored = _optimizer_state(_learner(algo))
        _assert_same_optimizer(restored, saved["optimizer"])
        assert [g["lr"] for g in restored["param_groups"]] == pytest.approx([saved_lr * 3] * len(restored["param_groups"]))
    finally:
        algo.stop()


@pytest.mark.parametrize("learner_class", [DistillPPOTorchLearner, NaturalPPOTorchLearner])
def test_memsel_state_round_trips_and_stays_out_of_weight_syncs(setup, learner_class):
    """A learner's ``memsel`` entry goes through get_state/set_state (no Algorithm, no Ray); a weight sync,
    which asks for the module only, does not carry it."""
    cfg, data, config, _ = setup
    update = "natural" if learner_class is NaturalPPOTorchLearner else "clip"
    config = config.copy(copy_frozen=False).learners(
        learner_class=learner_class,
        learner_config_dict={**config.learner_config_dict,
                             "ppo": {**config.learner_config_dict["ppo"], "update": update}})
    source = config.build_learner(env=MemorySelectionEnv(config.env_config))
    source._student_return, source._env_steps = 0.25, 640.0
    source.curr_kl_coeffs_per_module[MID].data.fill_(0.015625)
    state = source.get_state()
    assert state[MEMSEL_STATE] == {"env_steps": 640.0, "student_return": 0.25, "teacher_return": 0.9,
                                   "curr_kl_coeffs": {MID: 0.015625}}
    assert MEMSEL_STATE not in source.get_state(components="rl_module")
    assert MEMSEL_STATE not in source.get_state(not_components=MEMSEL_STATE)
    target = config.build_learner(env=MemorySelectionEnv(config.env_config))
    target.set_state(state)
    assert (target._student_return, target._env_steps) == (0.25, 640.0)
    assert float(target.curr_kl_coeffs_per_module[MID]) == 0.015625
    assert target.distill_coeff() == source.distill_coeff()


def test_the_configs_teacher_return_wins_over_the_checkpoints(setup, caplog):
    """The teacher is loaded from the config, so its return is the config's; a checkpoint's fills in only
    where the config has none. A partial entry leaves the other values alone."""
    _, _, config, _ = setup
    learner = config.build_learner(env=MemorySelectionEnv(config.env_config))
    learner._student_return = 0.5
    learner.set_memsel_state({"teacher_return": 0.7})
    assert learner.teacher_return == 0.9 and learner._student_return == 0.5
    assert "differs from the config's" in caplog.text
    learner.teacher_return = None
    learner.set_memsel_state({"teacher_return": 0.7})
    assert learner.teacher_return == 0.7
