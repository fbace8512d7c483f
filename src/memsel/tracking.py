"""Everything MLflow, in one place: Lightning's logger, evaluation runs, the helpers Tune's callback
(memsel.tune_jobs.tracker: a parent run per sweep, a child run per trial) builds on.

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
from memsel.lifecycle import register_run

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def run_tags(cfg: Config, stage: str) -> dict[str, str]:
    return {"memsel.run": cfg.name, "memsel.stage": stage, "memsel.seed": str(cfg.seed),
            "memsel.run_dir": str(cfg.run_path)}


def config_params(cfg: Config) -> dict[str, str]:
    return {f"memsel.{k}": str(v)[:_MAX_PARAM_LEN] for k, v in cfg.flat().items()}


def client(cfg: Config) -> MlflowClient:
    return MlflowClient(tracking_uri=cfg.resolved_tracking_uri)


def artifact_root(cfg: Config) -> str | None:
    """Where the run directory's MLflow artifacts go: ``<run_dir>/mlartifacts`` for a local store
    (without it, MLflow would put them in ``./mlruns`` of whatever folder the command ran in); None
    for a tracking server, which keeps its own."""
    if cfg.resolved_tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return cfg.layout.artifacts.resolve().as_uri()


def experiment_name(cfg: Config) -> str:
    """The MLflow experiment of this run directory: ``cfg.experiment``, unless the store already has
    that experiment with its artifacts elsewhere (a store shared by run directories, or one created
    before artifacts were kept in the run directory): then ``<experiment> @ <run dir>``."""
    root = artifact_root(cfg)
    if root is None:
        return cfg.experiment
    exp = client(cfg).get_experiment_by_name(cfg.experiment)
    if exp is None or exp.artifact_location == root:
        return cfg.experiment
    return f"{cfg.experiment} @ {cfg.run_path.resolve()}"


def experiment_id(cfg: Config) -> str:
    """The id of :func:`experiment_name`'s experiment, created (artifacts under :func:`artifact_root`) if needed."""
    from mlflow.exceptions import MlflowException

    c, name = client(cfg), experiment_name(cfg)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root(cfg))
    except MlflowException:  # another process created it meanwhile
        return c.get_experiment_by_name(name).experiment_id


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
    logger = MLFlowLogger(experiment_name=experiment_name(cfg), tracking_uri=cfg.resolved_tracking_uri,
                          run_name=f"{cfg.name}/{stage}", tags=run_tags(cfg, stage), log_model=True,
                          artifact_location=artifact_root(cfg))
    register_run(logger.run_id)
    log_config(logger.experiment, logger.run_id, cfg)
    return logger


_TRACKED_TOP = ("env_runners", "learners", "val", "num_env_steps_sampled_lifetime", "training_iteration",
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
    register_run(rid)
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
        return f"open {uri} in a browser (experiment '{experiment_name(cfg)}')"
    return f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000   # then open http://127.0.0.1:5000"
