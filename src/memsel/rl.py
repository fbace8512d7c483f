"""Converters from memsel's config to RLlib objects: one place builds the PPOConfig."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from memsel.config import Config
from memsel.data.encode import DataSpec
from memsel.env import MemorySelectionEnv
from memsel.rllib_models import DistillPPOTorchLearner, SelectorRLModule


def build_ppo_config(cfg: Config, train_npz: str, spec: DataSpec, pretrained_path: str | Path | None) -> PPOConfig:
    """The PPOConfig for fine-tuning: env over ``train_npz``, our RLModule and distillation learner.

    With ``pretrained_path`` the module starts from that selector and distils toward it; without
    it (or with ``ppo.use_pretrained = false``) PPO starts from scratch and has no teacher.
    """
    p = cfg.ppo
    start = str(pretrained_path) if (pretrained_path and p.use_pretrained) else None
    model_config = {"selector": asdict(cfg.selector), "spec": asdict(spec), "pretrained_path": start}
    return (
        PPOConfig()
        .environment(MemorySelectionEnv, env_config={"data_path": str(train_npz), "seed": cfg.seed,
                                                     "vocab_size": spec.vocab_size})
        .framework("torch")
        .env_runners(num_env_runners=p.num_env_runners, num_envs_per_env_runner=p.num_envs_per_env_runner,
                     num_cpus_per_env_runner=1)
        .learners(learner_class=DistillPPOTorchLearner,
                  learner_config_dict={"teacher_path": start, "distill_coeff": p.distill_coeff})
        .training(lr=p.lr, train_batch_size_per_learner=p.train_batch_size, minibatch_size=p.minibatch_size,
                  num_epochs=p.num_epochs, clip_param=p.clip_param, kl_coeff=p.kl_coeff, kl_target=p.kl_target,
                  entropy_coeff=p.entropy_coeff, vf_loss_coeff=p.vf_loss_coeff, grad_clip=p.grad_clip,
                  gamma=p.gamma, lambda_=p.lambda_)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=SelectorRLModule, model_config=model_config))
        .debugging(seed=cfg.seed)
    )
