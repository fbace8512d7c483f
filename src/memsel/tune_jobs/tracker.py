"""MLflow for ``memsel train`` and ``memsel tune``: one parent run per sweep, a nested child run per trial.

- The parent run (``<name>/tune``) holds the run's full config, the sweep's id and attempt, and when
  the sweep ends the best trial, its config, a top-k table, a plot of searched values against the
  metric, and the registered model (memsel.tune_jobs.sweep).
- Each trial's run is a child (tag ``mlflow.parentRunId``) whose params are the trial's sampled
  values; its metrics are the learning metrics and validation scores of every iteration.
- PBT's mutations never change a param (MLflow refuses, Ray issue 27783): each iteration logs the
  trial's current values as metrics ``hp/<field>``, and a mutation sets tags ``memsel.hp.<field>``.
- A resumed sweep writes into the runs its trials had: the runs are found by the tags
  ``memsel.sweep_id`` and ``memsel.trial_id``, reopened, and tagged with the attempt now writing
  (``memsel.attempt``; all of them in ``memsel.attempts``).
Every run this callback opens is registered with the command's lock (memsel.lifecycle), so Ctrl-C
marks it KILLED and a later command takes over one a SIGKILL left RUNNING.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ray import tune

from memsel.lifecycle import register_run
from memsel.tracking import client, experiment_id, log_config, run_tags, tracked_metrics

log = logging.getLogger(__name__)


def open_run(cfg: Any, stage: str, tags: dict[str, str], run_name: str, find: dict[str, str]) -> str:
    """The run whose tags match ``find`` (reopened: status RUNNING, ``memsel.attempt`` updated), else a new
    one with ``tags``; registered with the command's lock either way."""
    c, exp = client(cfg), experiment_id(cfg)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in find.items())
    found = c.search_runs([exp], filter_string=query, max_results=1)
    if found:
        run = found[0]
        attempts = run.data.tags.get("memsel.attempts", "")
        attempt = tags.get("memsel.attempt", "")
        if attempt and attempt not in attempts.split(","):
            c.set_tag(run.info.run_id, "memsel.attempts", ",".join(a for a in (attempts, attempt) if a))
        if attempt:
            c.set_tag(run.info.run_id, "memsel.attempt", attempt)
        if run.info.status != "RUNNING":
            c.update_run(run.info.run_id, status="RUNNING")
        rid = run.info.run_id
    else:
        rid = c.create_run(exp, run_name=run_name, tags={**run_tags(cfg, stage), **tags,
                                                         "memsel.attempts": tags.get("memsel.attempt", "1")}).info.run_id
    register_run(rid)
    return rid


class SweepTracker(tune.Callback):
    """Tune callback: a child MLflow run per trial under ``parent_run_id`` (None: top-level runs, as for
    ``memsel train``), see the module docstring. ``searched``: the dotted fields trials sample."""

    def __init__(self, cfg: Any, stage: str, sweep_id: str, attempt: int, searched: list[str],
                 parent_run_id: str | None = None, track_mutations: bool = False):
        self.cfg, self.stage, self.sweep_id, self.attempt = cfg, stage, sweep_id, attempt
        self.searched, self.parent, self.track_mutations = list(searched), parent_run_id, track_mutations
        self.runs: dict[str, str] = {}
        self.values: dict[str, dict[str, Any]] = {}

    def setup(self, stop: Any = None, num_samples: Any = None, total_num_samples: Any = None, **info: Any) -> None:
        """At every start of the experiment: a resumed sweep restores this callback as it was pickled when the
        sweep began, so the attempt (and parent run) now writing is read from the run's sweep.json."""
        from memsel.tune_jobs.sweep import read_state

        state = read_state(self.cfg, self.stage)
        if state is not None and state.sweep_id == self.sweep_id:
            self.attempt, self.parent = state.attempt, state.parent_run_id or self.parent
        self.runs.clear()
        self.values.clear()

    @property
    def client(self) -> Any:
        """One MLflow client for the callback's life (not pickled with the sweep's state)."""
        if getattr(self, "_client", None) is None:
            self._client = client(self.cfg)
        return self._client

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_client"}

    def _sampled(self, trial: Any) -> dict[str, Any]:
        return {k: trial.config[k] for k in self.searched if k in trial.config}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = trial.trial_id
        if tid not in self.runs:
            tags = {"memsel.sweep_id": self.sweep_id, "memsel.trial_id": tid, "memsel.attempt": str(self.attempt)}
            if self.parent:
                tags["mlflow.parentRunId"] = self.parent
            rid = open_run(self.cfg, self.stage, tags, f"{self.cfg.name}/{self.stage}/{tid}",
                           {"memsel.sweep_id": self.sweep_id, "memsel.trial_id": tid})
            self.runs[tid] = rid
            self._log_params(rid, trial)
        self._note_mutation(trial)

    def _log_params(self, rid: str, trial: Any) -> None:
        c = self.client
        params = c.get_run(rid).data.params
        if params:
            self.values[trial.trial_id] = {k: _parse(v) for k, v in params.items()}
            return  # a reopened run: its params are the trial's first values
        sampled = self._sampled(trial)
        from mlflow.entities import Param

        c.log_batch(rid, params=[Param(k, str(v)) for k, v in sampled.items()])
        if self.parent is None:  # a top-level run carries the run's whole config
            log_config(c, rid, self.cfg)
        self.values[trial.trial_id] = dict(sampled)

    def _note_mutation(self, trial: Any) -> None:
        """A restarted trial whose sampled values changed (a PBT exploit): tags, never params."""
        before, now = self.values.get(trial.trial_id, {}), self._sampled(trial)
        changed = {k: v for k, v in now.items() if k in before and before[k] != v}
        if not changed:
            return
        c, rid = self.client, self.runs[trial.trial_id]
        for k, v in changed.items():
            c.set_tag(rid, f"memsel.hp.{k}", str(v))
        c.set_tag(rid, "memsel.mutations", str(int(c.get_run(rid).data.tags.get("memsel.mutations", "0")) + 1))
        log.info("%s %s: PBT changed %s", self.stage, trial.trial_id, ", ".join(f"{k}={v}" for k, v in changed.items()))
        self.values[trial.trial_id] = {**before, **changed}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        rid = self.runs.get(trial.trial_id)
        if rid is None:
            return
        metrics = tracked_metrics(result)
        if self.track_mutations:
            metrics.update({f"hp/{k}": float(v) for k, v in self._sampled(trial).items() if _number(v)})
        step, now = int(result.get("training_iteration", 0)), int(time.time() * 1000)
        self.client.log_batch(rid, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self.runs.get(trial.trial_id)
        if rid:
            c = self.client
            c.set_tag(rid, "memsel.retries", str(int(c.get_run(rid).data.tags.get("memsel.retries", "0")) + 1))

    def _end(self, trial: Any, status: str) -> None:
        rid = self.runs.get(trial.trial_id)
        if rid:
            try:
                self.client.set_terminated(rid, status)
            except Exception as e:  # MLflow must not hide the trial's own outcome
                log.warning("MLflow: ending the run of trial %s: %s", trial.trial_id, e)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse(text: str) -> Any:
    """A param logged as str(value) back to a number where it was one (to compare with a trial's values)."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def runs_of_sweep(cfg: Any, sweep_id: str) -> dict[str, str]:
    """trial id -> MLflow run id of every trial run of sweep ``sweep_id`` (all attempts)."""
    c = client(cfg)
    found = c.search_runs([experiment_id(cfg)], filter_string=f"tags.`memsel.sweep_id` = '{sweep_id}'",
                          max_results=5000)
    return {r.data.tags["memsel.trial_id"]: r.info.run_id for r in found if "memsel.trial_id" in r.data.tags}


def attach_trial_outputs(cfg: Any, run_id: str, checkpoint: Any, exported: Path | None) -> None:
    """A trial's last checkpoint on its run: its location as a tag, its selector as an artifact, and for the
    best trial (``exported``: the selector the stage exported from it) the whole checkpoint (RLlib's
    algorithm state) under ``checkpoint/``."""
    from memsel.tune_jobs.trial import SELECTOR_FILE

    c = client(cfg)
    c.set_tag(run_id, "memsel.checkpoint", checkpoint.path)
    with checkpoint.as_directory() as folder:
        if exported is not None:
            c.log_artifacts(run_id, folder, "checkpoint")
            c.log_artifact(run_id, str(exported))
            c.set_tag(run_id, "memsel.best", "true")
        elif (Path(folder) / SELECTOR_FILE).is_file():
            c.log_artifact(run_id, str(Path(folder) / SELECTOR_FILE))


def finish_parent(cfg: Any, stage: str, parent: str, rows: list[dict], searched: list[str], metric: str,
                  best: dict, selector: Path) -> dict:
    """The sweep's parent run once it ends: the best trial (tags, metric, config), the top-k table, every
    trial as JSON, the plot of searched values against the metric, and the best selector registered as a
    new version of ``memsel-<name>``. Returns what the summary adds (registered model, files)."""
    import json

    from memsel.files import write_text_atomic
    from memsel.tune_jobs import report

    c, folder = client(cfg), cfg.layout.stage(stage)
    ranked = report.ranked(rows)
    files = [write_text_atomic(folder / "top_trials.md", report.format_markdown(ranked[:cfg.tune.top_k], searched, metric)),
             write_text_atomic(folder / "trials.json", json.dumps(rows, indent=2, default=str)),
             write_text_atomic(folder / "best_config.json", json.dumps(best["config"], indent=2, default=str))]
    plot = report.plot_search(rows, searched, metric, folder / "search.png")
    for path in files + ([plot] if plot else []):
        c.log_artifact(parent, str(path))
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    counts = {f"trials/{s}": float(sum(r["status"] == s for r in rows)) for s in ("finished", "stopped", "failed")}
    value = best["metric"] if isinstance(best["metric"], (int, float)) else None
    c.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in
                                 {**counts, **({f"best/{metric}": float(value)} if value is not None else {})}.items()])
    c.set_tag(parent, "memsel.best_trial", best["trial_id"])
    if best.get("mlflow_run_id"):
        c.set_tag(parent, "memsel.best_run_id", best["mlflow_run_id"])
    c.set_tag(parent, "memsel.best_config", json.dumps(best["config"], default=str)[:5000])
    out: dict[str, Any] = {"files": [str(p) for p in files + ([plot] if plot else [])]}
    if cfg.tune.register_model:
        out["registered_model"] = register_best(cfg, parent, selector)
    c.set_terminated(parent, "FINISHED")
    return out


def register_best(cfg: Any, parent: str, selector: Path) -> dict:
    """Register the best selector (a pyfunc model logged on the parent run) as a new version of ``memsel-<name>``."""
    from memsel.model_registry import register_selector

    name, version = register_selector(cfg.resolved_tracking_uri, parent, selector, f"memsel-{cfg.name}")
    c = client(cfg)
    c.set_tag(parent, "memsel.registered_model", name)
    c.set_tag(parent, "memsel.registered_version", str(version))
    log.info("registered %s version %s: mlflow.pyfunc.load_model('models:/%s/%s')", name, version, name, version)
    return {"name": name, "version": version, "uri": f"models:/{name}/{version}"}
