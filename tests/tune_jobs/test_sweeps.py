"""Real sweeps of tiny trials (Ray Tune, RLlib, MLflow; nothing mocked), each checked through the MLflow
client: a parent run with a nested child per trial, the sampled values as params, the validation
metric at every iteration, and a registered model version that predicts like the exported selector.

- ASHA with random search through the CLI against a real ``mlflow server`` over HTTP: the sweep stage of
  tests/test_pipeline_e2e.py, checked with the same fixture (``sweep_checks``, tests/conftest.py);
- PBT (synchronous: with two trials one of them is exploited at each interval, whatever the scores),
  whose mutations are tags and metrics, never changed params; SQLite store;
- Optuna's TPE over a pretrain field and a ppo field, with each trial pretraining (``tune.trial:
  pipeline``); SQLite store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from memsel.config import load_config

pytestmark = pytest.mark.slow

BASE = ["data.train_stories=40", "data.test_stories=10", "device=cpu", "pretrain.max_epochs=3",
        "ppo.train_batch_size=128", "ppo.minibatch_size=64", "ppo.num_epochs=1", "ppo.num_envs_per_env_runner=2",
        "tune.max_concurrent_trials=2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, ray_session):
    """Generated task-1 files in a folder of their own (so that copies of the run directory name the same
    data) and a run directory with a pretrained selector, copied by each test; returns the copy's --set items."""
    from memsel.data.prepare import generated_files, prepare_data
    from memsel.pipeline import stage_pretrain

    base = tmp_path_factory.mktemp("sweep_base")
    train, _ = generated_files(load_config(None, BASE), base / "data")
    sets = [*BASE, f"data.path={train}"]
    cfg = load_config(None, [f"run_dir={base / 'run'}", *sets])
    stage_pretrain(cfg, prepare_data(cfg))
    return base / "run", sets


def _copy_run(pretrained, dest: Path) -> tuple[Path, list[str]]:
    import shutil

    src, sets = pretrained
    shutil.copytree(src / "data", dest / "data")
    shutil.copytree(src / "pretrain", dest / "pretrain", ignore=shutil.ignore_patterns("checkpoints"))
    return dest, sets


def test_pbt_mutations_are_tags_and_metrics_never_changed_params(pretrained, sweep_checks, tmp_path):
    from memsel.data.prepare import prepare_data
    from memsel.tune_jobs import run_ppo

    run, base = _copy_run(pretrained, tmp_path / "pbt")
    cfg = load_config(None, [f"run_dir={run}", *base, "tune.num_samples=2", "tune.iterations=4", "tune.scheduler=pbt",
                             "tune.scheduler_options={perturbation_interval: 2, synch: true}",
                             "tune.search_space={lr: {loguniform: [1.0e-5, 1.0e-3]}, clip_param: {choice: [0.1, 0.3]}}"])
    outcome = run_ppo(cfg, prepare_data(cfg).files, True)
    summary = outcome.summary
    client = MlflowClient(cfg.resolved_tracking_uri)
    _, children = sweep_checks.tracking(client, summary, ["ppo.lr", "ppo.clip_param"])
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
    sweep_checks.registered(cfg.resolved_tracking_uri, summary)


def test_optuna_over_pretrain_and_ppo_fields_with_pipeline_trials(pretrained, sweep_checks, tmp_path):
    from memsel.data.prepare import prepare_data
    from memsel.tune_jobs import run_ppo

    run, base = _copy_run(pretrained, tmp_path / "optuna")
    cfg = load_config(None, [f"run_dir={run}", *base, "tune.num_samples=3", "tune.iterations=2", "tune.scheduler=none",
                             "tune.search_alg=optuna", "tune.trial=pipeline", "tune.search_options={n_startup_trials: 1}",
                             "tune.search_space={pretrain.recency_decay: {uniform: [0.1, 1.0]}, "
                             "distill_coeff: {choice: [0.0, 0.5]}}"])
    outcome = run_ppo(cfg, prepare_data(cfg).files, True)
    summary = outcome.summary
    assert summary["counts"] == {"finished": 3, "stopped": 0, "failed": 0}
    decays = [t["config"]["pretrain.recency_decay"] for t in summary["trials"]]
    assert len(set(decays)) == 3 and all(0.1 <= d <= 1.0 for d in decays)
    parent, _ = sweep_checks.tracking(MlflowClient(cfg.resolved_tracking_uri), summary,
                                ["pretrain.recency_decay", "ppo.distill_coeff"])
    assert parent.data.tags["memsel.search_alg"] == "optuna"
    sweep_checks.registered(cfg.resolved_tracking_uri, summary)
