"""How a memsel command starts and ends: a lock on its run directory, signals, MLflow run states, Ray.

Every command that works on a run directory runs inside :func:`guarded`:

* It holds ``<run_dir>/.memsel.lock`` (JSON: PID, process start time, tracking URI, the MLflow runs
  it opened). A live holder makes a second command on the same directory refuse (:class:`LockHeld`,
  exit 2); a lock whose process is dead (SIGKILL, power loss) is taken over, and the MLflow runs the
  dead command left RUNNING are marked KILLED.
* SIGINT and SIGTERM end it cleanly: the signal is recorded (:func:`received_signal`), the work is
  unwound by an exception, the MLflow runs it opened are marked KILLED, Ray is shut down, and the
  CLI exits 128 + signal number. Result files are written atomically (memsel.files), so an
  interrupted command never leaves a partial one where a good one was.
* Any other exception marks its MLflow runs FAILED; a normal end marks what is still open FINISHED.

A local Ray is watched by a small process (this file run as a script, :func:`watch`): when the
driver dies without cleaning up (SIGKILL), it kills every process of that Ray session, so that no
agent is left behind. Top-level imports are the standard library and memsel.layout (itself standard library only), for that script.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from memsel.layout import RunLayout  # standard library only, as the watchdog script needs

log = logging.getLogger(__name__)

LOCK_NAME = RunLayout(Path()).lock.name
_received: list[int] = []  # signals received by this command (the first one decides the exit code)
_current: "RunLock | None" = None
_watchdog: subprocess.Popen | None = None


class Interrupted(BaseException):
    """Raised by the SIGTERM handler: a BaseException, so that ``except Exception`` blocks of the
    libraries in between (Tune, Lightning) do not swallow it."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


class StageFailed(RuntimeError):
    """A stage failed for a reason its message tells in full (a failed trial: its error and log path);
    the CLI prints that one line and exits 1, without a traceback of its own."""


class LockHeld(RuntimeError):
    """Another live memsel command holds the run directory."""


def received_signal() -> int | None:
    """The first SIGINT/SIGTERM this command received, or None."""
    return _received[0] if _received else None


def _on_signal(signum: int, frame) -> None:
    _received.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks after boot), or None when there is no such live process.

    A zombie counts as dead; the start time tells a reused PID from the one that wrote a lock.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, start: str | None) -> bool:
    now = process_start(pid)
    return now is not None and (start is None or now == start)


class RunLock:
    """The lock file of one run directory, with the MLflow runs opened under it."""

    def __init__(self, run_dir: Path, tracking_uri: str):
        self.path = RunLayout(Path(run_dir)).lock
        self.tracking_uri = tracking_uri
        self.runs: list[str] = []

    def _content(self) -> str:
        return json.dumps({"pid": os.getpid(), "start": process_start(os.getpid()), "tracking_uri": self.tracking_uri,
                           "mlflow_runs": self.runs})

    def acquire(self) -> None:
        """Take the lock; take over a dead holder's lock (marking its runs KILLED); refuse a live one's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(self._content(), encoding="utf-8")
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic, and fails when the lock exists
                    return
                except FileExistsError:
                    self._take_over()
            raise LockHeld(f"{self.path}: could not take the lock")
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self) -> None:
        try:
            old = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            old = {}
        pid = int(old.get("pid", 0))
        if pid and pid != os.getpid() and _alive(pid, old.get("start")):
            raise LockHeld(f"run directory {self.path.parent} is in use by memsel PID {pid} "
                           f"(lock {self.path}); wait for it or stop it")
        killed = mark_stale_runs(old.get("tracking_uri") or self.tracking_uri, old.get("mlflow_runs", []),
                                 self.path.parent)
        log.warning("memsel PID %s died without cleaning up %s; marked its MLflow runs KILLED: %s",
                    pid or "?", self.path.parent, ", ".join(killed) or "none open")
        self.path.unlink(missing_ok=True)

    def add_run(self, run_id: str) -> None:
        """Record an MLflow run this command opened (rewrites the lock file atomically)."""
        if run_id in self.runs:
            return
        self.runs.append(run_id)
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(self._content(), encoding="utf-8")
        tmp.replace(self.path)

    def close_runs(self, status: str) -> None:
        """Set every recorded run that is still RUNNING to ``status``."""
        if self.runs:
            end_runs(self.tracking_uri, self.runs, status)

    def release(self) -> None:
        """Remove the lock file, if it is still ours."""
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def end_runs(tracking_uri: str, run_ids: list[str], status: str) -> list[str]:
    """Set the runs among ``run_ids`` that are still RUNNING to ``status``; returns those it changed."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    changed = []
    for rid in run_ids:
        try:
            if client.get_run(rid).info.status == "RUNNING":
                client.set_terminated(rid, status)
                changed.append(rid)
        except Exception as e:  # a run of a store that is gone must not stop the command
            log.warning("MLflow run %s: could not set %s (%s)", rid, status, e)
    return changed


def mark_stale_runs(tracking_uri: str, run_ids: list[str], run_dir: Path) -> list[str]:
    """Mark KILLED the runs a dead command opened: those its lock names, and any run of this run
    directory still RUNNING (only a dead command can have left one while nobody holds the lock)."""
    ids = list(run_ids)
    with contextlib.suppress(Exception):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(exps, filter_string=f"tags.`memsel.run_dir` = '{Path(run_dir).resolve()}' "
                                                       "and attributes.status = 'RUNNING'")
        ids += [r.info.run_id for r in found if r.info.run_id not in ids]
    return end_runs(tracking_uri, ids, "KILLED") if ids else []


def register_run(run_id: str) -> None:
    """Tell the current command's lock about an MLflow run it opened (no-op outside :func:`guarded`)."""
    if _current is not None:
        _current.add_run(run_id)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def take_signals() -> None:
    """Handle SIGINT/SIGTERM again inside :func:`guarded`: ``ray.init`` installs Ray's own SIGTERM
    handler in the driver, which dumps a stack trace and aborts the process without any cleanup."""
    if _current is not None:
        for s in _SIGNALS:
            signal.signal(s, _on_signal)


def shutdown_ray() -> None:
    """Shut down this process's Ray session, if one is up (imports nothing that is not loaded)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def guarded(run_dir: Path, tracking_uri: str) -> Iterator[RunLock]:
    """Run a command on ``run_dir``: hold its lock, turn SIGINT/SIGTERM into a clean unwinding, and
    end the command's MLflow runs (FINISHED, FAILED or KILLED) and its Ray session, whatever happens."""
    global _current
    lock = RunLock(run_dir, tracking_uri)
    lock.acquire()
    _current = lock
    saved = {s: signal.signal(s, _on_signal) for s in _SIGNALS}
    # Tune would catch SIGINT itself and return a partial result as if the sweep had ended.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    status = "FINISHED"
    try:
        yield lock
    except BaseException:
        status = "KILLED" if received_signal() else "FAILED"
        raise
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        for s in saved:
            signal.signal(s, signal.SIG_IGN)
        if received_signal():
            status = "KILLED"
        try:
            lock.close_runs(status)
            shutdown_ray()
        finally:
            lock.release()
            _current = None
            for s, h in saved.items():
                signal.signal(s, h)


@contextlib.contextmanager
def local_ray_settings() -> Iterator[None]:
    """While a local Ray starts: its head processes (GCS, raylet, monitors; the agents and workers
    follow the raylet) each in a process group of its own, and its node address the loopback one.

    In the driver's group, a signal to the group (a supervisor's SIGTERM to the job, ``kill -- -PGID``)
    kills the raylet before the driver has shut Ray down, and Ray's core worker then aborts the driver
    mid-cleanup. Outside it, only the driver gets the signal and ends Ray itself; the watchdog covers
    the SIGKILL case. (Ray already blocks SIGINT in these processes, so Ctrl-C never reached them.)
    Ray has no option for this: its spawning class ``ray._private.services.ConsolePopen`` is swapped.

    Ray turns ``_node_ip_address="127.0.0.1"`` into the machine's external address unless
    ``ENABLE_RAY_CLUSTER`` is off (its macOS/Windows default); the environment variable carries that
    to the processes Ray starts.
    """
    from ray._private import ray_constants, services

    original, cluster = services.ConsolePopen, ray_constants.ENABLE_RAY_CLUSTER

    class OwnGroupPopen(original):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnGroupPopen
    ray_constants.ENABLE_RAY_CLUSTER = False
    env_var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env = os.environ.get(env_var)
    os.environ[env_var] = "0"
    try:
        yield
    finally:
        # Restored once Ray's processes are up: a `ray start` this process runs later (a cluster of
        # several nodes) must not inherit the single-node switch.
        services.ConsolePopen, ray_constants.ENABLE_RAY_CLUSTER = original, cluster
        if saved_env is None:
            os.environ.pop(env_var, None)
        else:
            os.environ[env_var] = saved_env


def start_watchdog(session_name: str) -> None:
    """Start the process that kills Ray session ``session_name`` when this process dies uncleanly."""
    global _watchdog
    pid = os.getpid()
    _watchdog = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(pid), process_start(pid) or "", session_name],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def process_stats() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, start time) of every live (not zombie) process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if fields[0] not in ("Z", "X"):
                    out[int(entry)] = (int(fields[1]), int(fields[3]), fields[19])
    return out


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every live process."""
    return {pid: (ppid, start) for pid, (ppid, _, start) in process_stats().items()}


def descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live descendant of ``root`` (children, their children, ...)."""
    procs = _processes()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (pp, _) in procs.items() if pp == parent and p not in found]
        found.update({p: procs[p][1] for p in kids})
        frontier += kids
    return found


def _of_session(session_name: str) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if session_name.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.add(int(entry))
    return found


def watch(driver: int, start: str | None, session_name: str, interval: float = 0.5) -> list[int]:
    """Follow ``driver``'s descendants until it dies, then kill those still alive and every process
    whose command line names Ray session ``session_name``; returns the PIDs it signalled."""
    tracked: dict[int, str] = {}
    while _alive(driver, start):
        tracked.update(descendants(driver))  # recorded before they are orphaned
        time.sleep(interval)
    targets = ({p for p, s in tracked.items() if _alive(p, s)} | _of_session(session_name)) - {os.getpid()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in targets:
            with contextlib.suppress(OSError):
                os.kill(p, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(process_start(p) for p in targets):
            time.sleep(0.1)
    return sorted(targets)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2] or None, sys.argv[3])
