"""Typed configuration for every memsel command.

Every hyperparameter lives once, here, in a dataclass with a default and a one-line docstring.
YAML files and ``--set key=value`` only override these defaults; unknown keys, wrong types and
out-of-range values are refused before anything runs, naming the field and what was expected.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import memsel.data.babi  # noqa: F401  (registers the datasets 'babi' ...)
import memsel.data.generate  # noqa: F401  (... and 'generated')
import memsel.manager.budget  # noqa: F401  (registers the budget strategy 'managed')
from memsel.data.budget import check_budget
from memsel.data.sample import DATASETS
from memsel.env import READERS, REWARD_MODES, REWARD_TIMINGS
from memsel.layout import RunLayout
from memsel.registry import ConfigError, UnknownNameError, import_plugins
from memsel.registry import check as _check
from memsel.selector_configs import FAMILIES, SelectorConfig
from memsel.tune_configs import SCHEDULERS, SEARCH_ALGS

__all__ = ["Config", "ConfigError", "DataConfig", "EnvConfig", "FAMILIES", "ManagerConfig", "PPOSettings", "PretrainConfig",
           "SelectorConfig", "TuneSettings", "from_dict", "load_config", "parse_set", "with_overrides"]


@dataclass
class DataConfig:
    """Where the samples come from (a registered dataset, memsel.data.sample.DATASETS) and how they are padded."""

    dataset: str | None = None
    """A dataset of memsel.data.sample.DATASETS; None = 'babi' (files) when ``path`` is set, else 'generated'."""
    dataset_options: dict = field(default_factory=dict)
    """Settings of a registered dataset's config beyond the data.* keys here (babi's and generated's are those)."""
    path: str | None = None
    """A bAbI ``*_train.txt`` file (its ``*_test.txt`` sibling is found) or a folder; None generates ``task``."""
    task: int = 1
    """bAbI task number: picks the files when ``path`` is a folder; the task generated (1..5) when it is None."""
    train_stories: int = 200
    """Generated stories in the train split (5 questions each by default, as in bAbI's 1k set; task 4: 1 each)."""
    test_stories: int = 200
    """Generated stories in the test split."""
    questions_per_story: int = 5
    """Generated questions per story (task 4 asks one, as bAbI does)."""
    statements_per_question: int = 2
    """Generated statements between two questions (bAbI: 2); tasks 2, 3 and 5 add blocks of this size until a question can be asked; task 4: relations before its question."""
    num_actors: int = 4
    """Generated: how many people move around (task 5: at least 2; task 4 has none)."""
    num_places: int = 6
    """Generated: how many places they move between (task 4: places its relations are drawn from)."""
    num_objects: int = 3
    """Generated tasks 2, 3 and 5: how many objects people get and drop (and, in task 5, give)."""
    distractor_density: float = 0.0
    """Generated: share of statements that are moves of bystanders, never asked about (task 4: relations between two bystander places; 0 = none, as in bAbI)."""
    val_fraction: float = 0.1
    """Fraction of the train file's stories held out for validation."""
    max_memories: int = 0
    """Memory slots per sample; 0 = the longest story in the data. Longer stories keep their most recent memories."""
    max_sentence_len: int = 0
    """Tokens per sentence; 0 = the longest sentence in the data."""
    haystack: int = 0
    """Memories per question when the stories hide in background text (memsel.data.haystack, as BABILong):
    each question sees this many, its story's statements among sentences of ``haystack_background``;
    0 = plain bAbI."""
    haystack_background: str | None = None
    """A text file or a folder of ``*.txt`` files for the haystack; None = ``../shared/haystack`` (two novels)."""
    haystack_max_words: int = 20
    """Background sentences longer than this many words are cut into pieces of at most this many."""

    @property
    def dataset_name(self) -> str:
        """The dataset in use: ``dataset``, or by default 'babi' when ``path`` is set, else 'generated'."""
        return self.dataset or ("babi" if self.path else "generated")

    def validate(self, p: str = "data") -> None:
        _check(1 <= self.task <= 20, f"{p}.task", "an integer in 1..20", self.task)
        DATASETS.check_choice(self.dataset_name, self, self.dataset_options, p, "dataset", "dataset_options",
                              others=False)
        _check(0.0 <= self.val_fraction < 1.0, f"{p}.val_fraction", "a number in [0, 1)", self.val_fraction)
        _check(self.max_memories >= 0, f"{p}.max_memories", "an integer >= 0 (0 = automatic)", self.max_memories)
        _check(self.max_sentence_len >= 0, f"{p}.max_sentence_len", "an integer >= 0 (0 = automatic)",
               self.max_sentence_len)
        _check(self.haystack >= 0, f"{p}.haystack", "an integer >= 0 (0 = plain bAbI)", self.haystack)
        _check(self.haystack_max_words >= 3, f"{p}.haystack_max_words", "an integer >= 3", self.haystack_max_words)


PRETRAIN_TARGETS = ("recency", "supporting", "mixed")
PPO_VARIANTS: dict[str, dict[str, Any]] = {
    "scratch": {"use_pretrained": False},
    "no_distill": {"distill_coeff": 0.0, "distill_schedule": "constant"},
}
"""ppo.compare: each comparison run's name and the ppo fields it changes (with compare emptied)."""
PPO_UPDATES = ("clip", "natural")


@dataclass
class EnvConfig:
    """The memory-selection environment (memsel.env); the budget also applies to pretraining and evaluation."""

    memory_budget: int = 0
    """K, memory slots a question may see; 0 = no budget (only with budget_strategy 'all')."""
    budget_strategy: str = "all"
    """A strategy of memsel.data.budget.STRATEGIES: all: every memory, padded to data.max_memories;
    truncate: the K most recent; sample: K drawn per episode; managed: the K a trained memory manager kept
    (budget_options {manager: FILE}; without one the pipeline trains the run's manager first)."""
    sample_weighting: str = "uniform"
    """budget_strategy 'sample': draw memories uniformly or by recency weight exp(-sample_decay * age)."""
    sample_decay: float = 0.1
    """budget_strategy 'sample' with 'recency' weighting: the rate of exp(-sample_decay * age)."""
    budget_options: dict = field(default_factory=dict)
    """Settings of a registered budget strategy (memsel.data.budget.STRATEGIES) beyond sample's keys above."""
    reward_mode: str = "supporting"
    """supporting: reward chosen memories that are needed supporting facts; answer: a reader answers from them."""
    reader: str = "contains"
    """reward_mode 'answer': 'learned' (the answer reader pretraining trained, pretrain.answer_weight > 0),
    'contains' (the answer token is in a chosen memory) or 'package.module:factory'."""
    hops: int = 1
    """Selections per question; 0 = as many as the question's supporting facts (multi-hop)."""
    reward_timing: str = "per_hop"
    """per_hop: reward each selection by what it adds; final: the whole reward after the last selection."""

    def validate(self, p: str = "env") -> None:
        check_budget(self.memory_budget, self.budget_strategy, self, self.budget_options, p)
        _check(self.reward_mode in REWARD_MODES, f"{p}.reward_mode", f"one of {list(REWARD_MODES)}", self.reward_mode)
        _check(self.reader in READERS or (":" in self.reader and all(self.reader.split(":", 1))), f"{p}.reader",
               f"{READERS.expected()} or 'package.module:factory'", self.reader)
        _check(self.hops >= 0, f"{p}.hops", "an integer >= 0 (0 = as many as the supporting facts)", self.hops)
        _check(self.reward_timing in REWARD_TIMINGS, f"{p}.reward_timing", f"one of {list(REWARD_TIMINGS)}",
               self.reward_timing)


@dataclass
class PretrainConfig:
    """Supervised pretraining with Lightning."""

    max_epochs: int = 15
    """Passes over the train split."""
    batch_size: int = 32
    """Samples per optimiser step."""
    lr: float = 5e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    recency_decay: float = 0.5
    """Rate lambda of the temporal prior p(age) ~ exp(-lambda * age), age 0 = most recent memory."""
    target: str = "mixed"
    """Selection target: recency (the temporal prior alone, no labels), supporting (the supporting facts,
    hop by hop in the data's order), mixed (supporting facts with recency_weight of the prior)."""
    recency_weight: float = 0.02
    """'mixed': weight of the temporal prior in the target; with answer_weight > 0 and target 'recency',
    the weight of the prior's loss next to the answer loss."""
    answer_hint: float = 0.0
    """Weak supervision (target 'recency' with answer_weight > 0): weight of the marginal likelihood that
    the last hop picks a memory holding the answer word (uses answers only)."""
    query_hint: float = 0.0
    """Weak supervision: weight of the marginal likelihood that the first hop, and every hop before the
    last, picks a memory sharing a content word (one in at most 40% of the train memories) with the question."""
    bridge_hint: float = 0.0
    """Weak supervision, multi-hop: weight of the likelihood that the hops form a chain, the first picking
    a memory that holds a content word of the question, each later one a memory that shares a content
    word with the one before, the last one holding the answer word, and the chain as a whole holding
    every content word of the question that the story holds (summed over all such chains under the
    selector's hop distributions; answers, questions and memory words only, no labels)."""
    restarts: int = 1
    """Train this many times from different initialisations (seeds seed, seed + 1000, ...) and keep the
    run with the best checkpoint on the validation split. Multi-hop training now and then settles in
    a poor optimum (qa3: 14-20% validation error against 4-5%) that the validation split shows."""
    ema_decay: float = 0.0
    """> 0 validates, checkpoints and exports an exponential moving average of the weights (Lightning's
    EMAWeightAveraging, updated every optimiser step with this decay; 0.99 averages over about the
    last 100 steps) instead of the raw weights. 0 = off."""
    answer_weight: float = 0.0
    """> 0 trains the answer reader (pretrain/reader.pt) on answers, with this weight. With target
    'recency' the answer loss also trains the selector through its soft choices (weak supervision,
    as MemN2N); with labels the reader reads the true supporting facts."""

    def validate(self, p: str = "pretrain") -> None:
        _check(self.max_epochs >= 1, f"{p}.max_epochs", "an integer >= 1", self.max_epochs)
        _check(self.batch_size >= 1, f"{p}.batch_size", "an integer >= 1", self.batch_size)
        _check(self.lr > 0, f"{p}.lr", "a number > 0", self.lr)
        _check(isinstance(self.restarts, int) and self.restarts >= 1, f"{p}.restarts", "an integer >= 1",
               self.restarts)
        _check(self.weight_decay >= 0, f"{p}.weight_decay", "a number >= 0", self.weight_decay)
        _check(0.0 <= self.ema_decay < 1.0, f"{p}.ema_decay", "a number in [0, 1) (0 = off)", self.ema_decay)
        _check(self.recency_decay >= 0, f"{p}.recency_decay", "a number >= 0", self.recency_decay)
        _check(0.0 <= self.recency_weight <= 1.0, f"{p}.recency_weight", "a number in [0, 1]",
               self.recency_weight)
        _check(self.target in PRETRAIN_TARGETS, f"{p}.target", f"one of {list(PRETRAIN_TARGETS)}", self.target)
        _check(self.answer_weight >= 0, f"{p}.answer_weight", "a number >= 0", self.answer_weight)
        _check(self.answer_hint >= 0, f"{p}.answer_hint", "a number >= 0", self.answer_hint)
        _check(self.query_hint >= 0, f"{p}.query_hint", "a number >= 0", self.query_hint)
        _check(self.bridge_hint >= 0, f"{p}.bridge_hint", "a number >= 0", self.bridge_hint)
        for hint in ("answer_hint", "query_hint", "bridge_hint"):
            _check(getattr(self, hint) == 0 or (self.target == "recency" and self.answer_weight > 0), f"{p}.{hint}",
                   "0 unless weak supervision is on (pretrain.target 'recency' and pretrain.answer_weight > 0)",
                   getattr(self, hint))


@dataclass
class ManagerConfig:
    """The memory manager (memsel.manager): which statement a memory of K slots evicts when one arrives.

    Trained by `memsel manager train` and, with env.budget_strategy 'managed' and no manager file, by the
    pipeline before the selector: Lightning on Belady's decisions, then PPO (the ppo section's settings)."""

    slots: int = 0
    """K, the memory slots it manages; 0 = env.memory_budget (which it must equal with budget_strategy 'managed')."""
    kind: str = "ff"
    """Selector family scoring its K+1 candidates (memsel.selector_configs.FAMILIES), with that family's default
    sizes and softmax attention (independent of the selector section; ff beat the strong experiments' mha with
    stick-breaking on qa2's validation stories, K = 8)."""
    max_epochs: int = 20
    """Pretraining passes over the oracle's decisions on the train split."""
    batch_size: int = 128
    """Decisions per pretraining optimiser step."""
    lr: float = 3e-3
    """Pretraining Adam learning rate."""
    recency_weight: float = 0.1
    """Weight of the eviction prior in the pretraining target (1 - it goes to the oracle's choices)."""
    recency_decay: float = 0.2
    """Rate of the eviction prior p(evict) ~ exp(recency_decay * age): the older, the likelier (FIFO-like)."""
    self_attention_layers: int = 0
    """Self-attention layers among the K+1 candidates before scoring (``kind`` mha only), so that a memory's
    score can depend on the others (e.g. a later statement about the same person or object); 0 = none."""
    dagger_rounds: int = 0
    """DAgger rounds after pretraining on the oracle's own decisions: each rolls out the current manager
    (mixed with the oracle, ``dagger_beta``) over the train stories, labels every state it reaches with the
    oracle's decisions from that state, adds them to the data so far and trains ``dagger_epochs`` more."""
    dagger_beta: float = 0.5
    """DAgger: the oracle takes a rollout decision with probability dagger_beta ** round (round 1, 2, ...)."""
    dagger_epochs: int = 5
    """DAgger: Lightning epochs over the aggregated decisions per round (round 0 trains max_epochs)."""
    cost_weight: float = 0.0
    """Weight of a decision in the pretraining loss = 1 + cost_weight * the mean over its candidates of the
    (question, fact) pairs evicting that one loses beyond the oracle's choice (0 = every decision alike)."""
    ppo_iterations: int = 10
    """PPO iterations after pretraining (with distillation toward the pretrained manager); 0 = none."""
    lru_top: int = 1
    """LRU baseline: a memory counts as used at a question when the selector ranks it among its top this many."""

    def validate(self, p: str = "manager") -> None:
        _check(self.slots >= 0, f"{p}.slots", "an integer >= 0 (0 = env.memory_budget)", self.slots)
        FAMILIES.check(self.kind, f"{p}.kind")
        for name in ("max_epochs", "batch_size", "lru_top", "dagger_epochs"):
            _check(getattr(self, name) >= 1, f"{p}.{name}", "an integer >= 1", getattr(self, name))
        _check(self.self_attention_layers >= 0, f"{p}.self_attention_layers", "an integer >= 0",
               self.self_attention_layers)
        _check(self.self_attention_layers == 0 or self.kind == "mha", f"{p}.self_attention_layers",
               f"0 unless {p}.kind is mha (the family with self-attention)", self.self_attention_layers)
        _check(self.dagger_rounds >= 0, f"{p}.dagger_rounds", "an integer >= 0 (0 = no DAgger)", self.dagger_rounds)
        _check(0.0 <= self.dagger_beta <= 1.0, f"{p}.dagger_beta", "a number in [0, 1]", self.dagger_beta)
        _check(self.cost_weight >= 0, f"{p}.cost_weight", "a number >= 0", self.cost_weight)
        _check(self.lr > 0, f"{p}.lr", "a number > 0", self.lr)
        _check(0.0 <= self.recency_weight <= 1.0, f"{p}.recency_weight", "a number in [0, 1]", self.recency_weight)
        _check(self.recency_decay >= 0, f"{p}.recency_decay", "a number >= 0", self.recency_decay)
        _check(self.ppo_iterations >= 0, f"{p}.ppo_iterations", "an integer >= 0 (0 = no PPO)", self.ppo_iterations)

    def resolved_slots(self, env: "EnvConfig") -> int:
        """K: ``slots``, or env.memory_budget when it is 0."""
        return self.slots or env.memory_budget


@dataclass
class PPOSettings:
    """PPO fine-tuning in RLlib (new API stack) with a distillation term toward the pretrained net."""

    iterations: int = 8
    """Training iterations (one sample + update round each)."""
    train_batch_size: int = 512
    """Env steps sampled per iteration."""
    minibatch_size: int = 128
    """Samples per SGD minibatch."""
    num_epochs: int = 4
    """SGD passes over each train batch."""
    lr: float = 3e-4
    """Adam learning rate."""
    clip_param: float = 0.2
    """PPO surrogate clip range."""
    kl_coeff: float = 0.2
    """Initial coefficient of the adaptive KL penalty toward the sampling policy."""
    kl_target: float = 0.01
    """Target KL of the adaptive penalty."""
    entropy_coeff: float = 0.0
    """Entropy bonus."""
    vf_loss_coeff: float = 0.5
    """Value loss weight."""
    grad_clip: float = 0.5
    """Global gradient-norm clip."""
    gamma: float = 0.99
    """Discount."""
    lambda_: float = 0.95
    """GAE lambda."""
    distill_coeff: float = 0.5
    """Weight of KL(teacher || student) toward the pretrained network; 0 disables the term."""
    distill_schedule: str = "constant"
    """How the distillation weight moves: constant, linear (to distill_final), adaptive (QDagger-style)."""
    distill_final: float = 0.0
    """linear schedule: the weight after distill_decay_steps env steps."""
    distill_decay_steps: int = 10000
    """linear schedule: env steps over which the weight goes from distill_coeff to distill_final."""
    use_kl_loss: bool = True
    """Adaptive KL penalty toward the sampling policy (kl_coeff adapted to kl_target)."""
    vf_clip: float = 10.0
    """Clip of the squared value error (RLlib's vf_clip_param); large = off."""
    dual_clip: float = 0.0
    """Dual-clip PPO: > 1 bounds the surrogate of negative advantages at dual_clip * A; 0 = off."""
    minibatch_advantage_norm: bool = False
    """Re-standardise advantages per minibatch (per train batch is always on, in RLlib's GAE)."""
    target_kl: float = 0.0
    """Hard trust region: stop an iteration's remaining minibatch updates once approx. KL exceeds it; 0 = off."""
    update: str = "clip"
    """How the policy moves: 'clip' (PPO's clipped surrogate, Adam) or 'natural' (TRPO-style: a natural-gradient
    step on the unclipped surrogate, found by conjugate gradient on Fisher-vector products, scaled to KL = max_kl
    and backtracked until the objective improves within the trust region; Adam then trains the value head only)."""
    max_kl: float = 0.01
    """natural update: the trust region, mean KL(before || after) of one step."""
    cg_iters: int = 10
    """natural update: conjugate-gradient iterations for F x = g."""
    cg_damping: float = 0.1
    """natural update: damping added to the Fisher matrix (F + damping I)."""
    line_search_steps: int = 10
    """natural update: halvings of the step the backtracking line search tries before it gives up."""
    entropy_coeff_final: float = -1.0
    """Entropy schedule: linear from entropy_coeff to this over entropy_decay_steps env steps; < 0 = constant."""
    entropy_decay_steps: int = 10000
    """Entropy schedule length in env steps."""
    orthogonal_init: bool = False
    """Orthogonal init of the policy's and value head's linear layers (a pretrained selector overrides its part)."""
    use_pretrained: bool = True
    """Start from the pretrained selector (False trains PPO from scratch, with no teacher)."""
    num_env_runners: int = 0
    """Remote env runners; 0 samples in the trial's own process (best on 2 cores)."""
    num_envs_per_env_runner: int = 8
    """Vectorised envs per runner."""
    checkpoint_every: int = 0
    """Checkpoint every N iterations; 0 = only at the end."""
    compare: list = field(default_factory=list)
    """Extra PPO runs with the same budget, evaluated next to this one: 'scratch' (no pretraining, no
    teacher) and 'no_distill' (pretrained start, distill_coeff 0); each writes ppo_<variant>/."""

    def validate(self, p: str = "ppo") -> None:
        for name in ("iterations", "train_batch_size", "minibatch_size", "num_epochs", "num_envs_per_env_runner"):
            _check(getattr(self, name) >= 1, f"{p}.{name}", "an integer >= 1", getattr(self, name))
        _check(self.minibatch_size <= self.train_batch_size, f"{p}.minibatch_size",
               f"an integer <= ppo.train_batch_size ({self.train_batch_size})", self.minibatch_size)
        _check(self.lr > 0, f"{p}.lr", "a number > 0", self.lr)
        _check(self.clip_param > 0, f"{p}.clip_param", "a number > 0", self.clip_param)
        for name in ("kl_coeff", "kl_target", "entropy_coeff", "vf_loss_coeff", "grad_clip", "distill_coeff",
                     "distill_final", "vf_clip", "dual_clip", "target_kl", "cg_damping"):
            _check(getattr(self, name) >= 0, f"{p}.{name}", "a number >= 0", getattr(self, name))
        _check(self.distill_schedule in DISTILL_SCHEDULES, f"{p}.distill_schedule",
               f"one of {list(DISTILL_SCHEDULES)}", self.distill_schedule)
        _check(self.dual_clip == 0 or self.dual_clip > 1, f"{p}.dual_clip", "0 (off) or a number > 1",
               self.dual_clip)
        _check(self.update in PPO_UPDATES, f"{p}.update", f"one of {list(PPO_UPDATES)}", self.update)
        _check(self.max_kl > 0, f"{p}.max_kl", "a number > 0", self.max_kl)
        for name in ("distill_decay_steps", "entropy_decay_steps", "cg_iters", "line_search_steps"):
            _check(getattr(self, name) >= 1, f"{p}.{name}", "an integer >= 1", getattr(self, name))
        _check(0 <= self.gamma <= 1, f"{p}.gamma", "a number in [0, 1]", self.gamma)
        _check(0 <= self.lambda_ <= 1, f"{p}.lambda_", "a number in [0, 1]", self.lambda_)
        _check(self.num_env_runners >= 0, f"{p}.num_env_runners", "an integer >= 0", self.num_env_runners)
        _check(self.checkpoint_every >= 0, f"{p}.checkpoint_every", "an integer >= 0", self.checkpoint_every)
        _check(all(v in PPO_VARIANTS for v in self.compare) and len(set(self.compare)) == len(self.compare),
               f"{p}.compare", f"a list of distinct names from {list(PPO_VARIANTS)}", self.compare)


DISTILL_SCHEDULES = ("constant", "linear", "adaptive")
SEARCH_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


SEARCH_SECTIONS = {"ppo": "always", "env": "always", "pretrain": "pipeline", "selector": "pipeline"}
"""Config sections whose fields ``tune.search_space`` may name: ppo and env fields in any sweep; pretrain
and selector fields only when each trial pretrains (``tune.trial: pipeline``)."""
UNSEARCHABLE = {"ppo.iterations", "ppo.use_pretrained", "ppo.num_env_runners", "ppo.num_envs_per_env_runner",
                "ppo.checkpoint_every", "ppo.compare", "env.budget_options", "env.reward_mode", "env.reader",
                "selector.kind"}
"""Fields that shape the run rather than the learning (or change what the metric means): not searchable."""


def _spelled_numbers(space: Any) -> Any:
    """``tune.search_space`` with argument lists such as ``["1e-5", "1e-3"]`` (YAML 1.1 strings) as numbers,
    and a bare field name meaning a ppo field (``lr``) spelled as such (``ppo.lr``); applied while
    overrides are read, so that ``validate`` only checks."""
    if not isinstance(space, dict):
        return space
    out = {}
    for key, spec in _flat_sections(space).items():
        if isinstance(spec, dict) and len(spec) == 1 and isinstance(next(iter(spec.values())), list):
            kind, args = next(iter(spec.items()))
            numbers = [_as_number(a) for a in args]
            spec = {kind: numbers if args and all(n is not None for n in numbers) else args}
        out[key if "." in str(key) else f"ppo.{key}"] = spec
    return out


def _flat_sections(space: dict) -> dict:
    """``{ppo: {lr: {...}}}`` (as ``--set tune.search_space.ppo.lr.loguniform=...`` nests it) -> ``{ppo.lr: {...}}``."""
    out = {}
    for key, spec in space.items():
        nested = key in SEARCH_SECTIONS and isinstance(spec, dict) and spec and not set(spec) & set(SEARCH_KINDS)
        out.update({f"{key}.{k}": v for k, v in spec.items()} if nested else {key: spec})
    return out


TRIAL_KINDS = ("ppo", "pipeline")
"""tune.trial: what one trial of a sweep runs."""


@dataclass
class TuneSettings:
    """A Ray Tune sweep: a registered search algorithm and trial scheduler (memsel.tune_configs) over ppo and
    env fields (and pretrain and selector fields with ``trial: pipeline``), ranked on the validation split."""

    num_samples: int = 4
    """Trials drawn from the search space (each grid point counts once per sample); 0: the pipeline skips the sweep."""
    max_concurrent_trials: int = 2
    """Trials running at once (each needs cpus_per_trial CPUs, plus one per ppo.num_env_runners)."""
    iterations: int = 0
    """Max iterations per trial (the scheduler's max_t); 0 = ppo.iterations."""
    trial: str = "ppo"
    """What one trial runs: 'ppo' (PPO from the run's pretrained selector) or 'pipeline' (Lightning pretraining
    inside the trial, then PPO), which makes pretrain.* and selector.* fields searchable."""
    scheduler: str = "asha"
    """Trial scheduler, a name in memsel.tune_configs.SCHEDULERS: asha (early stopping), pbt (population-based
    training, mutating the searched ppo fields), none (FIFO)."""
    scheduler_options: dict = field(default_factory=dict)
    """Settings of the scheduler's config beyond the keys below (asha's are grace_period, reduction_factor; pbt's
    perturbation_interval, quantile_fraction, resample_probability)."""
    search_alg: str = "random"
    """Search algorithm, a name in memsel.tune_configs.SEARCH_ALGS: random (Tune's BasicVariantGenerator), grid
    (every combination of choice/grid values), optuna (Optuna's TPE)."""
    search_options: dict = field(default_factory=dict)
    """Settings of the search algorithm's config (optuna: n_startup_trials)."""
    grace_period: int = 2
    """ASHA: iterations every trial gets before it can be stopped."""
    reduction_factor: int = 2
    """ASHA: keep 1 / reduction_factor of the trials at each rung."""
    metric: str = "auto"
    """Result key that ranks, stops and exploits trials (higher is better); auto = val/selection_accuracy, or
    val/answer_accuracy with env.reward_mode 'answer' and env.reader 'learned' (scored on the validation split)."""
    eval_every: int = 1
    """Score each trial's greedy policy on the validation split every N iterations (and at its first and last);
    results in between repeat the latest score."""
    search_space: dict = field(default_factory=lambda: {
        "ppo.lr": {"loguniform": [1e-5, 1e-3]},
        "ppo.distill_coeff": {"choice": [0.0, 0.1, 0.5, 1.0]},
    }, metadata={"convert": _spelled_numbers})
    """section.field -> {kind: args}, kind one of choice, grid, uniform, loguniform, randint; a bare name is a
    ppo field (lr = ppo.lr)."""
    cpus_per_trial: int = 1
    """CPUs reserved for a trial's own process (its learner; each env runner gets one more)."""
    time_budget_s: float = 0.0
    """Wall-clock budget of the whole sweep in seconds; 0 = none. Trials still running then are stopped."""
    stop: dict = field(default_factory=dict)
    """Extra stop rules, result key -> value: a trial stops once a result reaches the value (e.g.
    {val/selection_accuracy: 0.99}); tune.iterations always applies."""
    storage_path: str = ""
    """Where trials write checkpoints and Tune its sweep state: a folder or a URI pyarrow takes (s3://, gs://,
    file:// on a shared mount); empty = <run_dir>/ray_results. On a cluster every node must reach it."""
    top_k: int = 5
    """Trials in the sweep's top-k table (the parent MLflow run's top_trials.md and the summary)."""
    register_model: bool = True
    """After a sweep, register the best selector as a new version of MLflow model 'memsel-<name>' (a pyfunc)."""
    max_failures: int = 0
    """Times Tune restarts a failed trial (train and tune) before reporting it failed; 0 = never."""

    def validate(self, p: str = "tune") -> None:
        _check(self.num_samples >= 0, f"{p}.num_samples", "an integer >= 0 (0 = `memsel pipeline` skips the sweep)",
               self.num_samples)
        for name in ("max_concurrent_trials", "eval_every", "cpus_per_trial", "top_k"):
            _check(getattr(self, name) >= 1, f"{p}.{name}", "an integer >= 1", getattr(self, name))
        _check(self.iterations >= 0, f"{p}.iterations", "an integer >= 0 (0 = ppo.iterations)", self.iterations)
        _check(self.trial in TRIAL_KINDS, f"{p}.trial", f"one of {list(TRIAL_KINDS)}", self.trial)
        _check(self.time_budget_s >= 0, f"{p}.time_budget_s", "a number >= 0 (0 = no budget)", self.time_budget_s)
        _check(all(isinstance(k, str) and _as_number(v) is not None for k, v in self.stop.items()), f"{p}.stop",
               "a mapping of result key -> number", self.stop)
        _check(isinstance(self.metric, str) and bool(self.metric), f"{p}.metric", "a result key or 'auto'", self.metric)
        SCHEDULERS.check_choice(self.scheduler, self, self.scheduler_options, p, "scheduler", "scheduler_options")
        SEARCH_ALGS.check_choice(self.search_alg, self, self.search_options, p, "search_alg", "search_options")
        for key, spec in self.search_space.items():
            self._check_spec(p, key, spec)
        self._check_combination(p)
        _check(isinstance(self.max_failures, int) and self.max_failures >= 0, f"{p}.max_failures",
               "an integer >= 0", self.max_failures)

    def _check_spec(self, p: str, key: str, spec: Any) -> None:
        section = key.split(".", 1)[0]
        _check(section in SEARCH_SECTIONS and key.count(".") == 1 and key not in UNSEARCHABLE,
               f"{p}.search_space.{key}", "section.field of a ppo or env field (pretrain and selector fields with "
               f"tune.trial 'pipeline'); not {sorted(UNSEARCHABLE)}", key)
        _check(SEARCH_SECTIONS[section] == "always" or self.trial == "pipeline", f"{p}.search_space.{key}",
               "tune.trial 'pipeline' to search a pretrain or selector field (each trial then pretrains)", key)
        _check(isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SEARCH_KINDS,
               f"{p}.search_space.{key}", f"a mapping with one key of {list(SEARCH_KINDS)}", spec)
        kind, args = next(iter(spec.items()))
        _check(isinstance(args, list) and len(args) >= 1, f"{p}.search_space.{key}.{kind}", "a non-empty list", args)
        numbers = [_as_number(a) for a in args]
        if kind in ("uniform", "loguniform", "randint"):
            _check(all(n is not None for n in numbers), f"{p}.search_space.{key}.{kind}", "[low, high] as numbers",
                   args)
            _check(len(args) == 2 and numbers[0] < numbers[1], f"{p}.search_space.{key}.{kind}",
                   "[low, high] with low < high", args)
        if kind == "loguniform":
            _check(numbers[0] > 0, f"{p}.search_space.{key}.{kind}", "a low bound > 0", args)

    def _check_combination(self, p: str) -> None:
        kinds = {next(iter(spec)) for spec in self.search_space.values()}
        if self.search_alg == "grid":
            _check(kinds <= {"choice", "grid"}, f"{p}.search_space", "only choice or grid values with search_alg "
                   "'grid' (a range has no grid points)", self.search_space)
        if self.search_alg == "optuna":
            _check("grid" not in kinds, f"{p}.search_space", "no grid values with search_alg 'optuna' (it samples; "
                   "use choice)", self.search_space)
        if self.scheduler != "pbt":
            return
        _check(any(k.startswith("ppo.") for k in self.search_space), f"{p}.search_space",
               "at least one ppo field for scheduler 'pbt' to mutate", self.search_space)
        _check(self.trial == "ppo", f"{p}.trial", "'ppo' with scheduler 'pbt' (an exploited trial restarts from a "
               "checkpoint; a pipeline trial would pretrain again)", self.trial)
        _check(self.search_alg in ("random", "grid"), f"{p}.search_alg", "random or grid with scheduler 'pbt' (PBT "
               "explores by mutating; a model-based searcher would not see its changes)", self.search_alg)

    def resolved_metric(self, env: "EnvConfig") -> str:
        """The result key that ranks trials: ``metric``, with 'auto' resolved for ``env``."""
        if self.metric != "auto":
            return self.metric
        learned = env.reward_mode == "answer" and env.reader == "learned"
        return "val/answer_accuracy" if learned else "val/selection_accuracy"


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""The values the top-level ``device`` setting takes (memsel.devices resolves them)."""


@dataclass
class Config:
    """One memsel run: data, network, pretraining, PPO, sweep, tracking."""

    name: str = "quickstart"
    """Run name (MLflow run names start with it); the default run directory is runs/<name>. Unless a flag, a
    --set or a config file names the run, it is the run directory's name: --run-dir runs/exp1 names the run
    exp1. Stage commands refuse to run with neither given (no runs/quickstart unasked)."""
    seed: int = 0
    """Seeds data generation, splits, initialisation, sampling and the sweep."""
    run_dir: str = ""
    """Where everything of this run goes; empty = runs/<name>."""
    experiment: str = "memsel"
    """MLflow experiment name."""
    tracking_uri: str = ""
    """MLflow tracking URI; empty = sqlite:///<run_dir>/mlflow.db."""
    ray_address: str = ""
    """Ray cluster address ('auto', 'host:6379'); empty = the RAY_ADDRESS variable if set, else a new local Ray."""
    device: str = "auto"
    """Where networks train and evaluate: 'auto' (the first GPU torch sees, else the CPU), 'cpu', 'cuda' or
    'cuda:N'. Reaches Lightning, RLlib's learner (num_gpus_per_learner) and evaluation."""
    plugins: list = field(default_factory=list)
    """Python modules imported before the config is checked (and in every Ray worker), so that components
    they register can be chosen by name: e.g. ``[mylab.families]`` holding a ``@FAMILIES.register("mine", ...)``
    family makes ``selector.kind: mine`` valid. Empty = memsel's own components only."""
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)
    manager: ManagerConfig = field(default_factory=ManagerConfig)

    def validate(self) -> "Config":
        _check(bool(self.name) and "/" not in self.name, "name", "a non-empty name without '/'", self.name)
        _check(self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _check(bool(DEVICE_PATTERN.fullmatch(self.device)), "device", "auto, cpu, cuda or cuda:N", self.device)
        self.data.validate()
        self.env.validate()
        self.selector.validate()
        self.pretrain.validate()
        self.ppo.validate()
        self.tune.validate()
        self.manager.validate()
        if self.env.budget_strategy == "managed":
            _check(self.manager.slots in (0, self.env.memory_budget), "manager.slots",
                   f"0 or env.memory_budget ({self.env.memory_budget}) with budget_strategy 'managed'",
                   self.manager.slots)
        self._check_search_values()
        return self

    def _check_search_values(self) -> None:
        """Every value ``tune.search_space`` may give a field (each choice, a range's bounds) is one the
        field accepts, so that no trial fails on a value the config could have refused."""
        for key, spec in self.tune.search_space.items():
            section, name = key.split(".", 1)
            known = [f.name for f in dataclasses.fields(getattr(self, section))]
            _check(name in known, f"tune.search_space.{key}", f"a field of {section}, one of {known}", key)
            kind, args = next(iter(spec.items()))
            for value in args:
                trial = copy.deepcopy(getattr(self, section))
                try:
                    _apply(trial, {name: value}, f"tune.search_space.{key}", section + ".")
                    trial.validate()
                except ConfigError as e:
                    raise ConfigError(f"field 'tune.search_space.{key}.{kind}': the value {value!r} is refused: "
                                      f"{e}") from None

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}").resolve()

    @property
    def layout(self) -> RunLayout:
        """Every path under the run directory (memsel.layout)."""
        return RunLayout(self.run_path)

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.layout.mlflow_db}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for logging as MLflow params (mapping settings as JSON, not expanded)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            for f in dataclasses.fields(obj):
                v = getattr(obj, f.name)
                if dataclasses.is_dataclass(v):
                    walk(f"{prefix}{f.name}.", v)
                else:
                    out[f"{prefix}{f.name}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
        walk("", self)
        return out


# ---------------------------------------------------------------------------------------------
# Overrides: YAML files and --set key=value, checked against the dataclasses' declared types.

def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the declared type ``tp``; returns (ok, value converted if harmless)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        number = _as_number(value)
        return (number is not None), (float(number) if number is not None else value)
    if tp is str:
        return isinstance(value, str), value
    if tp is dict or origin is dict:
        return isinstance(value, dict), value
    if tp is list or origin is list:
        return isinstance(value, list), value
    return True, value


def _as_number(value: Any) -> float | int | None:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; accept such strings where a number is expected."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
               list: "a list"}


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if args:
        return " or ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "null"
    return _TYPE_NAMES.get(tp, str(tp))


def _apply(obj: Any, overrides: dict, source: str, prefix: str = "") -> None:
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {overrides!r}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    names = list(fields)
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in names:
            kind = f" with {prefix}kind '{obj.kind}'" if isinstance(getattr(obj, "kind", None), str) else ""
            raise ConfigError(f"{source}: unknown field '{path}'{kind}; known fields here: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if hasattr(current, "retyped") and isinstance(value, dict):
                try:  # a section whose kind chooses its config class (selector.kind)
                    current = current.retyped(value)
                except UnknownNameError as e:
                    raise ConfigError(f"{source}: {e}") from None
                setattr(obj, key, current)
            _apply(current, value, source, path + ".")
            continue
        ok, converted = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(f"{source}: field '{path}': expected {_type_name(hints[key])}, got {value!r}")
        setattr(obj, key, fields[key].metadata.get("convert", lambda v: v)(converted))


def parse_set(item: str) -> dict:
    """``a.b=1`` -> ``{"a": {"b": 1}}``; the value is read as YAML (numbers, true/false, lists)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. ppo.lr=1e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {e}") from None
    return _nest(key, value, {})


def _nest(dotted: str, value: Any, into: dict) -> dict:
    """Set ``into["a"]["b"] = value`` for ``dotted`` "a.b" (creating the inner mappings); returns ``into``."""
    node = into
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return into


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice (first on line "
                                  f"{seen[key]}); each key may appear once")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict:
    """One YAML config file as a mapping ({} when empty), refusing bad YAML and duplicate keys by file and line."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(loaded).__name__}")
    return loaded


def config_chain(path: str | Path) -> list[tuple[Path, dict]]:
    """A config file and the files it builds on, base first: ``base: other.yaml`` (a path relative to the
    file) names a file whose settings apply first, so that the file holds only what it changes."""
    chain: list[tuple[Path, dict]] = []
    p = Path(path)
    while True:
        if any(p.resolve() == seen.resolve() for seen, _ in chain):
            names = " -> ".join(str(q) for q, _ in chain)
            raise ConfigError(f"{p}: 'base' files form a cycle ({names} -> {p})")
        data = read_yaml(p)
        base = data.pop("base", None)
        chain.append((p, data))
        if base is None:
            return list(reversed(chain))
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{p}: field 'base': expected the path of another config file, got {base!r}")
        p = p.parent / base


def _run_name(sources: list[tuple[str, Any]], require: bool) -> bool:
    """Whether the run's name should come from its run directory: a ``run_dir`` is given and no ``name``
    is (by a flag, a ``--set`` or a config file: an experiment's file names its runs wherever they go).
    With ``require``, a run that neither names itself nor its directory is refused, so that no command
    writes into the default runs/quickstart unasked."""
    given = {key: any(isinstance(data, dict) and data.get(key) for _, data in sources) for key in ("name", "run_dir")}
    if require and not any(given.values()):
        raise ConfigError("no run named: give --run-dir DIR or --name NAME (run dir runs/NAME), or a --config "
                          "that sets name (e.g. configs/quickstart.yaml)")
    return given["run_dir"] and not given["name"]


def load_config(path: str | Path | None = None, sets: list[str] | None = None, require_name: bool = False,
                **top: Any) -> Config:
    """Defaults, then the YAML file (after the files it names as ``base``), then ``--set`` items, then ``top``
    (non-None CLI flags). The run's name is its directory's unless given (``--run-dir runs/exp1``: 'exp1');
    ``require_name`` refuses a config that names neither (see :func:`_run_name`)."""
    sources = [(str(p), data) for p, data in config_chain(path)] if path is not None else []
    sources += [(f"--set {item}", parse_set(item)) for item in sets or []]
    sources += [(f"--{key.replace('_', '-')}", {key: value}) for key, value in top.items() if value is not None]
    name_from_dir = _run_name(sources, require_name)
    # Plug-ins register their components first, so that every source may name them.
    for source, data in sources:
        if isinstance(data, dict) and "plugins" in data:
            try:
                import_plugins(data["plugins"] if isinstance(data["plugins"], list) else [data["plugins"]])
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    cfg = Config()
    for source, data in sources:
        _apply(cfg, data, source)
    if name_from_dir:
        cfg.name = cfg.run_path.name
    return cfg.validate()


def with_overrides(cfg: Config, values: dict[str, Any], source: str = "tune trial") -> Config:
    """A copy of ``cfg`` with dotted fields set (``{"ppo.lr": 1e-4}``: a trial's sampled values), validated."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        _nest(key, value.item() if hasattr(value, "item") else value, nested)  # numpy scalars from Tune's samplers
    out = copy.deepcopy(cfg)
    _apply(out, nested, source)
    return out.validate()


def from_dict(d: dict) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a saved config.yaml)."""
    import_plugins(d.get("plugins") or [])
    cfg = Config()
    _apply(cfg, d, "saved config")
    return cfg.validate()
