"""Converters from memsel's config to RLlib objects: one place builds the PPOConfig."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from memsel.config import Config, PPOSettings
from memsel.data.encode import DataSpec
from memsel.env import MemorySelectionEnv, make_env_config
from memsel.devices import gpus_per_learner
from memsel.rllib_models import SelectorRLModule, learner_class


def reader_config(cfg: Config) -> dict | None:
    """The env's reader_config: the run's trained answer reader for ``env.reader: learned``."""
    if cfg.env.reward_mode != "answer" or cfg.env.reader != "learned":
        return None
    path = cfg.layout.reader
    if not path.is_file():
        raise FileNotFoundError(f"{path}: env.reader 'learned' needs the answer reader that pretraining trains "
                                "with pretrain.answer_weight > 0; run `memsel pretrain` first")
    return {"path": str(path)}


RLLIB_KEYS = {"lr": "lr", "train_batch_size": "train_batch_size_per_learner", "minibatch_size": "minibatch_size",
              "num_epochs": "num_epochs", "clip_param": "clip_param", "use_kl_loss": "use_kl_loss",
              "kl_coeff": "kl_coeff", "kl_target": "kl_target", "vf_loss_coeff": "vf_loss_coeff",
              "vf_clip": "vf_clip_param", "grad_clip": "grad_clip", "gamma": "gamma", "lambda_": "lambda"}
"""ppo fields that RLlib's own PPOConfig reads -> the key it keeps them under (``training(...)``)."""


def learner_settings(p: PPOSettings) -> dict:
    """The learner's copy of the ppo settings (a trial's sampled values are already in ``p``, so RLlib's keys
    and this copy hold the same value)."""
    return asdict(p)


def build_ppo_config(cfg: Config, train_npz: str, spec: DataSpec, pretrained_path: str | Path | None,
                     teacher_return: float | None = None) -> PPOConfig:
    """The PPOConfig for fine-tuning: env over ``train_npz``, our RLModule and distillation learner (the
    natural-update learner for ``ppo.update: natural``), on ``cfg.device``.

    With ``pretrained_path`` the module starts from that selector and distils toward it; without
    it (or with ``ppo.use_pretrained = false``) PPO starts from scratch and has no teacher.
    ``teacher_return`` (the teacher's expected episode return) drives the adaptive distillation weight.
    """
    p = cfg.ppo
    # The teacher travels as bytes: a module or learner rebuilt from a checkpoint on any node finds it.
    start = Path(pretrained_path).read_bytes() if (pretrained_path and p.use_pretrained) else None
    model_config = {"selector": asdict(cfg.selector), "spec": asdict(spec), "pretrained": start,
                    "orthogonal_init": p.orthogonal_init}
    # RLlib takes an entropy schedule as [[env_step, value], ...] and interpolates linearly.
    entropy = p.entropy_coeff if not (isinstance(p.entropy_coeff_final, (int, float)) and p.entropy_coeff_final >= 0) \
        else [[0, p.entropy_coeff], [p.entropy_decay_steps, p.entropy_coeff_final]]
    return (
        PPOConfig()
        .environment(MemorySelectionEnv, env_config=make_env_config(cfg.env, data_path=str(train_npz), seed=cfg.seed,
                                                                    vocab_size=spec.vocab_size,
                                                                    reader_config=reader_config(cfg)))
        .framework("torch")
        .env_runners(num_env_runners=p.num_env_runners, num_envs_per_env_runner=p.num_envs_per_env_runner,
                     num_cpus_per_env_runner=1)
        # The learner rebuilds (and validates) PPOSettings from this dict: every PPO setting in one place.
        .learners(learner_class=learner_class(p.update), num_gpus_per_learner=gpus_per_learner(cfg.device),
                  learner_config_dict={"ppo": learner_settings(p), "teacher": start, "teacher_return": teacher_return})
        .training(entropy_coeff=entropy, **{"lambda_" if key == "lambda" else key: getattr(p, name)
                                            for name, key in RLLIB_KEYS.items()})
        .rl_module(rl_module_spec=RLModuleSpec(module_class=SelectorRLModule, model_config=model_config))
        .debugging(seed=cfg.seed)
    )
