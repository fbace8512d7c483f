"""The run directory's lock: a live holder refuses a second command, a dead one's runs are marked KILLED."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from memsel.lifecycle import LOCK_NAME, LockHeld, RunLock, guarded, process_start, received_signal


def _store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    return uri, c, c.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())


def test_a_live_holder_refuses_and_a_dead_one_is_taken_over(tmp_path):
    uri, c, exp = _store(tmp_path)
    run_id = c.create_run(exp).info.run_id
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = tmp_path / LOCK_NAME
        lock.write_text(json.dumps({"pid": holder.pid, "start": process_start(holder.pid), "tracking_uri": uri,
                                    "mlflow_runs": [run_id]}), encoding="utf-8")
        with pytest.raises(LockHeld, match=f"PID {holder.pid}"):
            RunLock(tmp_path, uri).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    mine = RunLock(tmp_path, uri)
    mine.acquire()  # the holder is dead now: its run is KILLED, the lock is ours
    assert c.get_run(run_id).info.status == "KILLED"
    assert json.loads(lock.read_text(encoding="utf-8"))["pid"] == os.getpid()
    mine.release()
    assert not lock.exists()


def test_guarded_ends_its_runs_failed_on_an_error_and_finished_otherwise(tmp_path):
    from memsel.lifecycle import register_run

    uri, c, exp = _store(tmp_path)
    failing = c.create_run(exp).info.run_id
    with pytest.raises(RuntimeError), guarded(tmp_path, uri):
        register_run(failing)
        raise RuntimeError("boom")
    ok = c.create_run(exp).info.run_id
    with guarded(tmp_path, uri):
        register_run(ok)
    assert (c.get_run(failing).info.status, c.get_run(ok).info.status) == ("FAILED", "FINISHED")
    assert received_signal() is None and not (tmp_path / LOCK_NAME).exists()
