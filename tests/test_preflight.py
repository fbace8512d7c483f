"""Pre-flight checks (memsel.preflight): every misconfiguration that can be found before compute is
found before compute, in one line with exit code 2, and nothing is written (no run directory)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memsel import preflight
from memsel.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def memsel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (this interpreter, this checkout's sources)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "memsel.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def refused(out: subprocess.CompletedProcess, *parts: str) -> str:
    """Assert exit code 2 with one line ``memsel: error: ...`` holding every part; returns the line."""
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("memsel: error: ") and out.stderr.count("\n") == 1, out.stderr
    for part in parts:
        assert part in out.stderr, (part, out.stderr)
    assert out.stdout == ""
    return out.stderr


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> sha1 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_run(run_dir: Path, seed: int = 0, selector: bool = True) -> Path:
    """A run directory with prepared (tiny, generated) data and, optionally, a pretrained selector file."""
    from memsel.data.prepare import prepare_data
    from memsel.network import Selector
    from memsel.pipeline import save_run_config

    cfg = load_config(None, ["data.train_stories=4", "data.test_stories=2"], run_dir=str(run_dir), seed=seed)
    save_run_config(cfg)
    data = prepare_data(cfg)
    if selector:
        Selector(cfg.selector, data.spec).save(cfg.layout.pretrained_selector)
    return run_dir


# --------------------------------------------------------------------------- the table, through the CLI


def test_metric_typo_is_refused_with_a_suggestion(tmp_path):
    run = tmp_path / "run"
    out = memsel("tune", "--run-dir", str(run), "--set", "tune.metric=env_runners/episode_reward_mean", cwd=tmp_path)
    refused(out, "'tune.metric'", "'env_runners/episode_reward_mean'", "did you mean 'env_runners/episode_return_mean'")
    assert not run.exists()  # refused before data preparation or Ray: nothing written


def test_unloadable_reader_is_refused(tmp_path):
    run = tmp_path / "run"
    out = memsel("train", "--run-dir", str(run), "--set", "env.reader=nope.mod:factory", "--set",
                 "env.reward_mode=answer", cwd=tmp_path)
    refused(out, "'env.reader'", "'nope.mod:factory'", "No module named 'nope'")
    assert not run.exists()


def test_more_env_runners_than_cpus_is_refused(tmp_path):
    run, cpus = tmp_path / "run", os.cpu_count() or 1
    out = memsel("train", "--run-dir", str(run), "--set", f"ppo.num_env_runners={cpus}", "--set",
                 "ppo.use_pretrained=false", cwd=tmp_path)
    refused(out, "'ppo.num_env_runners'", f"need {cpus + 1} CPUs", f"has {cpus}")
    assert not run.exists()


@pytest.mark.parametrize("stage", ["train", "tune"])
def test_ppo_without_pretraining_is_refused_before_data_or_ray(tmp_path, stage):
    run = tmp_path / "run"
    out = memsel(stage, "--run-dir", str(run), cwd=tmp_path)
    refused(out, str(run / "pretrain" / "selector.pt"), "memsel pretrain", "ppo.use_pretrained=false")
    assert not run.exists()  # refused before data preparation or Ray: nothing written


def test_evaluate_missing_or_misspelt_run_dir_creates_nothing(tmp_path):
    tiny_run(tmp_path / "runs" / "exp1")
    before = tree(tmp_path)
    for name in ("exp11", "missing"):
        run = tmp_path / "runs" / name
        refused(memsel("evaluate", "--run-dir", str(run), cwd=tmp_path), str(run), "no such run directory")
        assert not run.exists()
    assert tree(tmp_path) == before


def test_evaluate_empty_run_dir_creates_nothing(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    refused(memsel("evaluate", "--run-dir", str(run), cwd=tmp_path), str(run), "not a trained run")
    assert list(run.iterdir()) == []


def test_evaluate_run_without_a_selector_creates_nothing(tmp_path):
    run = tiny_run(tmp_path / "run", selector=False)
    before = tree(run)
    refused(memsel("evaluate", "--run-dir", str(run), cwd=tmp_path), "no trained selector", "pretrain/selector.pt")
    assert tree(run) == before and not (run / "mlflow.db").exists()


def test_another_seed_is_refused_naming_both_with_nothing_written(tmp_path):
    run = tiny_run(tmp_path / "run", seed=0)
    before = tree(run)
    out = memsel("pretrain", "--run-dir", str(run), "--seed", "3", "--set", "data.train_stories=4",
                 "--set", "data.test_stories=2", cwd=tmp_path)
    refused(out, "prepared with seed 0", "gives seed 3")
    assert tree(run) == before  # data files, sources.json and config.yaml untouched


def test_missing_data_path_is_refused_naming_it(tmp_path):
    run, gone = tmp_path / "run", tmp_path / "nowhere" / "qa1_train.txt"
    refused(memsel("pretrain", "--run-dir", str(run), "--data", str(gone), cwd=tmp_path), "data.path", str(gone))
    assert not run.exists()


def test_stage_without_a_run_name_is_refused_and_writes_no_runs_folder(tmp_path):
    refused(memsel("pretrain", cwd=tmp_path), "--run-dir", "--name")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- names


def test_run_name_comes_from_the_run_dir_unless_given(tmp_path):
    assert load_config(None, run_dir="runs/exp1").name == "exp1"
    assert load_config(None, name="mine", run_dir="runs/exp1").name == "mine"
    assert load_config(None, name="mine").run_path.name == "mine"
    quick = REPO / "configs" / "quickstart.yaml"
    assert load_config(quick, require_name=True).name == "quickstart"  # `make run` may use runs/quickstart
    assert load_config(quick, run_dir=str(tmp_path / "exp2")).name == "quickstart"  # the file names its runs
    assert load_config(None, ["run_dir=runs/exp3"], require_name=True).name == "exp3"
    with pytest.raises(ConfigError, match="no run named"):
        load_config(None, ["ppo.lr=1e-4"], require_name=True)
    assert load_config(None).name == "quickstart"  # the library keeps its default


# --------------------------------------------------------------------------- the checks one by one


def _cfg(tmp_path: Path, *sets: str):
    return load_config(None, list(sets), run_dir=str(tmp_path / "run"))


def test_reported_metrics_follow_the_settings(tmp_path):
    base = preflight.reported_metrics(_cfg(tmp_path))
    assert "env_runners/episode_return_mean" in base and "learners/default_policy/distill_kl" in base
    assert "learners/default_policy/natural_step_kl" not in base
    scratch = preflight.reported_metrics(_cfg(tmp_path, "ppo.use_pretrained=false"))
    assert "learners/default_policy/distill_kl" not in scratch
    natural = preflight.reported_metrics(_cfg(tmp_path, "ppo.update=natural"))
    assert "learners/default_policy/natural_step_kl" in natural
    preflight.check_metric(_cfg(tmp_path, "tune.metric=learners/default_policy/vf_explained_var"), "tune")
    with pytest.raises(ConfigError, match="distill_kl"):
        preflight.check_metric(_cfg(tmp_path, "ppo.use_pretrained=false",
                                    "tune.metric=learners/default_policy/distill_kl"), "train")


def test_resources_are_not_checked_against_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "local_cpus", lambda: 2)
    many = _cfg(tmp_path, "ppo.num_env_runners=4")
    with pytest.raises(ConfigError, match="ppo.num_env_runners"):
        preflight.check_resources(many, "train")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    preflight.check_resources(many, "train")
    monkeypatch.delenv("RAY_ADDRESS")
    preflight.check_resources(_cfg(tmp_path, "ppo.num_env_runners=4", "ray_address=auto"), "train")


def test_more_concurrent_trials_than_cpus_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(preflight, "local_cpus", lambda: 2)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with caplog.at_level(logging.WARNING, logger="memsel.preflight"):
        preflight.check_resources(_cfg(tmp_path, "ppo.num_env_runners=1", "tune.max_concurrent_trials=3"), "tune")
    assert "tune.max_concurrent_trials 3" in caplog.text and "1 at a time" in caplog.text


def reader_that_fails():
    """A reader factory whose reader cannot answer (for the test below)."""
    def reader(memories, chosen, query):
        raise IndexError("no such slot")
    return reader


def reader_that_works():
    """A reader factory whose reader answers the first token of the first chosen memory."""
    return lambda memories, chosen, query: int(memories[chosen[0]][0])


def test_reader_is_called_on_a_tiny_sample(tmp_path):
    module = "test_preflight_readers"
    sys.modules[module] = sys.modules[__name__]  # importlib import mode: give this module a plain name
    try:
        preflight.check_reader(_cfg(tmp_path, f"env.reader={module}:reader_that_works"))
        with pytest.raises(ConfigError, match="failed on a two-memory sample: IndexError: no such slot"):
            preflight.check_reader(_cfg(tmp_path, f"env.reader={module}:reader_that_fails"))
        with pytest.raises(ConfigError, match="has no attribute 'missing'"):
            preflight.check_reader(_cfg(tmp_path, f"env.reader={module}:missing"))
    finally:
        del sys.modules[module]


def test_learned_reader_prerequisites(tmp_path):
    learned = ("env.reward_mode=answer", "env.reader=learned")
    with pytest.raises(ConfigError, match="pretrain.answer_weight"):
        preflight.check_prerequisites(_cfg(tmp_path, *learned), "pipeline")
    preflight.check_prerequisites(_cfg(tmp_path, *learned, "pretrain.answer_weight=1.0"), "pipeline")
    with pytest.raises(FileNotFoundError, match="reader.pt"):
        preflight.check_prerequisites(_cfg(tmp_path, *learned, "ppo.use_pretrained=false"), "train")


def test_tune_with_no_samples_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="tune.num_samples"):
        preflight.check_prerequisites(_cfg(tmp_path, "tune.num_samples=0", "ppo.use_pretrained=false"), "tune")


def test_a_trained_run_passes_every_check(tmp_path):
    run = tiny_run(tmp_path / "run")
    cfg = load_config(None, ["data.train_stories=4", "data.test_stories=2"], run_dir=str(run))
    before = tree(run)
    for stage in preflight.STAGES:
        preflight.check(cfg, stage)
    assert tree(run) == before


def test_data_of_another_run_is_refused_before_writing(tmp_path, babi_en):
    run = tiny_run(tmp_path / "run")
    before = tree(run)
    out = memsel("pretrain", "--run-dir", str(run), "--data", str(babi_en), "--task", "1", cwd=tmp_path)
    refused(out, "prepared from other data")
    assert tree(run) == before


@pytest.mark.slow
def test_a_real_pretrained_run_passes_the_checks_and_evaluates(tmp_path):
    """Lightning: `memsel pretrain` on a fresh run directory, then `memsel evaluate` passes its checks
    and evaluates; another seed on that run is still refused, with nothing written."""
    run = tmp_path / "runs" / "exp1"
    tiny = ["--set", "data.train_stories=20", "--set", "data.test_stories=5", "--set", "pretrain.max_epochs=1"]
    out = memsel("pretrain", "--run-dir", str(run), *tiny, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = load_config(run / "config.yaml")
    assert cfg.name == "exp1"  # from the run directory
    for stage in ("train", "tune", "evaluate"):
        preflight.check(cfg, stage)
    out = memsel("evaluate", "--run-dir", str(run), "--json", *tiny, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pretrained" in json.loads(out.stdout)
    before = tree(run)
    refused(memsel("train", "--run-dir", str(run), "--seed", "1", *tiny, cwd=tmp_path), "seed 0", "seed 1")
    assert tree(run) == before


def test_a_sweep_of_pipeline_trials_needs_no_pretrained_selector(tmp_path):
    """Each trial pretrains itself: only what its pretraining needs is checked (the reader's answer weight)."""
    from memsel.config import load_config
    from memsel.preflight import check_prerequisites

    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", "tune.trial=pipeline"])
    check_prerequisites(cfg, "tune")  # no pretrain/selector.pt: fine
    with pytest.raises(FileNotFoundError, match="no pretrained selector"):
        check_prerequisites(cfg, "train")
    learned = load_config(None, [f"run_dir={tmp_path / 'run'}", "tune.trial=pipeline", "env.reward_mode=answer",
                                 "env.reader=learned"])
    with pytest.raises(ConfigError, match="pretrain.answer_weight"):
        check_prerequisites(learned, "tune")
