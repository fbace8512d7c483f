"""Progress bars (memsel.progress): on stderr only, off with --quiet or without a terminal, forced by MEMSEL_PROGRESS=1;
the sweep's iteration bar follows trials that end early."""

from __future__ import annotations

import pickle
import sys
from types import SimpleNamespace

import pytest

from memsel import progress


def test_bars_follow_the_setting_and_the_terminal(monkeypatch):
    monkeypatch.setenv(progress.ENV, "1")
    assert progress.enabled()
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.enabled() and progress.lightning_bar() is None
    monkeypatch.delenv(progress.ENV)
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: False))
    assert not progress.enabled()


def test_quiet_turns_bars_off_for_child_processes_too(monkeypatch):
    monkeypatch.setenv(progress.ENV, "1")
    progress.set_quiet(True)
    import os

    assert os.environ[progress.ENV] == "0" and not progress.enabled()


def test_bar_writes_to_stderr_only(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "1")
    with progress.bar(3, "data", unit="step") as bar:
        bar.update(3)
    out, err = capsys.readouterr()
    assert out == "" and "data:" in err and "/3 [" in err  # (a finished bar is cleared: leave=False)
    monkeypatch.setenv(progress.ENV, "0")
    with progress.bar(3, "data") as bar:
        bar.update(3)
    assert capsys.readouterr() == ("", "")


def test_lightning_bar_goes_to_stderr(monkeypatch, capsys):
    pytest.importorskip("lightning")
    monkeypatch.setenv(progress.ENV, "1")
    bar = progress.lightning_bar()
    bar._trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"))
    t = bar.init_train_tqdm()
    t.total = 2
    t.update(2)
    t.close()
    out, err = capsys.readouterr()
    assert out == "" and "2/2" in err


def test_iteration_bar_counts_iterations_and_drops_what_stopped_trials_leave(monkeypatch, capsys):
    from memsel.tune_jobs.report import IterationBar

    monkeypatch.setenv(progress.ENV, "1")
    cb = IterationBar("tune", total=2 * 4, iterations=4, metric="val/selection_accuracy")
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    for i in (1, 2, 3, 4):
        cb.on_trial_result(0, [], a, {"training_iteration": i, "val": {"selection_accuracy": 0.1 * i}})
    cb.on_trial_result(0, [], b, {"training_iteration": 1, "val": {"selection_accuracy": 0.9}})
    cb.on_trial_complete(0, [], b)  # ASHA stopped b after 1 of 4 iterations
    assert (cb.bar.n, cb.bar.total) == (5, 5) and cb.best == 0.9
    again = pickle.loads(pickle.dumps(cb))  # Tune pickles its callbacks with the experiment
    assert again.seen == {"a": 4, "b": 1} and again._bar is None
    cb.on_experiment_end([])
    assert capsys.readouterr().out == ""


def test_planned_trials_counts_grid_axes():
    from memsel.config import Config
    from memsel.tune_jobs.ppo import planned_trials

    cfg = Config()
    cfg.tune.num_samples = 2
    cfg.tune.search_space = {"ppo.lr": {"loguniform": [1e-5, 1e-3]}, "ppo.distill_coeff": {"choice": [0.0, 0.5, 1.0]}}
    assert planned_trials(cfg) == 2
    cfg.tune.search_alg = "grid"
    assert planned_trials(cfg) == 6
