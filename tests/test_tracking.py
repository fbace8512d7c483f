"""What reaches MLflow from a Tune result, and the hints printed for opening the store."""

from memsel.config import load_config
from memsel.tracking import config_params, tracked_metrics, ui_hint


def _result():
    return {
        "training_iteration": 3, "num_env_steps_sampled_lifetime": 1536, "time_this_iter_s": 0.6, "done": False,
        "config": {"lr": 1e-4, "num_epochs": 4},
        "timers": {"training_iteration": 0.5},
        "env_runners": {"episode_return_mean": 0.9, "env_step_timer": 0.001,
                        "module_to_env_connector": {"timers": {"get_actions": 0.01}}},
        "learners": {"default_policy": {"mean_kl_loss": 0.01, "distill_kl": 0.02, "policy_loss": -0.1,
                                        "weights_seq_no": 3.0},
                     "__all_modules__": {"num_env_steps_trained_throughput": 900.0}},
    }


def test_tracked_metrics_keep_learning_signals_and_drop_internals():
    m = tracked_metrics(_result())
    for key in ("env_runners/episode_return_mean", "learners/default_policy/mean_kl_loss",
                "learners/default_policy/distill_kl", "learners/default_policy/policy_loss",
                "training_iteration", "num_env_steps_sampled_lifetime"):
        assert key in m, key
    assert m["learners/default_policy/distill_kl"] == 0.02
    assert not any(k.startswith(("config", "timers")) or "timer" in k or "throughput" in k or "seq_no" in k
                   for k in m), sorted(m)
    assert "done" not in m


def test_config_params_and_ui_hint(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path}", "seed=7"])
    params = config_params(cfg)
    assert params["memsel.seed"] == "7" and params["memsel.ppo.lr"] == str(cfg.ppo.lr)
    assert str(tmp_path / "mlflow.db") in ui_hint(cfg)
    cfg_http = load_config(None, ["tracking_uri=http://127.0.0.1:5000"])
    assert ui_hint(cfg_http).startswith("open http://127.0.0.1:5000")


def test_artifacts_live_in_the_run_directory_one_experiment_per_directory(tmp_path, monkeypatch):
    from memsel.tracking import artifact_root, client, experiment_id, experiment_name

    monkeypatch.chdir(tmp_path)
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    a = load_config(None, [f"run_dir={tmp_path / 'a'}", f"tracking_uri={shared}"])
    b = load_config(None, [f"run_dir={tmp_path / 'b'}", f"tracking_uri={shared}"])
    ea, eb = experiment_id(a), experiment_id(b)
    assert ea != eb and experiment_name(a) == "memsel" and str(tmp_path / "b") in experiment_name(b)
    c = client(a)
    assert c.get_experiment(ea).artifact_location == artifact_root(a) == (tmp_path / "a" / "mlartifacts").as_uri()
    assert c.get_experiment(eb).artifact_location == (tmp_path / "b" / "mlartifacts").as_uri()
    run = c.create_run(eb)
    c.log_text(run.info.run_id, "x", "note.txt")
    assert (tmp_path / "b" / "mlartifacts" / run.info.run_id / "artifacts" / "note.txt").is_file()
    assert not (tmp_path / "mlruns").exists()
    assert artifact_root(load_config(None, ["tracking_uri=http://127.0.0.1:5000"])) is None
