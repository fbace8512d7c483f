"""A trial that fails is reported as itself (its error and its log), retried ``tune.max_failures``
times, and its MLflow run ends FAILED."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import pytest

pytestmark = pytest.mark.slow

# Builds fine for memsel's pre-flight check (before Ray starts), fails inside the trial's Ray worker.
PLUGIN = '''
def factory(**kwargs):
    import ray
    if ray.is_initialized():
        raise RuntimeError("injected reader failure")
    return lambda memories, chosen, query: 0
'''


def test_a_failing_trial_is_reported_as_itself_and_retried(memsel, run_dir, tmp_path, monkeypatch):
    (tmp_path / "faultplug.py").write_text(PLUGIN, encoding="utf-8")
    # the Ray workers inherit the driver's environment: they import the factory from here too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    m = memsel("train", "--set", "env.reward_mode=answer", "--set", "env.reader=faultplug:factory",
               "--set", "tune.max_failures=1")
    assert m.wait() == 1, m.stderr()[-3000:]
    err = m.stderr()
    last = err.strip().splitlines()[-1]
    assert last.startswith("memsel: error: ppo: 1 of 1 trial(s) failed"), last
    assert "injected reader failure" in last and "error.txt" in last
    assert err.count("restarting it (tune.max_failures)") == 1
    assert "KeyError" not in err and "Traceback" not in err.split("memsel: error:")[-1]
    assert m.left() == []
    with contextlib.closing(sqlite3.connect(run_dir / "mlflow.db")) as db:
        since = "(SELECT MAX(end_time) FROM runs WHERE name LIKE '%/evaluate')"  # the template's last run
        states = [s for (s,) in db.execute(f"SELECT status FROM runs WHERE start_time > {since}")]
    # a trial that fails while its actor is built gets no run (Tune starts none); one that does ends FAILED
    assert all(s == "FAILED" for s in states), states
