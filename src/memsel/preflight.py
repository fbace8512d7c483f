"""Checks run before a stage computes anything: what can be checked before compute is checked before
compute (STYLE.md, rule 11).

``memsel pretrain | train | tune | evaluate | pipeline`` call :func:`check` after the config is read
and before anything is written, data prepared or Ray started. Each check raises one error whose
message names the field or file and what was expected (the CLI prints it on one line and exits
with code 2), so that a misconfiguration costs milliseconds, not a Ray start-up, and leaves no run
directory behind:

- data: ``data.path`` exists and its files parse, and they are the files the run directory was
  prepared from; the run directory's seed is the one given;
- names: ``tune.metric`` is a result the stage reports (:func:`reported_metrics`);
- plug-ins: a ``package.module:factory`` reader is imported and called on a two-memory sample;
- resources: ``ppo.num_env_runners`` (and ``tune.max_concurrent_trials``) against the CPUs of the
  local Ray; a GPU named by ``device`` is there;
- prerequisites: the pretrained selector and answer reader that ``train`` and ``tune`` start from,
  the trained run that ``evaluate`` evaluates.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path

from memsel.config import Config, ConfigError

log = logging.getLogger(__name__)

STAGES = ("pretrain", "train", "tune", "evaluate", "pipeline")
"""The commands that run a stage of a run directory (and are checked here)."""
PPO_STAGES = ("train", "tune", "pipeline")

_LEARNER = "learners/default_policy/"
RESULT_METRICS = (
    "env_runners/episode_return_mean", "env_runners/episode_return_min", "env_runners/episode_return_max",
    "env_runners/episode_len_mean", "num_env_steps_sampled_lifetime", "training_iteration",
    *(_LEARNER + k for k in ("policy_loss", "vf_loss", "vf_loss_unclipped", "vf_explained_var", "entropy",
                             "mean_kl_loss", "total_loss", "curr_entropy_coeff", "approx_kl", "clipfrac",
                             "update_stopped_early")))
"""Result keys every PPO trial reports (RLlib's new stack, STACK-NOTES.md, and memsel's learner,
memsel.rllib_models.learner); :func:`reported_metrics` adds those that depend on the settings."""
KL_METRICS = (_LEARNER + "curr_kl_coeff",)
"""Reported with ppo.use_kl_loss."""
TEACHER_METRICS = (_LEARNER + "distill_kl", _LEARNER + "distill_coeff")
"""Reported when PPO distils toward the pretrained selector (ppo.use_pretrained)."""
ADAPTIVE_METRICS = (_LEARNER + "student_return_ema",)
"""Reported with a teacher and ppo.distill_schedule 'adaptive'."""
NATURAL_METRICS = tuple(_LEARNER + k for k in ("natural_accepted", "natural_step_kl", "natural_improvement",
                                               "natural_backtracks"))
"""Reported with ppo.update 'natural'."""
VAL_METRICS = ("val/selection_accuracy", "val/iteration")
"""The validation scores every trial reports (memsel.tune_jobs.trial)."""
ANSWER_METRICS = ("val/answer_accuracy",)
"""Reported with env.reward_mode 'answer' and env.reader 'learned'."""


def check(cfg: Config, stage: str, mode: str = "new") -> None:
    """Every check that applies to ``stage`` (one of :data:`STAGES`) before it computes or writes anything;
    raises ConfigError, FileNotFoundError or ValueError with a one-line message. ``mode``: what ``memsel tune``
    does with a sweep the run directory holds (memsel.tune_jobs.sweep.MODES)."""
    if stage == "tune":
        from memsel.tune_jobs.sweep import check_mode

        check_mode(cfg, "tune", mode)
    check_data(cfg)
    if stage in PPO_STAGES:
        check_metric(cfg, stage)
        check_resources(cfg, stage)
    check_reader(cfg)
    check_device(cfg)
    check_prerequisites(cfg, stage)


# --------------------------------------------------------------------------- data and seed

def check_data(cfg: Config) -> None:
    """``data.path`` names bAbI files that exist and parse, the run directory's data if it has some,
    and the run directory was prepared with ``cfg.seed``."""
    from memsel.data.prepare import check_run_seed, check_same_data, haystack_sources

    check_run_seed(cfg)
    d = cfg.data
    haystack = haystack_sources(cfg)  # reads the background: a missing or empty one is refused here
    if d.dataset_name != "babi" or not d.path:
        return
    from memsel.data.babi import find_task_files, read_splits

    try:
        train, test = find_task_files(d.path, d.task)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"data.path (--data): {e}") from None
    check_same_data(cfg, {**read_splits(train, test).sources, **haystack})


# --------------------------------------------------------------------------- names

def reported_metrics(cfg: Config) -> tuple[str, ...]:
    """The result keys a PPO trial of ``cfg`` reports, the names ``tune.metric`` may take."""
    p = cfg.ppo
    keys = list(RESULT_METRICS) + list(VAL_METRICS)
    if cfg.env.reward_mode == "answer" and cfg.env.reader == "learned":
        keys += ANSWER_METRICS
    if p.use_kl_loss:
        keys += KL_METRICS
    if p.use_pretrained:
        keys += TEACHER_METRICS
        if p.distill_schedule == "adaptive":
            keys += ADAPTIVE_METRICS
    if p.update == "natural":
        keys += NATURAL_METRICS
    return tuple(keys)


def check_metric(cfg: Config, stage: str) -> None:
    """``tune.metric`` (which ranks the trials of ``train`` and ``tune``) is a result key they report."""
    metric, known = cfg.tune.resolved_metric(cfg.env), reported_metrics(cfg)
    stops = [k for k in cfg.tune.stop if k not in known]
    if stops:
        raise ConfigError(f"field 'tune.stop.{stops[0]}': not a result `memsel {stage}` reports with these "
                          f"settings; expected one of {', '.join(known)}")
    if metric in known:
        return
    close = difflib.get_close_matches(metric, known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
            else f"expected one of {', '.join(known)}")
    raise ConfigError(f"field 'tune.metric': {metric!r} is not a result `memsel {stage}` reports with these "
                      f"settings; {hint}")


# --------------------------------------------------------------------------- plug-ins

def check_reader(cfg: Config) -> None:
    """A ``package.module:factory`` answer reader imports, builds and answers a two-memory sample."""
    spec = cfg.env.reader
    if ":" not in spec:
        return  # a registered name: config validation checked it; 'learned' is a prerequisite below
    import numpy as np

    from memsel.env import make_reader

    try:
        reader = make_reader(spec, None, field="field 'env.reader'")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    except Exception as e:  # the factory is user code: any error means it cannot serve the run
        raise ConfigError(f"field 'env.reader': {spec!r} failed when called: {type(e).__name__}: {e}") from None
    memories, query = np.array([[2, 3, 0], [4, 5, 0]], dtype=np.int64), np.array([6, 0, 0], dtype=np.int64)
    try:
        reader(memories, [0], query)
    except Exception as e:
        raise ConfigError(f"field 'env.reader': the reader {spec!r} failed on a two-memory sample: "
                          f"{type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------- resources

def local_cpus() -> int:
    """The CPUs a local Ray started by memsel will have: ``ray.init`` counts the machine's."""
    return os.cpu_count() or 1


def check_resources(cfg: Config, stage: str) -> None:
    """A PPO trial (1 CPU, plus 1 per env runner) fits the local Ray; more concurrent trials than fit
    only queue, and are reported as a warning."""
    if cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        log.debug("preflight: joining a Ray cluster; its resources are not checked before it is joined")
        return
    cpus = local_cpus()
    per_trial = cfg.ppo.num_env_runners + 1
    if per_trial > cpus:
        raise ConfigError(f"field 'ppo.num_env_runners': {cfg.ppo.num_env_runners} env runners need {per_trial} "
                          f"CPUs with the trial's own, but the local Ray has {cpus}; expected at most {cpus - 1} "
                          "(0 samples in the trial's process), or --ray-address of a larger cluster")
    trials = cfg.tune.max_concurrent_trials
    if stage in ("tune", "pipeline") and cfg.tune.num_samples > 0 and trials * per_trial > cpus:
        log.warning("tune.max_concurrent_trials %d: %d trials of %d CPU(s) each do not fit the local Ray's %d "
                    "CPUs; Tune will run %d at a time", trials, trials, per_trial, cpus, max(1, cpus // per_trial))


def check_device(cfg: Config) -> None:
    """A GPU that ``device`` names is one torch sees ('auto' and 'cpu' always run)."""
    if cfg.device in ("auto", "cpu"):
        return  # spares the torch import
    from memsel.devices import torch_device

    torch_device(cfg.device)


# --------------------------------------------------------------------------- prerequisites

def check_prerequisites(cfg: Config, stage: str) -> None:
    """The files a stage starts from exist (or the stage before it in the pipeline will write them)."""
    layout, run = cfg.layout, cfg.run_path
    if stage == "tune" and cfg.tune.num_samples == 0:
        raise ConfigError("field 'tune.num_samples': expected an integer >= 1 for `memsel tune` (0 only tells "
                          "`memsel pipeline` to skip the sweep)")
    # A sweep of pipeline trials pretrains in every trial: it starts from nothing the run directory holds.
    pretrains = stage == "pipeline" or (stage == "tune" and cfg.tune.trial == "pipeline")
    uses_run_pretraining = stage in ("train", "tune") and not pretrains
    if uses_run_pretraining and cfg.ppo.use_pretrained and not layout.pretrained_selector.is_file():
        raise FileNotFoundError(f"{layout.pretrained_selector}: no pretrained selector; run `memsel pretrain "
                                f"--run-dir {run}` first, or set ppo.use_pretrained=false to train from scratch")
    if cfg.env.reward_mode == "answer" and cfg.env.reader == "learned":
        if uses_run_pretraining and not layout.reader.is_file():
            raise FileNotFoundError(f"{layout.reader}: env.reader 'learned' needs the answer reader that "
                                    "pretraining trains; run `memsel pretrain` with pretrain.answer_weight > 0 first")
        if pretrains and cfg.pretrain.answer_weight <= 0:
            raise ConfigError("field 'pretrain.answer_weight': env.reader 'learned' needs the answer reader that "
                              f"pretraining trains; expected a number > 0, got {cfg.pretrain.answer_weight}")
    if stage == "evaluate":
        check_trained_run(cfg)
    if cfg.env.budget_strategy == "managed" and stage != "pipeline":
        from memsel.manager.budget import with_run_manager

        manager = Path(with_run_manager(cfg).env.budget_options["manager"])
        if not manager.is_file():
            raise FileNotFoundError(f"{manager}: env.budget_strategy 'managed' needs a trained memory manager; run "
                                    f"`memsel manager train --run-dir {run}` (or `memsel pipeline`) first")


def check_trained_run(cfg: Config) -> None:
    """``evaluate``'s run directory exists, holds prepared data and at least one trained selector."""
    from memsel.pipeline import SELECTOR_FOLDERS

    layout, run = cfg.layout, cfg.run_path
    hint = "check --run-dir / --name, or train one first (`memsel pretrain` or `memsel pipeline`)"
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory to evaluate; {hint}")
    if not layout.sources.is_file():
        raise FileNotFoundError(f"{run}: not a trained run (no prepared data in {layout.data}); {hint}")
    selectors = [layout.selector(folder) for _, folder in SELECTOR_FOLDERS]
    if not any(p.is_file() for p in selectors):
        names = ", ".join(str(p.relative_to(run)) for p in selectors)
        raise FileNotFoundError(f"{run}: no trained selector to evaluate (none of {names}); {hint}")
