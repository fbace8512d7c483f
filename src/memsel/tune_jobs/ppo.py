"""PPO fine-tuning and hyperparameter sweeps, both run by Ray Tune.

``memsel train`` is a Tune experiment with one trial and no search; ``memsel tune`` draws
``tune.num_samples`` trials from ``tune.search_space`` with the search algorithm ``tune.search_alg``
and stops the weak ones early with the scheduler ``tune.scheduler`` (ASHA by default).
Both log every trial to MLflow through one callback and keep Tune's checkpoints, so that either
runs unchanged on a laptop's local Ray or on a cluster (``--ray-address``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search import Searcher

from memsel.config import Config, TuneSettings
from memsel.data.encode import DataSpec, EncodedSamples
from memsel.files import write_text_atomic
from memsel.inference import vocabulary_of_run
from memsel.rl import RLLIB_KEYS, build_ppo_config
from memsel.tracking import log_trial_checkpoint, tune_callback
from memsel.tune_jobs.schedulers import make_scheduler
from memsel.tune_jobs.search import make_search_alg

log = logging.getLogger(__name__)

MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / "default_policy"


@dataclass
class PPOOutcome:
    """What a train or tune experiment left behind."""

    selector_path: Path
    """The fine-tuned selector (best trial's), as a memsel selector file."""
    checkpoint: str
    """The RLlib checkpoint it came from."""
    best_config: dict[str, Any]
    """The searched PPO fields of the best trial (empty for a plain train run)."""
    curve: list[dict[str, float]] = field(default_factory=list)
    """Per iteration of the best trial: iteration, env steps, return, mean KL, distillation KL, entropy
    (and the natural update's step KL)."""
    trials: list[dict[str, Any]] = field(default_factory=list)
    """Every trial: its searched fields, last return and iterations run."""


def search_space(settings: TuneSettings) -> dict[str, Any]:
    """memsel's ``tune.search_space`` spec -> Tune sampler objects, keyed by ppo field."""
    makers = {"choice": lambda a: tune.choice(a), "grid": lambda a: tune.grid_search(a),
              "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
              "randint": lambda a: tune.randint(*a)}
    return {key: makers[kind](args) for key, spec in settings.search_space.items() for kind, args in spec.items()}


_CURVE_KEYS = {
    "return": "env_runners/episode_return_mean",
    "mean_kl_loss": "learners/default_policy/mean_kl_loss",
    "distill_kl": "learners/default_policy/distill_kl",
    "entropy": "learners/default_policy/entropy",
    "step_kl": "learners/default_policy/natural_step_kl",  # ppo.update natural only
}


def metric_value(metrics: dict | None, key: str) -> float | None:
    """``a/b/c`` -> metrics["a"]["b"]["c"] (Tune's results are nested; its metric names are flat)."""
    node: Any = metrics or {}
    if key in node:
        return node[key]
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class ProgressCallback(tune.Callback):
    """One log line per trial iteration: enough to follow a run without Tune's wide tables."""

    def __init__(self, stage: str, iterations: int):
        self.stage, self.iterations = stage, iterations

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        parts = [f"{name} {metric_value(result, key):.4f}" for name, key in _CURVE_KEYS.items()
                 if isinstance(metric_value(result, key), (int, float))]
        log.info("%s %s iter %d/%d  %s", self.stage, trial.trial_id, result.get("training_iteration", 0),
                 self.iterations, "  ".join(parts))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.error("%s %s failed: %s", self.stage, trial.trial_id, trial_error(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning("%s %s failed, restarting it (tune.max_failures): %s", self.stage, trial.trial_id,
                    trial_error(trial))


def trial_error(trial: Any) -> str:
    """A failed trial, told by itself: the last line of its error and where its full log is."""
    error_file = getattr(trial, "error_file", None) or Path(trial.local_path or "") / "error.txt"
    return _error_line(Path(error_file), trial.local_path)


def _error_line(error_file: Path, trial_dir: Any) -> str:
    text = ""
    with contextlib.suppress(OSError):
        text = error_file.read_text(encoding="utf-8", errors="replace")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return f"{lines[-1].strip() if lines else 'no error text'} (full error: {error_file}; trial log: {trial_dir})"


def _check_complete(grid: Any, stage: str) -> None:
    """Refuse to export from a sweep that did not end: a signal, a failed trial, a trial left unfinished."""
    from memsel.lifecycle import Interrupted, StageFailed, received_signal

    sig = received_signal()
    if sig:
        raise Interrupted(sig)
    failed = [r for r in grid if r.error is not None]
    if failed:
        trial_dir = Path(failed[0].path)
        raise StageFailed(f"{stage}: {len(failed)} of {len(grid)} trial(s) failed; trial {trial_dir.name}: "
                          f"{_error_line(trial_dir / 'error.txt', trial_dir)}")
    unfinished = len(grid) - grid.num_terminated
    if unfinished:
        raise StageFailed(f"{stage}: the sweep ended with {unfinished} of {len(grid)} trial(s) unfinished; "
                          "nothing exported")


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


def export_selector_from_checkpoint(checkpoint_dir: str | Path, dest: Path,
                                    vocab: list[str] | None = None) -> Path:
    """Read the RLModule out of an RLlib checkpoint and save its bare selector (and ``vocab``) as a memsel file."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(str(Path(checkpoint_dir) / MODULE_SUBDIR))
    module.selector.vocab = vocab
    return module.selector.save(dest)


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


def run_ppo(cfg: Config, train_npz: str, spec: DataSpec, pretrained: Path | None, sweep: bool,
            teacher_return: float | None = None, stage: str | None = None) -> PPOOutcome:
    """Run PPO through Tune (one trial, or a sweep) and export the best trial's selector.

    ``teacher_return``: the pretrained policy's expected return on the env's view of the data (what
    the adaptive distillation weight compares the student with); None = computed on ``train_npz``.
    ``stage``: the folder (and MLflow run name) it writes; default ``tune`` or ``ppo``.
    """
    stage = stage or ("tune" if sweep else "ppo")
    iterations = (cfg.tune.iterations or cfg.ppo.iterations) if sweep else cfg.ppo.iterations
    space = search_space(cfg.tune) if sweep else {}
    # Samplers stand in for the searched fields; the PPOConfig builder passes them through and
    # Tune resolves them per trial.
    ppo = dataclasses.replace(cfg.ppo, **space)
    if teacher_return is None and pretrained and cfg.ppo.use_pretrained:
        teacher_return = pretrained_return(cfg, pretrained, EncodedSamples.load(train_npz))
    ppo_config = build_ppo_config(dataclasses.replace(cfg, ppo=ppo), train_npz, spec, pretrained, teacher_return)
    metric = cfg.tune.metric
    search_alg = make_search_alg(cfg.tune) if sweep else None
    tune_config = tune.TuneConfig(
        metric=metric, mode="max", num_samples=cfg.tune.num_samples if sweep else 1,
        # Tune limits a Searcher by wrapping it; a SearchGenerator (random search) limits itself.
        max_concurrent_trials=cfg.tune.max_concurrent_trials if isinstance(search_alg, Searcher) else None,
        scheduler=make_scheduler(cfg.tune, iterations) if sweep else None, search_alg=search_alg)
    run_config = tune.RunConfig(
        name=stage, storage_path=str(cfg.layout.ray_results), stop={"training_iteration": iterations},
        callbacks=[tune_callback(cfg, stage), ProgressCallback(stage, iterations)], verbose=0,
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=cfg.ppo.checkpoint_every,
                                                checkpoint_at_end=True, num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures))
    grid = tune.Tuner(ppo_config.algo_class, param_space=ppo_config, tune_config=tune_config,
                      run_config=run_config).fit()
    _check_complete(grid, stage)
    best = grid.get_best_result(metric=metric, mode="max", scope="last")
    if best.checkpoint is None:
        raise RuntimeError(f"{stage}: the best trial left no checkpoint under {cfg.layout.ray_results}")
    dest = cfg.layout.selector(stage)
    export_selector_from_checkpoint(best.checkpoint.path, dest, vocabulary_of_run(cfg.run_path))
    searched = {k: _lookup(best.config, k) for k in space}
    trials = []
    for r in grid:
        if r.checkpoint is not None:
            log_trial_checkpoint(cfg, r.metrics["trial_id"], r.checkpoint.path,
                                 dest if r.path == best.path else None)
        trials.append({**{k: _lookup(r.config, k) for k in space},
                       "return": metric_value(r.metrics, metric),
                       "iterations": metric_value(r.metrics, "training_iteration")})
    outcome = PPOOutcome(dest, best.checkpoint.path, searched, _curve(best), trials)
    write_text_atomic(cfg.layout.outcome(stage), json.dumps(
        {**dataclasses.asdict(outcome), "selector_path": str(dest)}, indent=2, default=str))
    log.info("%s: best trial %s -> %s", stage, searched or "(no search)", dest)
    return outcome


def _lookup(trial_config: dict, ppo_field: str) -> Any:
    """Where a ppo field sits in the RLlib config dict of a trial: RLlib's own key for the settings RLlib
    reads (the value it trained with), else the learner's copy of the ppo settings."""
    key = RLLIB_KEYS.get(ppo_field, ppo_field)
    if key in trial_config:
        return trial_config[key]
    return trial_config.get("learner_config_dict", {}).get("ppo", {}).get(ppo_field)
