"""PPO learners: RLlib's PPO loss plus distillation toward the pretrained (teacher) selector, the PPO
stabilisers memsel exposes as config switches, and a TRPO-style natural update.

:class:`DistillPPOTorchLearner` (``ppo.update: clip``) is RLlib's ``PPOTorchLearner`` with one added term,
as RLlib's ``custom_loss_fn_learner`` example adds its own:

    loss = PPO's loss (clipped surrogate, value loss, entropy bonus, adaptive KL penalty; RLlib's own)
           + distill_coeff(t) * KL(teacher || student)   (constant, linear or adaptive weight)

What RLlib's PPO lacks stays as small named pieces, each active only when its switch is on:
- ``minibatch_advantage_norm``: advantages re-standardised per minibatch (RLlib's GAE connector already
  standardises them per train batch) before RLlib's loss reads them (:func:`with_minibatch_advantages`).
- ``dual_clip`` > 1: :meth:`DistillPPOTorchLearner.surrogate` bounds the surrogate of negative advantages
  below by dual_clip * A (Ye et al. 2020); the loss swaps RLlib's surrogate term for it.
- ``target_kl`` > 0: once a minibatch's approximate KL to the sampling policy exceeds it, that minibatch's
  and the rest of the iteration's optimiser steps are skipped (CleanRL's target_kl; ``apply_gradients``).

:class:`NaturalPPOTorchLearner` (``ppo.update: natural``) moves the selector by a TRPO step (Schulman et al.
2015) in its update step, not in the loss: x = F^-1 g by conjugate gradient (``cg_iters``) on Fisher-vector
products (double backprop of the KL, damped by ``cg_damping``) for the policy loss with the unclipped
surrogate, scaled so that the quadratic model of the KL equals ``max_kl``, then halved (up to
``line_search_steps`` times) until the loss falls and the measured KL stays within ``max_kl``; a step
that finds neither is not taken. Adam trains the value head only. One minibatch per train batch and
one epoch is classic TRPO; more take one such step each.

Settings: ``learner_config_dict`` holds ``ppo`` (``dataclasses.asdict`` of memsel's PPOSettings, rebuilt
and validated here; memsel.rl fills it), ``teacher`` (a selector file's contents; ``teacher_path``, a
file, in older configs; None = no distillation) and ``teacher_return`` (the teacher's expected return, for the 'adaptive' distillation weight). RLlib's own
hyperparameters (clip_param, kl_coeff, ...) are read from the algorithm config, as RLlib's loss reads them.

Checkpoints: RLlib's Learner state holds the module weights, the optimiser's state and its metrics, not PPO's
adaptive KL coefficient nor this learner's own state; both travel in a ``memsel`` entry of the learner's state
(:data:`MEMSEL_STATE`, :meth:`DistillPPOTorchLearner.memsel_state`), so that ``Algorithm.restore_from_path``
(Tune's PBT exploit, a resumed sweep) continues the KL and distillation-weight curves instead of restarting
them. A checkpoint without the entry (written before it existed) restores, and those values start over.

Logged per update: RLlib's policy_loss, vf_loss, entropy, mean_kl_loss, curr_kl_coeff, vf_explained_var,
plus approx_kl, clipfrac, update_stopped_early, and with a teacher distill_kl, distill_coeff,
student_return_ema; with the natural update also natural_accepted, natural_step_kl, natural_improvement,
natural_backtracks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
from ray.rllib.utils.typing import StateDict

from memsel.config import DISTILL_SCHEDULES, PPO_UPDATES, PPOSettings
from memsel.network import Selector

Mean = Callable[[torch.Tensor], torch.Tensor]

logger = logging.getLogger(__name__)

MEMSEL_STATE = "memsel"
"""The learner-state entry (a Checkpointable component name) that holds :meth:`DistillPPOTorchLearner.memsel_state`."""


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


def masked_mean(batch: dict[str, Any]) -> Mean:
    """The mean over the rows a loss counts: RLlib's LOSS_MASK leaves out the bootstrap rows it adds."""
    if Columns.LOSS_MASK not in batch:
        return torch.mean
    loss_mask = batch[Columns.LOSS_MASK]
    num_valid = loss_mask.sum().clamp(min=1)
    return lambda x: x[loss_mask].sum() / num_valid


def with_minibatch_advantages(batch: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``batch`` whose advantages are standardised over this minibatch's counted rows."""
    adv = batch[Postprocessing.ADVANTAGES]
    valid = adv[batch[Columns.LOSS_MASK]] if Columns.LOSS_MASK in batch else adv
    return {**batch, Postprocessing.ADVANTAGES: (adv - valid.mean()) / valid.std().clamp(min=1e-4)}


def clipped_surrogate(adv: torch.Tensor, ratio: torch.Tensor, clip_param: float) -> torch.Tensor:
    """PPO's clipped surrogate per sample, as RLlib's loss computes it. (B,)"""
    return torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip_param, 1 + clip_param))


def _floats(stats: dict[str, Any]) -> dict[str, float]:
    """Stats as plain floats: logged values must not hold the graph."""
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in stats.items()}


class DistillPPOTorchLearner(PPOTorchLearner):
    """RLlib's PPO loss + distillation toward the teacher + the stabiliser switches (module docstring)."""

    ppo_update = "clip"
    """The ``ppo.update`` value this learner implements (``update`` itself is RLlib's method)."""

    @override(Learner)
    def build(self) -> None:
        super().build()
        cfg = dict(self.config.learner_config_dict or {})
        if "ppo" not in cfg:
            raise ValueError("learner_config_dict['ppo']: expected dataclasses.asdict(PPOSettings) (memsel.rl "
                             "builds it)")
        self.settings = PPOSettings(**cfg["ppo"])
        self.settings.validate()
        if self.settings.update != self.ppo_update:
            raise ValueError(f"ppo.update {self.settings.update!r} needs {learner_class(self.settings.update).__name__}"
                             f", not {type(self).__name__}")
        self.teacher_return: float | None = cfg.get("teacher_return")
        self._teacher: Selector | None = None
        teacher = cfg.get("teacher") or cfg.get("teacher_path")  # the file's contents (older configs: its path)
        if teacher:
            self._teacher = Selector.load(teacher).to(self._device).eval()
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
        # The target-KL stop: even zero gradients would move the weights (Adam's momentum), so skip the step.
        if self._stopped:
            return
        # A parameter no loss reaches (the natural update's selector) has no gradient: Adam leaves it alone.
        super().apply_gradients({k: g for k, g in gradients_dict.items() if g is not None})

    @override(Learner)
    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs) -> StateDict:
        """RLlib's learner state plus, unless ``components``/``not_components`` leave it out, the
        :data:`MEMSEL_STATE` entry."""
        state = super().get_state(components, not_components=not_components, **kwargs)
        # Left out where the caller asks for other components only (a weight sync asks for "rl_module").
        if self._check_component(MEMSEL_STATE, components, not_components):
            state[MEMSEL_STATE] = self.memsel_state()
        return state

    @override(Learner)
    def set_state(self, state: StateDict) -> None:
        """RLlib's set_state, then the :data:`MEMSEL_STATE` entry where ``state`` has one (a weight sync's
        state and a checkpoint older than the entry have none)."""
        super().set_state(state)
        if MEMSEL_STATE in state:
            self.set_memsel_state(state[MEMSEL_STATE])
        # A restored optimiser brings the learning rate it was saved with, and RLlib resets it from this
        # learner's schedule only after the next update: this learner's own lr (its config's, which PBT
        # may have mutated) applies from the first update on.
        for optimizer, schedule in self._optimizer_lr_schedules.items():
            self._set_optimizer_lr(optimizer, lr=schedule.get_current_value())

    def memsel_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond RLlib's own learner state, as plain floats (pickle and msgpack):
        ``env_steps``, ``student_return`` (the EMA behind the adaptive distillation weight; None before the
        first finished episode), ``teacher_return`` and ``curr_kl_coeffs`` (module id -> PPO's adaptive KL
        coefficient, which RLlib's PPO learner does not save)."""
        return {"env_steps": self._env_steps, "student_return": self._student_return,
                "teacher_return": self.teacher_return,
                "curr_kl_coeffs": {mid: float(c) for mid, c in self.curr_kl_coeffs_per_module.items()}}

    def set_memsel_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`memsel_state`'s output; a missing key keeps the current value. The teacher's return
        comes from this learner's config when it has one (the teacher itself is loaded from the config); the
        saved one fills in when it has none."""
        self._env_steps = float(state.get("env_steps", self._env_steps))
        self._student_return = state.get("student_return", self._student_return)
        saved_teacher = state.get("teacher_return")
        if self.teacher_return is None:
            self.teacher_return = saved_teacher
        elif saved_teacher is not None and saved_teacher != self.teacher_return:
            logger.warning("teacher_return: the checkpoint's %s differs from the config's %s; keeping the config's",
                           saved_teacher, self.teacher_return)
        for module_id, coeff in state.get("curr_kl_coeffs", {}).items():
            if module_id in self.module:  # a module this learner no longer has: nothing to set
                self.curr_kl_coeffs_per_module[module_id].data.fill_(float(coeff))

    def distill_coeff(self) -> float:
        """The distillation weight now (its schedule at the current env step)."""
        s = self.settings
        return distill_weight(s.distill_schedule, s.distill_coeff, s.distill_final, s.distill_decay_steps,
                              self._env_steps, self._student_return, self.teacher_return)

    def surrogate(self, config: Any, adv: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """The per-sample surrogate objective the policy maximises: PPO's clipped one, dual-clipped when
        ``dual_clip`` > 1 (for A < 0 the clipped objective is unbounded below as the ratio grows). (B,)"""
        return self._dual_clip(clipped_surrogate(adv, ratio, config.clip_param), adv)

    def _dual_clip(self, surrogate: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        c = self.settings.dual_clip
        return torch.where(adv < 0, torch.max(surrogate, c * adv), surrogate) if c > 1 else surrogate

    def _track_student_return(self, batch: dict[str, Any]) -> None:
        episodes = batch[Columns.TERMINATEDS].float().sum() if Columns.TERMINATEDS in batch else None
        if episodes is None or float(episodes) < 1:
            return
        ret = float(batch[Columns.REWARDS].float().sum() / episodes)
        prev = self._student_return
        self._student_return = ret if prev is None else 0.9 * prev + 0.1 * ret

    def _log_ratio(self, module_id: str, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
        """log(pi_new / pi_old) of the sampled actions. (B,)"""
        dist = self.module[module_id].unwrapped().get_train_action_dist_cls().from_logits(logits)
        return dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP]

    def _ratio_stats(self, config: Any, log_ratio: torch.Tensor, mean: Mean) -> dict[str, Any]:
        with torch.no_grad():
            ratio = torch.exp(log_ratio)
            return {"approx_kl": mean((ratio - 1) - log_ratio),  # CleanRL's low-variance estimator
                    "clipfrac": mean(((ratio - 1.0).abs() > config.clip_param).float())}

    def _distill_term(self, batch: dict[str, Any], logits: torch.Tensor, mean: Mean,
                      stats: dict[str, Any]) -> torch.Tensor | float:
        """distill_coeff * mean KL(teacher || student) (0 without a teacher); adds its stats to ``stats``."""
        if self._teacher is None:
            return 0.0
        obs = batch[Columns.OBS]
        with torch.no_grad():
            teacher_logits = self._teacher(obs)
        mean_distill = mean(distillation_kl(teacher_logits, logits, obs["mask"]))
        coeff = self.distill_coeff()
        stats.update({"distill_kl": mean_distill, "distill_coeff": coeff})
        return coeff * mean_distill

    def _prepare(self, batch: dict[str, Any]) -> tuple[Mean, dict[str, Any]]:
        """What every update does to a minibatch first: track the student's return (for the adaptive
        distillation weight), take its masked mean, re-standardise its advantages if asked."""
        if self._teacher is not None:
            self._track_student_return(batch)
        mean = masked_mean(batch)
        if self.settings.minibatch_advantage_norm:
            batch = with_minibatch_advantages(batch)
        return mean, batch

    def _finish(self, module_id: str, stats: dict[str, Any]) -> None:
        """The target-KL stop and the logging every update shares."""
        target = self.settings.target_kl
        if target > 0 and not self._stopped and float(stats["approx_kl"]) > target:
            # This minibatch already moved the policy too far: skip it and the rest of the update.
            self._stopped = True
        stats["update_stopped_early"] = float(self._stopped)
        if self._student_return is not None:
            stats["student_return_ema"] = self._student_return
        self.metrics.log_dict(_floats(stats), key=module_id, window=1)

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        mean, batch = self._prepare(batch)
        total = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        logits = fwd_out[Columns.ACTION_DIST_INPUTS]
        log_ratio = self._log_ratio(module_id, batch, logits)
        stats = self._ratio_stats(config, log_ratio, mean)
        if self.settings.dual_clip > 1:
            adv, ratio = batch[Postprocessing.ADVANTAGES], torch.exp(log_ratio)
            ours = self.surrogate(config, adv, ratio)
            # RLlib's loss holds -mean(clipped surrogate): swap that term for ours.
            total = total + mean(clipped_surrogate(adv, ratio, config.clip_param) - ours)
            stats[POLICY_LOSS_KEY] = -mean(ours)
        total = total + self._distill_term(batch, logits, mean, stats)
        self._finish(module_id, stats)
        return total


@dataclass
class _NaturalInputs:
    """What the natural step of one module needs from its loss: kept from the loss to the update step."""

    config: Any
    batch: dict[str, Any]
    logits: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    mean: Mean


class NaturalPPOTorchLearner(DistillPPOTorchLearner):
    """The TRPO-style natural update (``ppo.update: natural``; module docstring). The loss is computed as
    usual; ``apply_gradients`` moves the selector by one trust-region step and Adam the value head."""

    ppo_update = "natural"

    @override(DistillPPOTorchLearner)
    def build(self) -> None:
        super().build()
        self._natural: dict[str, _NaturalInputs] = {}

    @override(DistillPPOTorchLearner)
    def surrogate(self, config: Any, adv: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        # TRPO's surrogate: the trust region bounds the step, not a clip.
        return self._dual_clip(adv * ratio, adv)

    def policy_loss(self, module_id: str, config: Any, batch: dict[str, Any], logits: torch.Tensor,
                    mean: Mean) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss terms that depend on the policy's ``logits``: surrogate, entropy bonus, KL penalty and
        distillation (what the natural step minimises and its line search re-evaluates); with their stats."""
        module = self.module[module_id].unwrapped()
        curr = module.get_train_action_dist_cls().from_logits(logits)
        prev = module.get_exploration_action_dist_cls().from_logits(batch[Columns.ACTION_DIST_INPUTS])
        log_ratio = self._log_ratio(module_id, batch, logits)
        surrogate = self.surrogate(config, batch[Postprocessing.ADVANTAGES], torch.exp(log_ratio))
        mean_kl = mean(prev.kl(curr)) if config.use_kl_loss else torch.zeros((), device=logits.device)
        entropy = curr.entropy()
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total = mean(-surrogate - entropy_coeff * entropy)
        if config.use_kl_loss:
            total = total + self.curr_kl_coeffs_per_module[module_id] * mean_kl
        stats = {POLICY_LOSS_KEY: -mean(surrogate), ENTROPY_KEY: mean(entropy), LEARNER_RESULTS_KL_KEY: mean_kl,
                 **self._ratio_stats(config, log_ratio, mean)}
        return total + self._distill_term(batch, logits, mean, stats), stats

    def _value_loss(self, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any],
                    mean: Mean) -> tuple[torch.Tensor, dict[str, Any]]:
        """RLlib's clipped value loss (weighted by vf_loss_coeff) and its stats."""
        module = self.module[module_id].unwrapped()
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        targets = batch[Postprocessing.VALUE_TARGETS]
        vf_loss = torch.pow(values - targets, 2.0)
        vf_loss_clipped = torch.clamp(vf_loss, 0, config.vf_clip_param)
        stats = {VF_LOSS_KEY: mean(vf_loss_clipped), LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: mean(vf_loss),
                 LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(targets, values)}
        return config.vf_loss_coeff * mean(vf_loss_clipped), stats

    @override(DistillPPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        mean, batch = self._prepare(batch)
        logits = fwd_out[Columns.ACTION_DIST_INPUTS]
        policy_loss, stats = self.policy_loss(module_id, config, batch, logits, mean)
        value_loss, value_stats = self._value_loss(module_id, config, batch, fwd_out, mean)
        self._natural[module_id] = _NaturalInputs(config, batch, logits, policy_loss, value_loss, mean)
        self._finish(module_id, {**stats, **value_stats})
        return policy_loss + value_loss

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module: dict[str, torch.Tensor], **kwargs) -> dict:
        # Adam sees the value loss only (the value head reads detached features, so it is all that reaches
        # the head); the policy loss's graph stays intact for the natural step in apply_gradients.
        return super().compute_gradients({mid: self._natural[mid].value_loss for mid in loss_per_module}, **kwargs)

    @override(DistillPPOTorchLearner)
    def apply_gradients(self, gradients_dict: Any) -> None:
        pending, self._natural = self._natural, {}
        if not self._stopped:
            for module_id, inputs in pending.items():
                self.metrics.log_dict(self._natural_step(module_id, inputs), key=module_id, window=1)
        super().apply_gradients(gradients_dict)

    def _natural_step(self, module_id: str, inputs: _NaturalInputs) -> dict[str, float]:
        """One TRPO step of the selector's weights on the policy loss (module docstring). In place."""
        s = self.settings
        module = self.module[module_id].unwrapped()
        params = [p for p in module.selector.parameters() if p.requires_grad]
        old_logits = inputs.logits.detach()
        g = flat_grad(torch.autograd.grad(inputs.policy_loss, params, retain_graph=True, allow_unused=True), params)
        # KL(before || after) is 0 here; its Hessian is the Fisher matrix F.
        kl = inputs.mean(distillation_kl(old_logits, inputs.logits, inputs.batch[Columns.OBS]["mask"]))
        flat_kl_grad = flat_grad(torch.autograd.grad(kl, params, create_graph=True, allow_unused=True), params)

        def fisher_vector(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(flat_kl_grad @ v, params, retain_graph=True, allow_unused=True)
            return flat_grad(hv, params) + s.cg_damping * v

        direction = conjugate_gradient(fisher_vector, -g, s.cg_iters)
        curvature = float(direction @ fisher_vector(direction))
        if not curvature > 0:
            return {"natural_accepted": 0.0, "natural_step_kl": 0.0, "natural_improvement": 0.0,
                    "natural_backtracks": float(s.line_search_steps)}
        step = direction * (2 * s.max_kl / curvature) ** 0.5
        return self._line_search(module_id, inputs, params, step)

    def _line_search(self, module_id: str, inputs: _NaturalInputs, params: list[torch.Tensor],
                     step: torch.Tensor) -> dict[str, float]:
        """Halve ``step`` until the policy loss falls within the trust region; none found: weights unchanged."""
        s = self.settings
        module = self.module[module_id].unwrapped()
        start = [p.detach().clone() for p in params]
        before = float(inputs.policy_loss.detach())
        old_logits = inputs.logits.detach()
        with torch.no_grad():
            for tries in range(s.line_search_steps):
                _set_flat(params, start, step, 0.5 ** tries)
                new_logits = module.forward_train(inputs.batch)[Columns.ACTION_DIST_INPUTS]
                new_loss, _ = self.policy_loss(module_id, inputs.config, inputs.batch, new_logits, inputs.mean)
                step_kl = float(inputs.mean(distillation_kl(old_logits, new_logits, inputs.batch[Columns.OBS]["mask"])))
                if float(new_loss) < before and step_kl <= s.max_kl:
                    return {"natural_accepted": 1.0, "natural_step_kl": step_kl,
                            "natural_improvement": before - float(new_loss), "natural_backtracks": float(tries)}
            for p, p0 in zip(params, start):  # nothing found: keep the weights as they were
                p.copy_(p0)
        return {"natural_accepted": 0.0, "natural_step_kl": 0.0, "natural_improvement": 0.0,
                "natural_backtracks": float(s.line_search_steps)}


def _set_flat(params: list[torch.Tensor], start: list[torch.Tensor], step: torch.Tensor, frac: float) -> None:
    """params <- start + frac * step (``step`` flat, in ``params``' order). In place, without autograd."""
    offset = 0
    for p, p0 in zip(params, start):
        n = p.numel()
        p.copy_(p0 + frac * step[offset:offset + n].view_as(p))
        offset += n


LEARNERS: dict[str, type[DistillPPOTorchLearner]] = {"clip": DistillPPOTorchLearner, "natural": NaturalPPOTorchLearner}


def learner_class(update: str) -> type[DistillPPOTorchLearner]:
    """The learner class for ``ppo.update``."""
    if update not in LEARNERS:
        raise ValueError(f"ppo.update: expected one of {list(PPO_UPDATES)}, got {update!r}")
    return LEARNERS[update]
