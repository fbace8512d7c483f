"""Real sweeps of tiny trials (Ray Tune, RLlib, MLflow; nothing mocked), each checked through the MLflow
client: a parent run with a nested child per trial, the sampled values as params, the validation
metric at every iteration, and a registered model version that predicts like the exported selector.

- ASHA with random search, through the CLI, against a real ``mlflow server`` over HTTP;
- PBT (synchronous: with two trials one of them is exploited at each interval, whatever the scores),
  whose mutations are tags and metrics, never changed params; SQLite store;
- Optuna's TPE over a pretrain field and a ppo field, with each trial pretraining (``tune.trial:
  pipeline``); SQLite store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from memsel.config import load_config

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
QUERY, MEMORIES = "Where is Mary?", ["Mary went to the kitchen.", "John moved to the garden.", "Mary went to the office."]
BASE = ["data.train_stories=40", "data.test_stories=10", "device=cpu", "pretrain.max_epochs=3",
        "ppo.train_batch_size=128", "ppo.minibatch_size=64", "ppo.num_epochs=1", "ppo.num_envs_per_env_runner=2",
        "tune.max_concurrent_trials=2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, ray_session):
    """A run directory with prepared data and a pretrained selector, copied by each test."""
    from memsel.data.prepare import prepare_data
    from memsel.pipeline import stage_pretrain

    run = tmp_path_factory.mktemp("sweep_base") / "base"
    cfg = load_config(None, [f"run_dir={run}", *BASE])
    stage_pretrain(cfg, prepare_data(cfg))
    return run


def _copy_run(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src / "data", dest / "data")
    shutil.copytree(src / "pretrain", dest / "pretrain", ignore=shutil.ignore_patterns("checkpoints"))
    return dest


def _runs(client: MlflowClient, sweep_id: str) -> tuple:
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"tags.`memsel.sweep_id` = '{sweep_id}'")
    parents = [r for r in runs if r.data.tags.get("memsel.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    return parents[0], [r for r in runs if "memsel.trial_id" in r.data.tags]


def _check_tracking(client: MlflowClient, summary: dict, searched: list[str]) -> tuple:
    """Parent and children as the issue asks; returns them."""
    parent, children = _runs(client, summary["sweep_id"])
    assert parent.info.status == "FINISHED"
    assert len(children) == summary["trials_total"] == len(summary["trials"])
    by_trial = {r.data.tags["memsel.trial_id"]: r for r in children}
    for trial in summary["trials"]:
        run = by_trial[trial["trial_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == set(searched)
        history = client.get_metric_history(run.info.run_id, "val/selection_accuracy")
        assert sorted(m.step for m in history) == list(range(1, trial["iterations"] + 1))
        assert all(0.0 <= m.value <= 1.0 for m in history)
    assert parent.data.tags["memsel.best_trial"] == summary["best"]["trial_id"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"top_trials.md", "trials.json", "best_config.json", "search.png"} <= artifacts
    return parent, by_trial


def _check_registered(uri: str, summary: dict) -> None:
    """The registered version loads as a pyfunc and ranks raw memories as the exported selector does."""
    import mlflow

    from memsel.inference import SelectorPredictor

    model = summary["registered_model"]
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pyfunc.load_model(model["uri"])
        out = loaded.predict([{"query": QUERY, "memories": MEMORIES}])
    finally:
        mlflow.set_tracking_uri(saved)
    expected = SelectorPredictor.load(summary["selector"]).rank(MEMORIES, QUERY)
    assert [r["index"] for r in out[0]] == [r.index for r in expected]
    assert [r["probability"] for r in out[0]] == pytest.approx([r.probability for r in expected], abs=1e-6)
    assert sum(r["probability"] for r in out[0]) == pytest.approx(1.0, abs=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (its own process session, stopped by PID)."""
    folder, port = tmp_path_factory.mktemp("mlflow_server"), _free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, (folder / "server.log").read_text()[-2000:]
        try:
            MlflowClient(uri).search_experiments()
            break
        except Exception:
            time.sleep(1)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


def test_asha_sweep_through_the_cli_on_a_tracking_server(pretrained, mlflow_server, tmp_path):
    run = _copy_run(pretrained, tmp_path / "asha")
    sets = [*BASE, "tune.num_samples=4", "tune.iterations=4", "tune.grace_period=1", "tune.scheduler=asha",
            "tune.search_space={lr: {loguniform: [1.0e-5, 1.0e-3]}, env.sample_decay: {uniform: [0.05, 0.5]}}"]
    proc = subprocess.run([str(BIN / "memsel"), "tune", "--run-dir", str(run), "--tracking-uri", mlflow_server,
                           "--json", *(a for s in sets for a in ("--set", s))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["counts"]["failed"] == 0 and summary["trials_total"] == 4
    assert summary["metric"] == "val/selection_accuracy"
    assert all(t["status"] in ("finished", "stopped") and 1 <= t["iterations"] <= 4 for t in summary["trials"])
    assert "iter 1/4" in proc.stderr and "sweep best" in proc.stderr  # progress while it ran
    _, children = _check_tracking(MlflowClient(mlflow_server), summary, ["ppo.lr", "env.sample_decay"])
    for trial in summary["trials"]:
        params = children[trial["trial_id"]].data.params
        assert float(params["ppo.lr"]) == pytest.approx(trial["config"]["ppo.lr"])
    assert summary["registered_model"]["name"] == "memsel-asha"
    _check_registered(mlflow_server, summary)


def test_pbt_mutations_are_tags_and_metrics_never_changed_params(pretrained, tmp_path):
    from memsel.data.prepare import prepare_data
    from memsel.tune_jobs import run_ppo

    run = _copy_run(pretrained, tmp_path / "pbt")
    cfg = load_config(None, [f"run_dir={run}", *BASE, "tune.num_samples=2", "tune.iterations=4", "tune.scheduler=pbt",
                             "tune.scheduler_options={perturbation_interval: 2, synch: true}",
                             "tune.search_space={lr: {loguniform: [1.0e-5, 1.0e-3]}, clip_param: {choice: [0.1, 0.3]}}"])
    outcome = run_ppo(cfg, prepare_data(cfg).files, None, True)
    summary = outcome.summary
    client = MlflowClient(cfg.resolved_tracking_uri)
    _, children = _check_tracking(client, summary, ["ppo.lr", "ppo.clip_param"])
    mutated = [r for r in children.values() if int(r.data.tags.get("memsel.mutations", "0")) >= 1]
    assert mutated, "synchronous PBT with two trials exploits one of them at each interval"
    for run_ in mutated:
        lr = client.get_metric_history(run_.info.run_id, "hp/ppo.lr")
        values = [m.value for m in sorted(lr, key=lambda m: m.step)]
        # The param is the first value; the metric follows the trial's value; the tag holds the mutated one.
        assert float(run_.data.params["ppo.lr"]) == pytest.approx(values[0])
        tag = float(run_.data.tags["memsel.hp.ppo.lr"])
        assert any(v == pytest.approx(tag) for v in values)
        assert len(set(values)) >= 2
    _check_registered(cfg.resolved_tracking_uri, summary)


def test_optuna_over_pretrain_and_ppo_fields_with_pipeline_trials(pretrained, tmp_path):
    from memsel.data.prepare import prepare_data
    from memsel.tune_jobs import run_ppo

    run = _copy_run(pretrained, tmp_path / "optuna")
    cfg = load_config(None, [f"run_dir={run}", *BASE, "tune.num_samples=3", "tune.iterations=2", "tune.scheduler=none",
                             "tune.search_alg=optuna", "tune.trial=pipeline", "tune.search_options={n_startup_trials: 1}",
                             "tune.search_space={pretrain.recency_decay: {uniform: [0.1, 1.0]}, "
                             "distill_coeff: {choice: [0.0, 0.5]}}"])
    outcome = run_ppo(cfg, prepare_data(cfg).files, None, True)
    summary = outcome.summary
    assert summary["counts"] == {"finished": 3, "stopped": 0, "failed": 0}
    decays = [t["config"]["pretrain.recency_decay"] for t in summary["trials"]]
    assert len(set(decays)) == 3 and all(0.1 <= d <= 1.0 for d in decays)
    parent, _ = _check_tracking(MlflowClient(cfg.resolved_tracking_uri), summary,
                                ["pretrain.recency_decay", "ppo.distill_coeff"])
    assert parent.data.tags["memsel.search_alg"] == "optuna"
    _check_registered(cfg.resolved_tracking_uri, summary)
