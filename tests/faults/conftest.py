"""Fault injection with real processes: a memsel command is started in its own session, signalled at
a point its log shows, and the run directory, the process table and the MLflow store are checked.

Each test works on a copy of one complete run directory (a tiny ``memsel pipeline`` run once per
session), so that "no result file replaced by a partial one" compares checksums with a good run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from memsel.lifecycle import descendants, process_start

FAULT_CONFIG = """
name: faults
seed: 3
data: {train_stories: 30, test_stories: 10}
pretrain: {max_epochs: 3}
ppo: {iterations: 2, train_batch_size: 128, minibatch_size: 64, num_epochs: 1}
tune:
  num_samples: 2
  iterations: 2
  grace_period: 1
  max_concurrent_trials: 1
  search_space:
    lr: {loguniform: [1.0e-5, 1.0e-3]}
"""

RESULT_FILES = ("pretrain/selector.pt", "ppo/selector.pt", "tune/selector.pt", "results.json", "results.txt",
                "results.png")


class Memsel:
    """One ``memsel`` command in its own session (process group), its stderr in a file, and every
    process it started (recorded while it runs, so that orphans are still known after it dies)."""

    def __init__(self, args: list[str], cwd: Path, log: Path):
        self.log = log
        self.seen: dict[int, str] = {}
        self._err = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "memsel.cli", *args], cwd=cwd, env=os.environ.copy(),
                                     stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)
        self.seen[self.proc.pid] = process_start(self.proc.pid) or ""

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def track(self) -> None:
        """Record the command's descendants now (Ray's processes, the watchdog)."""
        if self.proc.poll() is None:
            self.seen.update(descendants(self.proc.pid))

    def wait_for(self, pattern: str, timeout: float = 120) -> None:
        """Wait until ``pattern`` (a regex) appears on the command's stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.track()
            if re.search(pattern, self.stderr()):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"memsel ended (exit {self.proc.returncode}) before {pattern!r}:\n{self.stderr()[-3000:]}")
            time.sleep(0.2)
        pytest.fail(f"no {pattern!r} on stderr within {timeout} s:\n{self.stderr()[-3000:]}")

    def signal_group(self, sig: int) -> None:
        """What Ctrl-C in a terminal does: ``sig`` to the whole process group."""
        self.track()
        os.killpg(self.proc.pid, sig)

    def kill_driver(self) -> None:
        """SIGKILL the memsel process alone, as ``kill -9 PID`` does: nothing it could clean up."""
        self.track()
        os.kill(self.proc.pid, signal.SIGKILL)

    def listening_outside_loopback(self) -> list[str]:
        """``address process`` of every socket the command's processes listen on beyond 127.0.0.1."""
        self.track()
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
        pids = {f"pid={p}," for p in self.seen}
        return [f"{cols[3]} {cols[-1]}" for cols in map(str.split, out.splitlines())
                if any(p in cols[-1] for p in pids) and not re.match(r"(\[::ffff:)?127\.0\.0\.1\]?:", cols[3])]

    def wait(self, timeout: float = 90) -> int:
        return self.proc.wait(timeout=timeout)

    def left(self, grace: float = 10) -> list[int]:
        """The recorded processes still alive after up to ``grace`` seconds."""
        deadline = time.monotonic() + grace
        while True:
            alive = [p for p, s in self.seen.items() if process_start(p) is not None and process_start(p) == s]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.3)

    def stop(self) -> None:
        """Kill whatever of this command is still there, by PID."""
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p, s in self.seen.items():
            if process_start(p) is not None and process_start(p) == s:
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._err.close()


def checksums(run_dir: Path) -> dict[str, str]:
    return {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
            for name in RESULT_FILES if (run_dir / name).is_file()}


def assert_complete(run_dir: Path, before: dict[str, str], unchanged: tuple[str, ...] = RESULT_FILES) -> None:
    """Every result file is still there; those in ``unchanged`` bit for bit, the others (a stage that
    finished before the signal may have replaced its file) each a complete file."""
    import torch

    after = checksums(run_dir)
    assert set(after) == set(before), (sorted(before), sorted(after))
    for name in before:
        if name in unchanged:
            assert after[name] == before[name], f"{name} was replaced"
        elif name.endswith(".pt"):
            assert torch.load(run_dir / name, weights_only=False)
        elif name.endswith(".json"):
            json.loads((run_dir / name).read_text(encoding="utf-8"))


def running_mlflow_runs(run_dir: Path) -> list[str]:
    """Names of the runs of the run directory's store that are still RUNNING.

    Read with a fresh SQLite connection: MLflow caches one engine per URI, and every test restores
    the store at the same path from the template (a cached engine would still read the old file).
    """
    import sqlite3

    with contextlib.closing(sqlite3.connect(run_dir / "mlflow.db")) as db:
        return [name for (name,) in db.execute("SELECT name FROM runs WHERE status = 'RUNNING'")]


@pytest.fixture(scope="session")
def fault_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faultcfg") / "faults.yaml"
    path.write_text(FAULT_CONFIG, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def complete_run(tmp_path_factory, fault_config) -> Path:
    """A run directory with everything a complete tiny pipeline writes (about a minute on 2 cores),
    kept aside as ``<it>.template``; the tests work on ``<it>`` itself, restored from the template,
    because a run directory records its data's absolute paths."""
    base = tmp_path_factory.mktemp("faults")
    run_dir = base / "run"
    m = Memsel(["pipeline", "--config", str(fault_config), "--run-dir", str(run_dir)], base, base / "stderr.txt")
    try:
        assert m.wait(timeout=300) == 0, m.stderr()[-3000:]
    finally:
        m.stop()
    assert set(checksums(run_dir)) == set(RESULT_FILES)
    shutil.copytree(run_dir, base / "run.template")
    return run_dir


@pytest.fixture
def run_dir(complete_run) -> Path:
    """The complete run directory, as the session's pipeline left it (the tests' cwd is its parent)."""
    shutil.rmtree(complete_run)
    shutil.copytree(complete_run.parent / "run.template", complete_run)
    return complete_run


@pytest.fixture
def memsel(run_dir, fault_config):
    """Start memsel commands on the test's run directory; everything they started is killed at the end."""
    started: list[Memsel] = []

    def start(*args: str) -> Memsel:
        m = Memsel([*args, "--config", str(fault_config), "--run-dir", str(run_dir)], run_dir.parent,
                   run_dir.parent / f"stderr{len(started)}.txt")
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def check() -> SimpleNamespace:
    """The checks of this folder: ``checksums``, ``assert_complete``, ``running_mlflow_runs``."""
    return SimpleNamespace(checksums=checksums, assert_complete=assert_complete, running_mlflow_runs=running_mlflow_runs)
