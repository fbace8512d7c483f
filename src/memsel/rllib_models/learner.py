"""PPO learner with a knowledge-distillation term toward the pretrained (teacher) selector."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import Learner
from ray.rllib.utils.annotations import override

from memsel.network import Selector


def distillation_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(teacher || student) over the valid memory slots. (B,)"""
    valid = mask > 0
    t_logp = F.log_softmax(teacher_logits, dim=-1)
    s_logp = F.log_softmax(student_logits, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp)).masked_fill(~valid, 0.0)
    return kl.sum(-1)


class DistillPPOTorchLearner(PPOTorchLearner):
    """PPO loss + ``distill_coeff`` * KL(teacher || student).

    learner_config_dict: ``teacher_path`` (a selector file; none = no distillation) and
    ``distill_coeff``. Logs ``distill_kl`` and ``distill_coeff`` every update.
    """

    @override(Learner)
    def build(self) -> None:
        super().build()
        cfg = self.config.learner_config_dict or {}
        self._distill_coeff = float(cfg.get("distill_coeff", 0.0))
        self._teacher: Selector | None = None
        if cfg.get("teacher_path"):
            self._teacher = Selector.load(cfg["teacher_path"]).to(self._device).eval()
            for p in self._teacher.parameters():
                p.requires_grad_(False)

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        total = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch,
                                                fwd_out=fwd_out)
        if self._teacher is None:
            return total
        obs = batch[Columns.OBS]
        with torch.no_grad():
            teacher_logits = self._teacher(obs)
        kl = distillation_kl(teacher_logits, fwd_out[Columns.ACTION_DIST_INPUTS], obs["mask"])
        if Columns.LOSS_MASK in batch:
            loss_mask = batch[Columns.LOSS_MASK]
            mean_kl = kl[loss_mask].sum() / loss_mask.sum().clamp(min=1)
        else:
            mean_kl = kl.mean()
        self.metrics.log_value((module_id, "distill_kl"), mean_kl.item(), window=1)
        self.metrics.log_value((module_id, "distill_coeff"), self._distill_coeff, window=1)
        return total + self._distill_coeff * mean_kl
