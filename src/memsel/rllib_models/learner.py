"""PPO learner with knowledge distillation toward the pretrained (teacher) selector and the PPO
stabilisers memsel exposes as config switches.

The loss is PPO's clipped surrogate written out here (rather than ``super()``'s) because dual-clip
and per-minibatch advantage normalisation change the surrogate itself:

    loss = -surrogate + vf_loss_coeff * vf_loss - entropy_coeff * entropy
           + kl_coeff * KL(old || new)            (adaptive KL penalty, RLlib's update of kl_coeff)
           + distill_coeff(t) * KL(teacher || new) (distillation; constant, linear or adaptive weight)

Switches (learner_config_dict, filled from memsel's PPOSettings by memsel.rl):
- ``teacher_path``: a selector file; None = no distillation (PPO from scratch).
- ``distill_coeff``, ``distill_schedule`` ('constant' | 'linear' | 'adaptive'), ``distill_final``,
  ``distill_decay_steps``: the weight starts at distill_coeff; 'linear' reaches distill_final after
  distill_decay_steps env steps; 'adaptive' (as QDagger) scales it by how far the student's return
  is below the teacher's, ``max(0, 1 - student / teacher)``, so it fades once the student is better.
- ``teacher_return``: the teacher's expected return (for 'adaptive').
- ``dual_clip``: > 1 bounds the surrogate of negative advantages below by dual_clip * A (Ye et al.).
- ``minibatch_advantage_norm``: re-standardise advantages per minibatch (RLlib's GAE connector
  already standardises them per train batch; that one is always on).
- ``target_kl``: > 0 stops the remaining minibatch updates of an iteration once the approximate
  KL to the sampling policy exceeds it (a hard trust region, as CleanRL's target_kl).
- ``update``: 'clip' (the above, one Adam step per minibatch) or 'natural', a TRPO-style update
  (Schulman et al. 2015): the policy loss, with the unclipped surrogate, moves the selector by a natural-
  gradient step, x = F^-1 g by conjugate gradient (``cg_iters``) on Fisher-vector products (double
  backprop of the KL, damped by ``cg_damping``), scaled so that the quadratic model of the KL equals
  ``max_kl``, then halved (up to ``line_search_steps`` times) until the loss falls and the measured KL
  stays within ``max_kl``; a step that finds neither is not taken. Adam trains the value head only.
  One minibatch per train batch and one epoch is classic TRPO; more take one such step each.
Logged per update: distill_kl, distill_coeff, approx_kl, clipfrac, update_stopped_early, plus
RLlib's own policy_loss, vf_loss, entropy, mean_kl_loss, curr_kl_coeff, vf_explained_var; with the
natural update also natural_accepted, natural_step_kl, natural_improvement, natural_backtracks.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY, Learner
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.torch_utils import explained_variance

from memsel.config import DISTILL_SCHEDULES, PPO_UPDATES
from memsel.network import Selector


def distillation_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(teacher || student) over the valid memory slots (also the natural update's KL(before ||
    after)). (B,)"""
    valid = mask > 0
    t_logp = F.log_softmax(teacher_logits, dim=-1)
    s_logp = F.log_softmax(student_logits, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp)).masked_fill(~valid, 0.0)
    return kl.sum(-1)


def distill_weight(schedule: str, coeff: float, final: float, decay_steps: int, env_steps: float,
                   student_return: float | None, teacher_return: float | None) -> float:
    """The distillation coefficient at ``env_steps`` under ``schedule`` (see module docstring)."""
    if schedule == "constant":
        return coeff
    if schedule == "linear":
        frac = min(1.0, env_steps / decay_steps) if decay_steps > 0 else 1.0
        return coeff + (final - coeff) * frac
    if schedule == "adaptive":
        if student_return is None or not teacher_return:
            return coeff
        return coeff * min(1.0, max(0.0, 1.0 - student_return / teacher_return))
    raise ValueError(f"distill_schedule: expected one of {list(DISTILL_SCHEDULES)}, got {schedule!r}")


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       tol: float = 1e-10) -> torch.Tensor:
    """x ~ A^-1 b for a symmetric positive definite A given as ``matvec`` (exact in dim(b) steps)."""
    x = torch.zeros_like(b)
    r = b.clone()
    d = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        ad = matvec(d)
        alpha = rr / (d @ ad)
        x = x + alpha * d
        r = r - alpha * ad
        rr_next = r @ r
        d = r + (rr_next / rr) * d
        rr = rr_next
    return x


def flat_grad(grads: tuple[torch.Tensor | None, ...], params: list[torch.Tensor]) -> torch.Tensor:
    """``torch.autograd.grad``'s output as one vector; a parameter the output does not reach counts 0."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


class DistillPPOTorchLearner(PPOTorchLearner):
    """PPO (clipped surrogate, adaptive KL, value loss, entropy) + distillation + stabilisers."""

    @override(Learner)
    def build(self) -> None:
        super().build()
        cfg = dict(self.config.learner_config_dict or {})
        self._opts = {
            "distill_coeff": float(cfg.get("distill_coeff", 0.0)),
            "distill_schedule": cfg.get("distill_schedule", "constant"),
            "distill_final": float(cfg.get("distill_final", 0.0)),
            "distill_decay_steps": int(cfg.get("distill_decay_steps", 0)),
            "teacher_return": cfg.get("teacher_return"),
            "dual_clip": float(cfg.get("dual_clip", 0.0)),
            "minibatch_advantage_norm": bool(cfg.get("minibatch_advantage_norm", False)),
            "target_kl": float(cfg.get("target_kl", 0.0)),
            "update": cfg.get("update", "clip"),
            "max_kl": float(cfg.get("max_kl", 0.01)),
            "cg_iters": int(cfg.get("cg_iters", 10)),
            "cg_damping": float(cfg.get("cg_damping", 0.1)),
            "line_search_steps": int(cfg.get("line_search_steps", 10)),
        }
        if self._opts["update"] not in PPO_UPDATES:
            raise ValueError(f"learner_config_dict['update']: expected one of {list(PPO_UPDATES)}, "
                             f"got {self._opts['update']!r}")
        if self._opts["distill_schedule"] not in DISTILL_SCHEDULES:
            raise ValueError(f"learner_config_dict['distill_schedule']: expected one of {list(DISTILL_SCHEDULES)}, "
                             f"got {self._opts['distill_schedule']!r}")
        self._teacher: Selector | None = None
        if cfg.get("teacher_path"):
            self._teacher = Selector.load(cfg["teacher_path"]).to(self._device).eval()
            for p in self._teacher.parameters():
                p.requires_grad_(False)
        self._env_steps = 0.0
        self._student_return: float | None = None  # EMA over updates, for the adaptive schedule
        self._stopped = False

    @override(Learner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._env_steps = float(timesteps.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0) or 0)
        self._stopped = False

    @override(TorchLearner)
    def apply_gradients(self, gradients_dict: Any) -> None:
        # After an early stop even zero gradients would move the weights (Adam's momentum): skip.
        if self._stopped:
            return
        # The natural update moves the selector itself; its parameters then have no gradient here.
        super().apply_gradients({k: g for k, g in gradients_dict.items() if g is not None})

    def _current_distill_coeff(self) -> float:
        o = self._opts
        return distill_weight(o["distill_schedule"], o["distill_coeff"], o["distill_final"],
                              o["distill_decay_steps"], self._env_steps, self._student_return,
                              o["teacher_return"])

    def _track_student_return(self, batch: dict[str, Any]) -> None:
        episodes = batch[Columns.TERMINATEDS].float().sum() if Columns.TERMINATEDS in batch else None
        if episodes is None or float(episodes) < 1:
            return
        ret = float(batch[Columns.REWARDS].float().sum() / episodes)
        prev = self._student_return
        self._student_return = ret if prev is None else 0.9 * prev + 0.1 * ret

    def _policy_loss(self, module_id: str, config: Any, batch: dict[str, Any], logits: torch.Tensor,
                     mean: Callable, loss_mask: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss terms that depend on the policy's ``logits``: surrogate (clipped unless the update is
        'natural'), entropy bonus, KL penalty and distillation; with their stats."""
        module = self.module[module_id].unwrapped()
        o = self._opts
        curr = module.get_train_action_dist_cls().from_logits(logits)
        prev = module.get_exploration_action_dist_cls().from_logits(batch[Columns.ACTION_DIST_INPUTS])
        log_ratio = curr.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP]
        ratio = torch.exp(log_ratio)

        adv = batch[Postprocessing.ADVANTAGES]
        if o["minibatch_advantage_norm"]:
            valid_adv = adv[loss_mask] if loss_mask is not None else adv
            adv = (adv - valid_adv.mean()) / valid_adv.std().clamp(min=1e-4)
        if o["update"] == "natural":  # TRPO's surrogate: the trust region bounds the step, not a clip
            surrogate = adv * ratio
        else:
            surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param))
        if o["dual_clip"] > 1.0:
            # For A < 0 the clipped objective is unbounded below as the ratio grows; bound it.
            surrogate = torch.where(adv < 0, torch.max(surrogate, o["dual_clip"] * adv), surrogate)

        mean_kl = mean(prev.kl(curr)) if config.use_kl_loss else torch.tensor(0.0, device=ratio.device)
        entropy = curr.entropy()
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total = mean(-surrogate - entropy_coeff * entropy)
        if config.use_kl_loss:
            total = total + self.curr_kl_coeffs_per_module[module_id] * mean_kl
        with torch.no_grad():
            approx_kl = mean((ratio - 1) - log_ratio)  # CleanRL's low-variance estimator
            clipfrac = mean(((ratio - 1.0).abs() > config.clip_param).float())
        stats = {POLICY_LOSS_KEY: -mean(surrogate), ENTROPY_KEY: mean(entropy), LEARNER_RESULTS_KL_KEY: mean_kl,
                 "approx_kl": approx_kl, "clipfrac": clipfrac}

        if self._teacher is not None:
            obs = batch[Columns.OBS]
            with torch.no_grad():
                teacher_logits = self._teacher(obs)
            mean_distill = mean(distillation_kl(teacher_logits, logits, obs["mask"]))
            coeff = self._current_distill_coeff()
            total = total + coeff * mean_distill
            stats.update({"distill_kl": mean_distill, "distill_coeff": coeff})
        return total, stats

    def _natural_step(self, module_id: str, config: Any, batch: dict[str, Any], logits: torch.Tensor,
                      loss: torch.Tensor, mean: Callable, loss_mask: torch.Tensor | None) -> dict[str, float]:
        """One TRPO step of the selector's weights on ``loss`` (see the module docstring). In place."""
        o = self._opts
        module = self.module[module_id].unwrapped()
        params = [p for p in module.selector.parameters() if p.requires_grad]
        g = flat_grad(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)
        old_logits = logits.detach()
        valid = batch[Columns.OBS]["mask"]
        kl = mean(distillation_kl(old_logits, logits, valid))  # KL(before || after): 0 here; its Hessian is F
        flat_kl_grad = flat_grad(torch.autograd.grad(kl, params, create_graph=True, allow_unused=True), params)

        def fisher_vector(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(flat_kl_grad @ v, params, retain_graph=True, allow_unused=True)
            return flat_grad(hv, params) + o["cg_damping"] * v

        direction = conjugate_gradient(fisher_vector, -g, o["cg_iters"])
        curvature = float(direction @ fisher_vector(direction))
        out = {"natural_accepted": 0.0, "natural_step_kl": 0.0, "natural_improvement": 0.0,
               "natural_backtracks": float(o["line_search_steps"])}
        if not curvature > 0:
            return out
        step = direction * (2 * o["max_kl"] / curvature) ** 0.5
        start = [p.detach().clone() for p in params]
        before = float(loss.detach())
        with torch.no_grad():
            for tries in range(o["line_search_steps"]):
                frac = 0.5 ** tries
                offset = 0
                for p, p0 in zip(params, start):
                    n = p.numel()
                    p.copy_(p0 + frac * step[offset:offset + n].view_as(p))
                    offset += n
                new_logits = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
                new_loss, _ = self._policy_loss(module_id, config, batch, new_logits, mean, loss_mask)
                step_kl = float(mean(distillation_kl(old_logits, new_logits, valid)))
                if float(new_loss) < before and step_kl <= o["max_kl"]:
                    return {"natural_accepted": 1.0, "natural_step_kl": step_kl,
                            "natural_improvement": before - float(new_loss), "natural_backtracks": float(tries)}
            for p, p0 in zip(params, start):  # nothing found: keep the weights as they were
                p.copy_(p0)
        return out

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        o = self._opts
        if Columns.LOSS_MASK in batch:
            loss_mask = batch[Columns.LOSS_MASK]
            num_valid = loss_mask.sum().clamp(min=1)

            def mean(x: torch.Tensor) -> torch.Tensor:
                return x[loss_mask].sum() / num_valid
        else:
            loss_mask = None
            mean = torch.mean

        if self._teacher is not None:
            self._track_student_return(batch)
        logits = fwd_out[Columns.ACTION_DIST_INPUTS]
        policy_loss, stats = self._policy_loss(module_id, config, batch, logits, mean, loss_mask)

        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        vf_loss = torch.pow(values - batch[Postprocessing.VALUE_TARGETS], 2.0)
        vf_loss_clipped = torch.clamp(vf_loss, 0, config.vf_clip_param)
        value_loss = config.vf_loss_coeff * mean(vf_loss_clipped)
        stats.update({VF_LOSS_KEY: mean(vf_loss_clipped), LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: mean(vf_loss),
                      LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(batch[Postprocessing.VALUE_TARGETS],
                                                                               values)})
        if self._student_return is not None:
            stats["student_return_ema"] = self._student_return

        if o["target_kl"] > 0 and not self._stopped and float(stats["approx_kl"]) > o["target_kl"]:
            # This minibatch already moved the policy too far: skip it and the rest of the update.
            self._stopped = True
        stats["update_stopped_early"] = float(self._stopped)
        if o["update"] == "natural":
            if not self._stopped:
                stats.update(self._natural_step(module_id, config, batch, logits, policy_loss, mean, loss_mask))
            total = value_loss  # the selector has moved already; Adam trains the value head
        else:
            total = policy_loss + value_loss
        self.metrics.log_dict({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in stats.items()},
                              key=module_id, window=1)
        return total
