"""What a report is made of, read from MLflow: the runs of a run directory or of an experiment, each with
its role (pretrain, ppo, sweep, trial, evaluate), seed, run folder and the metric histories the figures draw.

memsel tags every run (memsel.tracking.run_tags): ``memsel.stage``, ``memsel.seed``, ``memsel.run_dir``;
a sweep's parent run has ``memsel.role = sweep`` and its trials ``mlflow.parentRunId``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PPO_CURVES = {
    "return": "env_runners/episode_return_mean",
    "val_accuracy": "val/selection_accuracy",
    "ppo_kl": "learners/default_policy/mean_kl_loss",
    "distill_kl": "learners/default_policy/distill_kl",
    "distill_weight": "learners/default_policy/distill_coeff",
}
"""Curve name -> the metric of a PPO run (a ``memsel train`` run or a sweep's trial) it is drawn from."""
PRETRAIN_CURVES = {"val_accuracy": "val/selection_accuracy", "train_loss": "train/loss", "val_loss": "val/loss"}
"""Curve name -> the metric of a Lightning pretraining run (one value per epoch)."""
HP_PREFIX = "hp/"
"""PBT's schedules: a PBT trial logs its current value of every searched field as ``hp/<field>`` each iteration."""


@dataclass
class RunRecord:
    """One MLflow run as the report sees it."""

    run_id: str
    name: str
    role: str
    """pretrain | ppo (a single PPO run) | sweep (a sweep's parent) | trial (a sweep's trial) | evaluate | other."""
    stage: str
    seed: str
    run_dir: str
    label: str
    """What the figures call it: the trial id for a trial, the stage otherwise."""
    parent: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    """A trial's sampled values (its MLflow params); empty for other runs, whose params are the whole config."""
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Curve name -> [(step, value), ...]: a PPO run's training iteration, pretraining's epoch (1-based)."""


@dataclass
class Collection:
    """The runs of one report and where they came from."""

    tracking_uri: str
    experiment: str
    runs: list[RunRecord]

    def by_role(self, *roles: str) -> list[RunRecord]:
        return [r for r in self.runs if r.role in roles]

    def run_dirs(self) -> list[Path]:
        """The run folders the runs name that exist here, in seed order (attention heatmaps, results tables)."""
        seen: dict[str, str] = {}
        for r in sorted(self.runs, key=lambda r: (_seed_key(r.seed), r.run_dir)):
            if r.run_dir and r.run_dir not in seen and Path(r.run_dir).is_dir():
                seen[r.run_dir] = r.seed
        return [Path(d) for d in seen]

    def seeds(self) -> list[str]:
        return sorted({r.seed for r in self.runs}, key=_seed_key)


def _seed_key(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def role_of(tags: dict[str, str]) -> str:
    """A run's role from memsel's tags (see the module docstring)."""
    stage = tags.get("memsel.stage", "")
    if tags.get("memsel.role") == "sweep":
        return "sweep"
    if stage in ("pretrain", "evaluate"):
        return stage
    if "memsel.trial_id" in tags:
        return "trial" if tags.get("mlflow.parentRunId") else "ppo"
    return "other"


def _history(client, run_id: str, key: str, per_epoch: bool) -> list[tuple[int, float]]:
    """A metric's values by step, the last value of a step kept (a resumed trial repeats steps); with
    ``per_epoch`` (Lightning logs at its global step) the steps become epochs 1, 2, ..."""
    by_step: dict[int, float] = {}
    for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
        by_step[int(m.step)] = float(m.value)
    points = sorted(by_step.items())
    return [(i + 1, v) for i, (_, v) in enumerate(points)] if per_epoch else points


def record_of(client, run) -> RunRecord:
    """A :class:`RunRecord` with the histories its role draws (only the metrics the run has)."""
    tags = dict(run.data.tags)
    role = role_of(tags)
    stage = tags.get("memsel.stage", "")
    rec = RunRecord(run.info.run_id, run.info.run_name or run.info.run_id, role, stage, tags.get("memsel.seed", "?"),
                    tags.get("memsel.run_dir", ""), tags.get("memsel.trial_id", stage) if role == "trial" else stage,
                    tags.get("mlflow.parentRunId"), tags,
                    {k: v for k, v in run.data.params.items() if not k.startswith("memsel.")} if role == "trial" else {})
    present = set(run.data.metrics)
    wanted = PRETRAIN_CURVES if role == "pretrain" else PPO_CURVES if role in ("ppo", "trial") else {}
    for name, key in wanted.items():
        if key in present:
            rec.histories[name] = _history(client, rec.run_id, key, per_epoch=role == "pretrain")
    for key in sorted(k for k in present if k.startswith(HP_PREFIX)):
        rec.histories[key] = _history(client, rec.run_id, key, per_epoch=False)
    return rec


def collect(tracking_uri: str, experiment: str, run_dir: Path | None = None) -> Collection:
    """The runs of ``experiment`` at ``tracking_uri`` (with ``run_dir``: only that run directory's).

    Raises ValueError naming what exists when the experiment, or the run directory's runs, are not there.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"report: no MLflow experiment {experiment!r} at {tracking_uri} (there: {names})")
    runs = client.search_runs([exp.experiment_id], max_results=5000, order_by=["attributes.start_time ASC"])
    runs = [r for r in runs if "memsel.stage" in r.data.tags]
    if run_dir is not None:
        here = Path(run_dir).resolve()
        runs = [r for r in runs if r.data.tags.get("memsel.run_dir") and Path(r.data.tags["memsel.run_dir"]).resolve() == here]
    if not runs:
        raise ValueError(f"report: experiment {experiment!r} at {tracking_uri} holds no memsel runs"
                         + (f" of run directory {run_dir}" if run_dir is not None else ""))
    records = [record_of(client, r) for r in runs]
    log.info("report: %d MLflow runs of experiment %r (%s)", len(records), experiment,
             ", ".join(f"{n} {role}" for role, n in _counts(records).items()))
    return Collection(tracking_uri, experiment, records)


def _counts(records: list[RunRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.role] = out.get(r.role, 0) + 1
    return out
