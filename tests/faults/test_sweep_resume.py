"""A sweep whose driver is SIGKILLed resumes with ``memsel tune --resume``: the finished trial is kept, the
unfinished one continues from its last checkpoint, each trial writes into the MLflow run it had, and
no run is left RUNNING. Without ``--resume`` or ``--fresh`` a second sweep on the run directory is refused.

The store is read with plain SQLite (see conftest.running_mlflow_runs: MLflow caches engines per URI).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SWEEP = ["--set", "tune.scheduler=none", "--set", "tune.num_samples=2", "--set", "tune.iterations=6",
         "--set", "ppo.checkpoint_every=1", "--set", "tune.max_concurrent_trials=1",
         "--set", "tune.register_model=false"]


def _query(run_dir: Path, sql: str, *args) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(run_dir / "mlflow.db")) as db:
        return list(db.execute(sql, args))


def _tag(run_dir: Path, run_id: str, key: str) -> str | None:
    rows = _query(run_dir, "SELECT value FROM tags WHERE run_uuid = ? AND key = ?", run_id, key)
    return rows[0][0] if rows else None


def _sweep_runs(run_dir: Path, sweep_id: str) -> dict[str, tuple[str, str]]:
    """trial id (or 'parent') -> (run id, status) of the sweep's runs."""
    rows = _query(run_dir, "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                           "WHERE t.key = 'memsel.sweep_id' AND t.value = ?", sweep_id)
    return {(_tag(run_dir, rid, "memsel.trial_id") or "parent"): (rid, status) for rid, status in rows}


def _val_steps(run_dir: Path, run_id: str) -> list[int]:
    return sorted(step for (step,) in _query(run_dir, "SELECT step FROM metrics WHERE run_uuid = ? AND "
                                                      "key = 'val/selection_accuracy'", run_id))


def test_a_sweep_killed_by_sigkill_resumes_where_it_stopped(memsel, check, run_dir):
    first = memsel("tune", "--fresh", *SWEEP)
    first.wait_for(r"tune \S+_00001 iter 3/6", timeout=240)  # trial 0 finished, trial 1 checkpointed >= 2
    first.kill_driver()
    first.wait()
    assert first.left(grace=15) == [], "processes outlived the killed driver"
    sweep = json.loads((run_dir / "tune" / "sweep.json").read_text())
    assert sweep["attempt"] == 1

    refused = memsel("tune", *SWEEP)
    assert refused.wait() == 2
    assert f"holds sweep {sweep['sweep_id']} (attempt 1)" in refused.stderr() and "--resume" in refused.stderr()

    resumed = memsel("tune", "--resume", *SWEEP)
    assert resumed.wait(timeout=300) == 0, resumed.stderr()[-3000:]
    assert "died without cleaning up" in resumed.stderr()
    outcome = json.loads((run_dir / "tune" / "outcome.json").read_text())["summary"]
    assert outcome["attempt"] == 2 and outcome["sweep_id"] == sweep["sweep_id"]
    assert outcome["counts"] == {"finished": 2, "stopped": 0, "failed": 0}

    runs = _sweep_runs(run_dir, sweep["sweep_id"])
    trials = sorted(k for k in runs if k != "parent")
    assert len(trials) == 2, runs  # no duplicate run for the resumed trial
    assert all(status == "FINISHED" for _, status in runs.values()), runs
    assert check.running_mlflow_runs(run_dir) == []
    done, cont = (runs[t][0] for t in trials)
    assert _tag(run_dir, done, "memsel.attempts") == "1"
    assert _tag(run_dir, cont, "memsel.attempts") == "1,2"
    assert _tag(run_dir, runs["parent"][0], "memsel.attempts") == "1,2"
    assert _val_steps(run_dir, done) == list(range(1, 7))
    steps = _val_steps(run_dir, cont)
    # It continued from a checkpoint: its first iterations ran once; every step up to 6 is there.
    assert set(steps) == set(range(1, 7)) and steps.count(1) == 1 and steps.count(2) == 1, steps
