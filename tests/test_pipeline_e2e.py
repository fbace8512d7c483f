"""End to end: `memsel pipeline` on a tiny config with real Ray, Lightning and an MLflow server,
then the MLflow store is opened and the runs, reward and KL metrics are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from memsel.cli import run as cli_run

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, mlflow_server_at):
    """A real `mlflow server` on loopback, stopped after the module's tests."""
    with mlflow_server_at(tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url


def test_pipeline_end_to_end_tracks_everything(tmp_path, tiny_config, mlflow_server, ray_session, capfd, sweep_checks):
    config = tiny_config
    run_dir = tmp_path / "run"
    code = cli_run(["pipeline", "--config", str(config), "--run-dir", str(run_dir),
                    "--tracking-uri", mlflow_server, "--json"])
    out = capfd.readouterr().out
    assert code == 0
    results = json.loads(out.strip().splitlines()[-1])  # stdout holds only the JSON object
    assert len(out.strip().splitlines()) == 1, "with --json, stdout must carry nothing but the JSON"
    for method in ("random", "most_recent", "pretrained", "ppo", "ppo_tuned"):
        assert 0.0 <= results[method]["selection_accuracy"] <= 1.0, method
        assert results[method]["questions"] == 100  # 20 test stories x 5 questions
    assert results["pretrained"]["selection_accuracy"] > results["most_recent"]["selection_accuracy"] + 0.2
    assert results["ppo"]["selection_accuracy"] > results["random"]["selection_accuracy"] + 0.3
    for name in ("results.json", "results.png", "results.txt", "config.yaml", "pretrain/selector.pt",
                 "ppo/selector.pt", "tune/selector.pt"):
        assert (run_dir / name).is_file(), name

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("memsel")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`memsel.run` = 'tiny'")
    by_stage: dict[str, list] = {}
    for r in runs:
        by_stage.setdefault(r.data.tags["memsel.stage"], []).append(r)
    assert sorted(by_stage) == ["evaluate", "ppo", "pretrain", "tune"]
    assert len(by_stage["ppo"]) == 1
    # The sweep: one parent run, a nested child run per trial.
    parents = [r for r in by_stage["tune"] if r.data.tags.get("memsel.role") == "sweep"]
    children = [r for r in by_stage["tune"] if "memsel.trial_id" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4 and len(by_stage["tune"]) == 5
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}

    ppo = by_stage["ppo"][0]
    rid = ppo.info.run_id
    for key in ("env_runners/episode_return_mean", "learners/default_policy/mean_kl_loss",
                "learners/default_policy/distill_kl"):
        history = client.get_metric_history(rid, key)
        assert [m.step for m in history] == [1, 2, 3], key  # every iteration, not just the last
    returns = [m.value for m in client.get_metric_history(rid, "env_runners/episode_return_mean")]
    assert all(0.0 <= v <= 1.0 for v in returns)
    assert ppo.data.params["memsel.seed"] == "3"
    assert ppo.data.params["memsel.ppo.iterations"] == "3"
    arts = {a.path for a in client.list_artifacts(rid)}
    assert "checkpoint" in arts and "memsel_config.yaml" in arts and "selector.pt" in arts

    pre = by_stage["pretrain"][0]
    assert "val/selection_accuracy" in pre.data.metrics
    ev = by_stage["evaluate"][0]
    assert ev.data.metrics["test/ppo/selection_accuracy"] == pytest.approx(results["ppo"]["selection_accuracy"])
    # The sweep (ASHA, random search) over HTTP: parent and children, params = sampled values, the validation
    # metric every iteration, and the best selector registered as a pyfunc that ranks raw text.
    summary = json.loads((run_dir / "tune" / "outcome.json").read_text())["summary"]
    assert summary["metric"] == "val/selection_accuracy" and summary["counts"]["failed"] == 0
    _, trials = sweep_checks.tracking(client, summary, ["ppo.lr", "ppo.distill_coeff"])
    for trial in summary["trials"]:
        assert float(trials[trial["trial_id"]].data.params["ppo.lr"]) == pytest.approx(trial["config"]["ppo.lr"])
        assert client.get_metric_history(trials[trial["trial_id"]].info.run_id, "env_runners/episode_return_mean")
    assert summary["registered_model"]["uri"] == "models:/memsel-tiny/1"
    sweep_checks.registered(mlflow_server, summary)

    # A later command on the same run dir, as a separate process, with the default tracking store
    # (a SQLite file in the run dir): evaluate reproduces the numbers and records its own run.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([str(Path(sys.executable).with_name("memsel")), "evaluate", "--config", str(config),
                           "--run-dir", str(run_dir), "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout)
    assert again["ppo"] == results["ppo"] and again["pretrained"] == results["pretrained"]
    local = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    local_runs = local.search_runs([local.get_experiment_by_name("memsel").experiment_id])
    assert [r.data.tags["memsel.stage"] for r in local_runs] == ["evaluate"]
