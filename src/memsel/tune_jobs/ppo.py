"""PPO fine-tuning and hyperparameter sweeps, both run by Ray Tune.

``memsel train`` is a Tune experiment with one trial and no search; ``memsel tune`` draws
``tune.num_samples`` trials from ``tune.search_space`` with the search algorithm ``tune.search_alg``
(random, grid, optuna) and the scheduler ``tune.scheduler`` (asha, pbt, none). Each trial is a
:class:`memsel.tune_jobs.trial.MemselTrial`: its data and teacher reach it through Ray's object
store, its checkpoints go to ``tune.storage_path``, and it reports its validation score, which
ranks, stops and exploits trials. MLflow gets a parent run per sweep and a child run per trial
(memsel.tune_jobs.tracker); the best trial's selector is exported to ``<run_dir>/<stage>/selector.pt``
and, after a sweep, registered as a new version of ``memsel-<name>`` (memsel.model_registry).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search import Searcher

from memsel.config import Config, TuneSettings
from memsel.data.encode import EncodedSamples
from memsel.files import write_text_atomic
from memsel.tune_jobs import report, sweep
from memsel.tune_jobs.schedulers import make_scheduler
from memsel.tune_jobs.search import make_search_alg
from memsel.tune_jobs.trial import SELECTOR_FILE, build_payload, trainable
from memsel.tune_configs import SCHEDULERS

log = logging.getLogger(__name__)

MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"
"""Where an RLlib Algorithm checkpoint keeps the RLModule (``RLModule.from_checkpoint(ckpt / MODULE_SUBDIR)``)."""


@dataclass
class PPOOutcome:
    """What a train or tune experiment left behind."""

    selector_path: Path
    """The fine-tuned selector (best trial's), as a memsel selector file."""
    checkpoint: str
    """The checkpoint it came from (RLlib's algorithm state and the trial's selector)."""
    best_config: dict[str, Any]
    """The searched fields of the best trial, dotted (empty for a plain train run)."""
    curve: list[dict[str, float]] = field(default_factory=list)
    """Per iteration of the best trial: iteration, env steps, return, mean KL, distillation KL, entropy,
    validation score (and the natural update's step KL)."""
    trials: list[dict[str, Any]] = field(default_factory=list)
    """Every trial (memsel.tune_jobs.report.trial_rows): id, status, iterations, metric, sampled values, node,
    MLflow run, error."""
    summary: dict[str, Any] = field(default_factory=dict)
    """The sweep: id, attempt, metric, counts, best trial, registered model."""


_MAKERS = {"choice": tune.choice, "grid": tune.grid_search, "uniform": lambda a: tune.uniform(*a),
           "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}


def search_space(settings: TuneSettings) -> dict[str, Any]:
    """memsel's ``tune.search_space`` spec -> Tune samplers keyed by dotted field (``ppo.lr``); with search_alg
    ``grid`` every choice is a grid axis."""
    out = {}
    for key, spec in settings.search_space.items():
        kind, args = next(iter(spec.items()))
        if settings.search_alg == "grid" and kind == "choice":
            kind = "grid"
        out[key] = _MAKERS[kind](args)
    return out


_CURVE_KEYS = {
    "return": "env_runners/episode_return_mean",
    "mean_kl_loss": "learners/default_policy/mean_kl_loss",
    "distill_kl": "learners/default_policy/distill_kl",
    "entropy": "learners/default_policy/entropy",
    "step_kl": "learners/default_policy/natural_step_kl",  # ppo.update natural only
    "val_selection_accuracy": "val/selection_accuracy",
    "val_answer_accuracy": "val/answer_accuracy",
}


def _curve(result: Any) -> list[dict[str, float]]:
    df = result.metrics_dataframe
    if df is None or df.empty:
        return []
    rows = []
    for _, r in df.iterrows():
        row = {"iteration": int(r["training_iteration"]),
               "env_steps": float(r.get("num_env_steps_sampled_lifetime", float("nan")))}
        for name, key in _CURVE_KEYS.items():
            if key in df.columns:
                row[name] = float(r[key])
        rows.append(row)
    return rows


def expected_return(selector_path: Path, data: EncodedSamples) -> float:
    """Mean reward per episode of a policy that samples from the selector's softmax (one selection)."""
    import torch

    from memsel.network import Selector

    with torch.no_grad():
        probs = torch.softmax(Selector.load(selector_path)({k: torch.from_numpy(v) for k, v in data.tensors().items()}),
                              dim=-1).numpy()
    return float((probs * data.support).sum(1).mean())


def pretrained_return(cfg: Config, selector_path: Path, data: EncodedSamples) -> float:
    """The pretrained policy's return on ``data`` (the env's view of the train split), what the
    adaptive distillation weight compares the student with: the exact expectation of sampling it for
    one-hop supporting rewards, else its greedy score (exact match, or answer accuracy for
    reward_mode 'answer' with a learned reader)."""
    from memsel.evaluate import selector_scores
    from memsel.network import Selector

    if cfg.env.hops == 1 and cfg.env.reward_mode == "supporting":
        return expected_return(selector_path, data)
    reader = None
    if cfg.env.reward_mode == "answer" and cfg.env.reader == "learned":
        from memsel.reader import AnswerReader

        reader = AnswerReader.load(cfg.layout.reader)
    scores = selector_scores(Selector.load(selector_path), data, cfg.env.hops, reader, device=cfg.device)
    return float(scores["answer_accuracy"] if reader is not None else scores["selection_accuracy"])


def planned_trials(cfg: Config) -> int:
    """How many trials a sweep draws: ``tune.num_samples`` times the size of every grid axis (a ``grid`` field, or
    every ``choice`` with search_alg grid: Tune repeats the grid num_samples times); a time budget may end it sooner."""
    trials = cfg.tune.num_samples
    for spec in cfg.tune.search_space.values():
        kind, args = next(iter(spec.items()))
        if kind == "grid" or (kind == "choice" and cfg.tune.search_alg == "grid"):
            trials *= len(args)
    return max(trials, 1)


@dataclass
class _Plan:
    """One train or tune experiment, as decided before Tune starts."""

    cfg: Config
    stage: str
    sweep: bool
    iterations: int
    metric: str
    searched: list[str]
    state: sweep.SweepState
    fit_wall_s: float = 0.0
    """Seconds Tune's fit took (this attempt), for the summary and `memsel bench tune`."""


def run_ppo(cfg: Config, data_files: dict[str, str], sweep_: bool = False, stage: str | None = None,
            mode: str = "fresh") -> PPOOutcome:
    """Run PPO through Tune (one trial, or a sweep) and export the best trial's selector.

    ``data_files``: the prepared splits (``train_npz``, ``val_npz``); ``stage``: the folder (and MLflow run
    name) it writes, default ``tune`` or ``ppo``; ``mode``: what to do with a sweep the run directory
    already holds (memsel.tune_jobs.sweep.MODES).
    """
    from memsel.tune_jobs.tracker import SweepTracker

    stage = stage or ("tune" if sweep_ else "ppo")
    iterations = (cfg.tune.iterations or cfg.ppo.iterations) if sweep_ else cfg.ppo.iterations
    searched = list(cfg.tune.search_space) if sweep_ else []
    plan = _Plan(cfg, stage, sweep_, iterations, cfg.tune.resolved_metric(cfg.env), searched,
                 sweep.begin(cfg, stage, mode))
    if sweep_:
        _open_parent(plan)
    tracker = SweepTracker(cfg, stage, plan.state.sweep_id, plan.state.attempt, searched, plan.state.parent_run_id,
                           track_mutations=sweep_ and cfg.tune.scheduler == "pbt")
    callbacks = [tracker, report.ProgressCallback(stage, iterations, plan.metric),
                 report.IterationBar(stage, planned_trials(cfg) * iterations if sweep_ else iterations, iterations,
                                     plan.metric)]
    payload = build_payload(cfg, data_files, iterations, searched)
    log.info("%s: %s %s, attempt %d, trials write to %s", stage, "sweep" if sweep_ else "run", plan.state.sweep_id,
             plan.state.attempt, plan.state.path)
    started = time.perf_counter()
    grid = _tuner(plan, payload, callbacks).fit()
    plan.fit_wall_s = time.perf_counter() - started
    return _conclude(plan, grid)


def _open_parent(plan: _Plan) -> None:
    from memsel.tracking import client, log_config
    from memsel.tune_jobs.tracker import open_run

    cfg, state = plan.cfg, plan.state
    tags = {"memsel.sweep_id": state.sweep_id, "memsel.attempt": str(state.attempt), "memsel.role": "sweep",
            "memsel.search_alg": cfg.tune.search_alg, "memsel.scheduler": cfg.tune.scheduler,
            "memsel.metric": plan.metric}
    rid = open_run(cfg, plan.stage, tags, f"{cfg.name}/{plan.stage}",
                   {"memsel.sweep_id": state.sweep_id, "memsel.role": "sweep"})
    if state.parent_run_id != rid:
        log_config(client(cfg), rid, cfg)
        state.parent_run_id = rid
        sweep.write_state(cfg, plan.stage, state)


def _tuner(plan: _Plan, payload: Any, callbacks: list) -> tune.Tuner:
    cfg, train = plan.cfg, trainable(plan.cfg, payload)
    if plan.state.resuming:
        # Tune restores the sweep's own (pickled) callbacks; they read the new attempt from sweep.json.
        return tune.Tuner.restore(plan.state.path, train, resume_unfinished=True, resume_errored=True)
    space = search_space(cfg.tune) if plan.sweep else {}
    pbt = plan.sweep and cfg.tune.scheduler == "pbt"
    search_alg = make_search_alg(cfg.tune, cfg.seed) if plan.sweep else None
    mutations = {k: v for k, v in space.items() if k.startswith("ppo.")}
    # PBT exploits checkpoints: trials write one at every perturbation interval.
    every = SCHEDULERS.build_config("pbt", cfg.tune, cfg.tune.scheduler_options, "tune", "scheduler_options") \
        .perturbation_interval if pbt else cfg.ppo.checkpoint_every
    if plan.sweep and not every:
        # A sweep checkpoints as it goes, so that a killed one resumes and a time budget leaves something
        # to export: at the validation interval, at least every 5 iterations.
        every = max(cfg.tune.eval_every, 5)
    tune_config = tune.TuneConfig(
        metric=plan.metric, mode="max", num_samples=cfg.tune.num_samples if plan.sweep else 1,
        # Tune limits a Searcher by wrapping it; a SearchGenerator (random search) limits itself.
        max_concurrent_trials=cfg.tune.max_concurrent_trials if isinstance(search_alg, Searcher) else None,
        scheduler=make_scheduler(cfg.tune, plan.iterations, mutations) if plan.sweep else None,
        search_alg=search_alg, time_budget_s=(cfg.tune.time_budget_s or None) if plan.sweep else None)
    run_config = tune.RunConfig(
        name=plan.stage, storage_path=sweep.storage_root(cfg), callbacks=callbacks, verbose=0,
        stop={"training_iteration": plan.iterations, **({k: float(v) for k, v in cfg.tune.stop.items()}
                                                        if plan.sweep else {})},
        # PBT restores another trial's checkpoint a few seconds after choosing it: keep them all, or the
        # trial it copies may have deleted it meanwhile ("checkpoint does not exist on storage anymore").
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=every, checkpoint_at_end=True,
                                                num_to_keep=None if pbt else 2),
        failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures))
    return tune.Tuner(train, param_space=space, tune_config=tune_config, run_config=run_config)


def _check_ended(plan: _Plan, grid: Any, rows: list[dict]) -> None:
    """Refuse to export from an experiment that did not end: a signal, a trial left unfinished, no trial that
    finished; a plain train run also refuses a failed trial (a sweep reports its failed trials and goes on)."""
    from memsel.lifecycle import Interrupted, StageFailed, received_signal

    sig = received_signal()
    if sig:
        raise Interrupted(sig)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed and (not plan.sweep or len(failed) == len(rows)):
        raise StageFailed(f"{plan.stage}: {len(failed)} of {len(rows)} trial(s) failed; trial {failed[0]['trial_id']}: "
                          f"{failed[0]['error']}")
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if unfinished:
        hint = "; `memsel tune --resume` continues it" if plan.sweep else ""
        raise StageFailed(f"{plan.stage}: the experiment ended with {unfinished} of {len(grid)} trial(s) unfinished; "
                          f"nothing exported{hint}")
    if failed:
        log.warning("%s: %d of %d trials failed (listed in the summary); the best of the others is exported",
                    plan.stage, len(failed), len(rows))


def _best_with_checkpoint(plan: _Plan, ranked: list[dict], results: dict) -> dict:
    """The best-ranked trial that left a checkpoint (a trial the time budget stopped before its first has
    none: the next one is exported, and a warning says so)."""
    from memsel.lifecycle import StageFailed

    with_checkpoint = [row for row in ranked if results[row["trial_id"]].checkpoint is not None]
    if not with_checkpoint:
        raise StageFailed(f"{plan.stage}: no trial left a checkpoint under {plan.state.path} (stopped before "
                          "their first one: raise tune.time_budget_s, or checkpoint more often with "
                          "ppo.checkpoint_every)")
    if with_checkpoint[0] is not ranked[0]:
        log.warning("%s: the best trial %s left no checkpoint; exporting the best one that did, %s", plan.stage,
                    ranked[0]["trial_id"], with_checkpoint[0]["trial_id"])
    return with_checkpoint[0]


def _conclude(plan: _Plan, grid: Any) -> PPOOutcome:
    """Rank the trials, export the best one's selector, attach outputs to MLflow, write outcome.json."""
    from memsel.tune_jobs.tracker import attach_trial_outputs, finish_parent, runs_of_sweep

    cfg = plan.cfg
    runs = runs_of_sweep(cfg, plan.state.sweep_id)
    rows = report.trial_rows(grid, plan.metric, plan.searched, plan.iterations, runs)
    _check_ended(plan, grid, rows)
    results = {row["trial_id"]: r for row, r in zip(rows, grid)}
    best_row = _best_with_checkpoint(plan, report.ranked(rows), results)
    best = results[best_row["trial_id"]]
    dest = sweep.copy_from_checkpoint(best.checkpoint, SELECTOR_FILE, cfg.layout.selector(plan.stage))
    for row in rows:
        checkpoint = results[row["trial_id"]].checkpoint
        if row["mlflow_run_id"] and checkpoint is not None:
            attach_trial_outputs(cfg, row["mlflow_run_id"], checkpoint, dest if row is best_row else None)
    summary = {"stage": plan.stage, "sweep_id": plan.state.sweep_id, "attempt": plan.state.attempt,
               "metric": plan.metric, "experiment_path": plan.state.path, "selector": str(dest),
               "counts": {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped", "failed")},
               "trials_total": len(rows), "best": best_row, "trials": rows, "fit_wall_s": plan.fit_wall_s}
    if plan.sweep:
        summary.update(finish_parent(cfg, plan.stage, plan.state.parent_run_id, rows, plan.searched, plan.metric,
                                     best_row, dest))
    outcome = PPOOutcome(dest, best.checkpoint.path, dict(best_row["config"]), _curve(best), rows, summary)
    write_text_atomic(cfg.layout.outcome(plan.stage), json.dumps(
        {**dataclasses.asdict(outcome), "selector_path": str(dest)}, indent=2, default=str))
    log.info("%s: best trial %s %s -> %s", plan.stage, best_row["trial_id"], best_row["config"] or "(no search)", dest)
    return outcome
