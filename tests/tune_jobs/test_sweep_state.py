"""A sweep's identity, attempts and refusals (memsel.tune_jobs.sweep), the checks of tune settings that
combine (memsel.config.TuneSettings), and the summary's tables and plot (memsel.tune_jobs.report):
all before or after Ray, so no Ray here."""

from __future__ import annotations

import json

import pytest

from memsel.config import ConfigError, load_config
from memsel.preflight import check_metric
from memsel.tune_jobs import report, sweep


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"run_dir={tmp_path / 'run'}"])


def test_a_new_sweep_writes_attempt_one_and_a_second_is_refused(cfg):
    sweep.check_mode(cfg, "tune", "new")  # nothing there yet
    state = sweep.begin(cfg, "tune", "new")
    assert state.attempt == 1 and len(state.sweep_id) == 12 and state.path.endswith("ray_results/tune")
    assert json.loads((cfg.run_path / "tune" / "sweep.json").read_text())["sweep_id"] == state.sweep_id
    with pytest.raises(ConfigError) as info:
        sweep.check_mode(cfg, "tune", "new")
    assert f"holds sweep {state.sweep_id} (attempt 1)" in str(info.value)
    assert "--resume" in str(info.value) and "--fresh" in str(info.value)


def test_an_old_sweep_folder_without_state_is_refused_too(cfg):
    (cfg.layout.ray_results / "tune" / "MemselTrial_x").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds a sweep"):
        sweep.check_mode(cfg, "tune", "new")


def test_resume_needs_a_sweep_with_tune_state_and_the_same_search_space(cfg):
    with pytest.raises(ConfigError, match="no sweep to resume"):
        sweep.check_mode(cfg, "tune", "resume")
    sweep.begin(cfg, "tune", "new")
    with pytest.raises(ConfigError, match="no sweep to resume"):  # sweep.json, but Tune never saved state
        sweep.check_mode(cfg, "tune", "resume")


def test_resume_refuses_another_search_space(cfg):
    state = sweep.begin(cfg, "tune", "new")
    (cfg.layout.ray_results / "tune").mkdir(parents=True)
    (cfg.layout.ray_results / "tune" / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    sweep.check_mode(cfg, "tune", "resume")  # same config: fine
    state.search_space = {"ppo.lr": {"choice": [0.1]}}
    sweep.write_state(cfg, "tune", state)
    with pytest.raises(ConfigError, match="'tune.search_space': the sweep being resumed searched"):
        sweep.check_mode(cfg, "tune", "resume")


def test_resume_counts_attempts_and_fresh_starts_another_sweep(cfg):
    first = sweep.begin(cfg, "tune", "new")
    second = sweep.begin(cfg, "tune", "resume")
    assert (second.sweep_id, second.attempt) == (first.sweep_id, 2)
    folder = cfg.layout.ray_results / "tune"
    (folder / "old_trial").mkdir(parents=True)
    fresh = sweep.begin(cfg, "tune", "fresh")
    assert fresh.sweep_id != first.sweep_id and fresh.attempt == 1
    assert not folder.exists(), "--fresh replaces the old Tune state"


def test_a_corrupt_sweep_file_is_refused_naming_it(cfg):
    path = cfg.run_path / "tune" / "sweep.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sweep\.json: not a memsel sweep state"):
        sweep.check_mode(cfg, "tune", "new")


def test_storage_path_names_where_tune_writes(tmp_path):
    local = load_config(None, [f"run_dir={tmp_path / 'r'}", f"tune.storage_path={tmp_path / 'store'}"])
    assert sweep.experiment_path(local, "tune") == f"{tmp_path / 'store'}/tune"
    remote = load_config(None, [f"run_dir={tmp_path / 'r'}", "tune.storage_path=s3://bucket/sweeps/"])
    assert sweep.experiment_path(remote, "tune") == "s3://bucket/sweeps/tune"


@pytest.mark.parametrize("sets, field", [
    (["tune.search_alg=grid", "tune.search_space={lr: {loguniform: [1.0e-5, 1.0e-3]}}"], "tune.search_space"),
    (["tune.search_alg=optuna", "tune.search_space={lr: {grid: [1.0e-4, 1.0e-3]}}"], "tune.search_space"),
    (["tune.scheduler=pbt", "tune.search_space={env.hops: {choice: [1, 2]}}"], "tune.search_space"),
    (["tune.scheduler=pbt", "tune.search_alg=optuna"], "tune.search_alg"),
    (["tune.scheduler=pbt", "tune.trial=pipeline"], "tune.trial"),
    (["tune.search_space={pretrain.lr: {choice: [0.01]}}"], "tune.search_space.pretrain.lr"),
    (["tune.search_space={ppo.iterations: {choice: [3]}}"], "tune.search_space.ppo.iterations"),
    (["tune.search_space={data.task: {choice: [1, 2]}}"], "tune.search_space.data.task"),
    (["tune.search_space={env.hops: {choice: [1, -1]}}"], "tune.search_space.env.hops.choice"),
    (["tune.scheduler_options={quantile_fraction: 0.9}", "tune.scheduler=pbt"], "tune.scheduler_options"),
    (["tune.trial=both"], "tune.trial"),
    (["tune.eval_every=0"], "tune.eval_every"),
])
def test_tune_settings_that_cannot_work_together_are_refused(sets, field):
    with pytest.raises(ConfigError) as info:
        load_config(None, sets)
    assert f"'{field}" in str(info.value), str(info.value)


def test_pipeline_trials_may_search_pretrain_and_selector_fields():
    cfg = load_config(None, ["tune.trial=pipeline", "tune.search_space={pretrain.recency_decay: {uniform: [0.1, 1]}, "
                                                    "selector.hidden_dim: {choice: [32, 64]}}"])
    assert set(cfg.tune.search_space) == {"pretrain.recency_decay", "selector.hidden_dim"}


def test_the_metric_defaults_to_the_validation_score_and_stop_rules_are_checked():
    cfg = load_config(None, [])
    assert cfg.tune.resolved_metric(cfg.env) == "val/selection_accuracy"
    answer = load_config(None, ["env.reward_mode=answer", "env.reader=learned", "pretrain.answer_weight=0.5"])
    assert answer.tune.resolved_metric(answer.env) == "val/answer_accuracy"
    check_metric(load_config(None, ["tune.stop={val/selection_accuracy: 0.99}"]), "tune")
    with pytest.raises(ConfigError, match="tune.stop.val/accuracy"):
        check_metric(load_config(None, ["tune.stop={val/accuracy: 0.99}"]), "tune")


ROWS = [
    {"trial_id": "a", "status": "finished", "iterations": 4, "metric": 0.8, "best_metric": 0.85, "return": 0.9,
     "config": {"ppo.lr": 1e-4}, "node_id": "n1aaaaaaaa", "mlflow_run_id": "r1", "error": None},
    {"trial_id": "b", "status": "failed", "iterations": 2, "metric": 0.95, "best_metric": 0.95, "return": 0.9,
     "config": {"ppo.lr": 1e-3}, "node_id": "n2", "mlflow_run_id": "r2", "error": "boom"},
    {"trial_id": "c", "status": "stopped", "iterations": 1, "metric": 0.9, "best_metric": 0.9, "return": 0.5,
     "config": {"ppo.lr": 1e-5}, "node_id": None, "mlflow_run_id": None, "error": None},
]


def test_ranking_leaves_failed_trials_out_and_tables_show_every_field(tmp_path):
    assert [r["trial_id"] for r in report.ranked(ROWS)] == ["c", "a"]
    table = report.format_table(ROWS, ["ppo.lr"], "val/selection_accuracy")
    assert table.splitlines()[0].split() == ["trial", "status", "iter", "val/selection_accuracy", "best", "ppo.lr",
                                             "node"]
    assert "failed" in table and "n1aaaaaa" in table and "n1aaaaaaaa" not in table
    md = report.format_markdown(report.ranked(ROWS), ["ppo.lr"], "val/selection_accuracy")
    assert md.splitlines()[2].startswith("| 1 | c | stopped | 1 | 0.9 |")
    path = report.plot_search(ROWS, ["ppo.lr"], "val/selection_accuracy", tmp_path / "search.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot_search(ROWS, [], "m", tmp_path / "none.png") is None
