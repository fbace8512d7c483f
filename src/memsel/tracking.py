"""Everything MLflow, in one place: Lightning's logger, Tune's callback, evaluation runs.

Every run carries the tags ``memsel.run`` (the run name), ``memsel.stage`` (pretrain, ppo, tune,
evaluate) and ``memsel.seed``, the full memsel config as ``memsel.*`` params and as an artifact
``memsel_config.yaml``, so that any run can be reproduced from what MLflow holds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from memsel.config import Config

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def run_tags(cfg: Config, stage: str) -> dict[str, str]:
    return {"memsel.run": cfg.name, "memsel.stage": stage, "memsel.seed": str(cfg.seed),
            "memsel.run_dir": str(cfg.run_path)}


def config_params(cfg: Config) -> dict[str, str]:
    return {f"memsel.{k}": str(v)[:_MAX_PARAM_LEN] for k, v in cfg.flat().items()}


def client(cfg: Config) -> MlflowClient:
    return MlflowClient(tracking_uri=cfg.resolved_tracking_uri)


def experiment_id(cfg: Config) -> str:
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    return exp.experiment_id if exp else c.create_experiment(cfg.experiment)


def log_config(c: MlflowClient, run_id: str, cfg: Config) -> None:
    """The full memsel config, as params (searchable) and as a YAML artifact (reusable with --config)."""
    from mlflow.entities import Param

    params = [Param(k, v) for k, v in config_params(cfg).items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run_id, params=params[i:i + 100])
    c.log_text(run_id, cfg.to_yaml(), "memsel_config.yaml")


def lightning_logger(cfg: Config, stage: str = "pretrain"):
    """An MLFlowLogger for Lightning, with checkpoints logged as artifacts."""
    from lightning.pytorch.loggers import MLFlowLogger

    experiment_id(cfg)  # create the experiment up front: concurrent creators race otherwise
    logger = MLFlowLogger(experiment_name=cfg.experiment, tracking_uri=cfg.resolved_tracking_uri,
                          run_name=f"{cfg.name}/{stage}", tags=run_tags(cfg, stage), log_model=True)
    log_config(logger.experiment, logger.run_id, cfg)
    return logger


_TRACKED_TOP = ("env_runners", "learners", "num_env_steps_sampled_lifetime", "training_iteration",
                 "time_this_iter_s", "time_total_s", "perf")
_NOISE = ("timer", "connector", "throughput", "weights_seq_no", "num_agent_steps", "num_module_steps",
          "num_trainable_parameters", "num_non_trainable_parameters")


def tracked_metrics(result: dict) -> dict[str, float]:
    """The numeric result keys worth a metric: returns, losses, KLs, coefficients, steps, time.

    RLlib reports ~300 numeric keys per iteration (the config, connector timers, throughputs);
    logging all of them to MLflow's SQLite store costs about a second per iteration, more than a
    PPO iteration here. They all stay in Tune's result.json next to the checkpoints.
    """
    from ray.tune.utils import flatten_dict

    flat = flatten_dict({k: v for k, v in result.items() if k in _TRACKED_TOP}, delimiter="/")
    return {k: float(v) for k, v in flat.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not any(n in k for n in _NOISE)}


def tune_callback(cfg: Config, stage: str):
    """Tune's MLflow callback: one MLflow run per trial, every numeric result key every iteration."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MemselMLflowLoggerCallback(MLflowLoggerCallback):
        """Adds memsel's own config to each trial's run, next to the RLlib config Tune logs, and
        logs the learning metrics of each result (see :func:`tracked_metrics`)."""

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=tracked_metrics(result),
                                         step=result["training_iteration"])

        def log_trial_start(self, trial: Any) -> None:
            new = trial not in self._trial_runs
            super().log_trial_start(trial)
            if new:
                c = MlflowClient(tracking_uri=cfg.resolved_tracking_uri)
                run_id = self._trial_runs[trial]
                # Readable names in the MLflow UI: <run>/<stage>/<trial id>.
                c.set_tag(run_id, "mlflow.runName", f"{cfg.name}/{stage}/{trial.trial_id}")
                c.set_tag(run_id, "memsel.trial_id", trial.trial_id)
                log_config(c, run_id, cfg)

    experiment_id(cfg)
    return MemselMLflowLoggerCallback(tracking_uri=cfg.resolved_tracking_uri, experiment_name=cfg.experiment,
                                      tags=run_tags(cfg, stage), save_artifact=True)


def log_trial_checkpoint(cfg: Config, trial_id: str, checkpoint_dir: str, selector: Path | None) -> None:
    """Attach a trial's final RLlib checkpoint (and the exported selector) to the trial's MLflow run."""
    c = client(cfg)
    runs = c.search_runs([experiment_id(cfg)], filter_string=f"tags.`memsel.trial_id` = '{trial_id}'",
                         max_results=1)
    if not runs:
        log.warning("no MLflow run found for trial %s; checkpoint not attached", trial_id)
        return
    rid = runs[0].info.run_id
    c.set_tag(rid, "memsel.checkpoint", checkpoint_dir)
    c.log_artifacts(rid, checkpoint_dir, "checkpoint")
    if selector is not None:
        c.log_artifact(rid, str(selector))


def flat_metrics(values: dict) -> dict[str, float]:
    """Numbers as they are, lists as ``name_1``, ``name_2``, ...; None and text left out."""
    out: dict[str, float] = {}
    for name, v in values.items():
        if isinstance(v, (list, tuple)):
            out.update({f"{name}_{i + 1}": float(x) for i, x in enumerate(v) if isinstance(x, (int, float))})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
    return out


def log_evaluation(cfg: Config, results: dict[str, dict[str, float]], artifacts: list[Path]) -> str:
    """One MLflow run with ``test/<method>/<metric>`` metrics and the result files; returns its id."""
    from mlflow.entities import Metric
    import time

    c = client(cfg)
    run = c.create_run(experiment_id(cfg), run_name=f"{cfg.name}/evaluate", tags=run_tags(cfg, "evaluate"))
    rid = run.info.run_id
    log_config(c, rid, cfg)
    now = int(time.time() * 1000)
    metrics = [Metric(f"test/{method}/{name}", value, now, 0)
               for method, values in results.items() for name, value in flat_metrics(values).items()]
    c.log_batch(rid, metrics=metrics)
    for path in artifacts:
        if Path(path).exists():
            c.log_artifact(rid, str(path))
    c.set_terminated(rid)
    return rid


def ui_hint(cfg: Config) -> str:
    """The command that opens this run's MLflow store in a browser."""
    uri = cfg.resolved_tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (experiment '{cfg.experiment}')"
    return f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000   # then open http://127.0.0.1:5000"
