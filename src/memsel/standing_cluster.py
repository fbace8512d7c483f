"""A local Ray cluster and an MLflow server that outlive the command that started them:
``cluster/up.sh`` and ``cluster/down.sh`` are thin wrappers of

    python -m memsel.standing_cluster up [--workers N] [--cpus-per-node C] [--dashboard-port D]
                                         [--mlflow-port P] [--port GCS] [--state DIR]
    python -m memsel.standing_cluster down [--state DIR]

``up`` starts a Ray head (dashboard and Jobs API on ``--dashboard-port``), N worker nodes
(memsel.local_cluster: every process on 127.0.0.1, token authentication on, each node a ``ray start
--block`` in a process session of its own) and ``mlflow server`` (SQLite store and artifacts under
``<state>/mlflow``, proxied artifacts, on 127.0.0.1), then writes ``<state>/state.json``: the
addresses and, per node and for the server, the session leader's PID and start time and the PIDs
recorded from it. ``down`` reads that file and stops exactly those processes and what they started
(a running job's driver included): workers, then the head, then MLflow, each SIGTERM, a grace
period, SIGKILL (memsel.local_cluster.stop_recorded). Nothing is ever stopped by name.

The nodes' ``PATH`` starts with the folder of their Python, so that a job's entry point ``python``
is the Python that has Ray and memsel (what an activated virtual environment gives).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from memsel.files import write_text_atomic
from memsel.lifecycle import process_start
from memsel.local_cluster import LOOPBACK, ClusterError, LocalCluster, RecordedGroup, stop_recorded, token_file

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def read_state(state_dir: Path) -> dict | None:
    """The cluster recorded in ``state_dir`` (``state.json``), or None when there is none."""
    path = Path(state_dir) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ClusterError(f"{path}: unreadable ({e}); stop its processes by PID and remove the file") from None


def _waves(state: dict) -> list[list[RecordedGroup]]:
    """The recorded groups in stopping order: workers, the head, the MLflow server."""
    groups = [RecordedGroup.from_record(g) for g in state.get("groups", [])]
    order = [[g for g in groups if g.name.startswith("worker")], [g for g in groups if g.name == "head"],
             [g for g in groups if g.name == "mlflow"]]
    return [wave for wave in order if wave]


def alive_pids(state: dict) -> list[int]:
    """Every recorded process of ``state`` that is still alive."""
    return sorted(pid for wave in _waves(state) for g in wave for pid in g.alive_pids())


def _check_free(state_dir: Path, ports: dict[str, int | None]) -> None:
    state = read_state(state_dir)
    if state is not None and alive_pids(state):
        raise ClusterError(f"{state_dir / STATE_FILE} records a cluster that still runs (dashboard "
                           f"{state.get('dashboard')}); stop it first: cluster/down.sh --state {state_dir}")
    for what, port in ports.items():
        if port and not _port_free(port):
            raise ClusterError(f"port {port} ({what}) is in use on {LOOPBACK}; give another one with --{what}")


def start_mlflow(state_dir: Path, port: int, python: str = sys.executable) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` in a process session of its own: SQLite store and
    proxied artifacts under ``<state_dir>/mlflow``, its output in ``<state_dir>/logs/mlflow.log``.
    Returns at once (:func:`wait_http` waits until it answers)."""
    root = state_dir / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", LOOPBACK, "--port", str(port),
           "--workers", "1"]
    # MLflow 3's GenAI job runner (on by default) starts 7 huey consumers that keep 2 cores busy and outlive
    # a SIGTERM to the server; memsel runs no MLflow jobs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(state_dir / "logs" / "mlflow.log", "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=root, env=env)


def wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Wait until GET ``url`` answers 200; ClusterError when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited ({proc.returncode})" if proc.poll() is not None else f"no answer in {timeout:.0f} s"
            raise ClusterError(f"{what}: {state} at {url}")
        time.sleep(0.3)


def _mlflow_record(proc: subprocess.Popen) -> dict:
    group = RecordedGroup(name="mlflow", pid=proc.pid, start=process_start(proc.pid), term="all")
    group.record()
    return {"name": group.name, "pid": group.pid, "start": group.start, "term": group.term,
            "pids": {str(pid): start for pid, start in group.pids.items()}}


def _start_all(args: argparse.Namespace, state_dir: Path, python: str) -> dict:
    """Start MLflow, the head and the workers; returns the state to record. Stops what it started
    when a step fails."""
    mlflow = start_mlflow(state_dir, args.mlflow_port, python)  # starts while the nodes do
    mlflow_url = f"http://{LOOPBACK}:{args.mlflow_port}"
    path = f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cluster = LocalCluster(log_dir=state_dir / "logs", env={"PATH": path}, python=python)
    try:
        cluster.start_head(num_cpus=args.cpus_per_node, port=args.port, dashboard=True,
                           dashboard_port=args.dashboard_port)
        for _ in range(args.workers):
            cluster.add_worker(num_cpus=args.cpus_per_node)
        cluster.wait_for_nodes(args.workers + 1, timeout=120)
        wait_http(f"{mlflow_url}/health", mlflow, 120, f"mlflow server (log: {state_dir / 'logs' / 'mlflow.log'})")
        nodes = cluster.detach()
    except BaseException:
        cluster.stop()
        stop_recorded([[RecordedGroup.from_record(_mlflow_record(mlflow))]], grace=10)
        raise
    return {"gcs": cluster.address, "dashboard": cluster.dashboard_url, "mlflow": mlflow_url,
            "python": python, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "temp_dir": nodes["temp_dir"],
            "remove_dirs": nodes["remove_dirs"], "groups": [*nodes["groups"], _mlflow_record(mlflow)]}


def up(args: argparse.Namespace) -> int:
    """Start the cluster and the MLflow server, record them in ``<state>/state.json``, say how to use them."""
    state_dir = Path(args.state).resolve()
    _check_free(state_dir, {"dashboard-port": args.dashboard_port, "mlflow-port": args.mlflow_port,
                            "port": args.port})
    state_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    state = _start_all(args, state_dir, args.python)
    write_text_atomic(state_dir / STATE_FILE, json.dumps(state, indent=1))
    token = token_file()
    print(f"Ray cluster up in {time.monotonic() - start:.0f} s: head + {args.workers} worker(s), "
          f"{args.cpus_per_node} CPU(s) each, all on {LOOPBACK}\n"
          f"  dashboard / Jobs API: {state['dashboard']}   (GCS {state['gcs']}; token auth on: {token})\n"
          f"  MLflow:               {state['mlflow']}   (store and artifacts in {state_dir / 'mlflow'})\n"
          f"  state and logs:       {state_dir}\n"
          "submit:\n"
          f"  export RAY_JOBS_ADDRESS={state['dashboard']}\n"
          f"  memsel submit --follow -- pipeline --config configs/quickstart.yaml --tracking-uri {state['mlflow']}\n"
          f"  memsel jobs list\n"
          f"open MLflow: {state['mlflow']}\n"
          f"stop:        cluster/down.sh --state {state_dir}")
    return 0


def down(args: argparse.Namespace) -> int:
    """Stop the processes that ``<state>/state.json`` records (and what they started), nothing else."""
    state_dir = Path(args.state).resolve()
    state = read_state(state_dir)
    if state is None:
        print(f"no cluster recorded in {state_dir}; nothing stopped")
        return 0
    start = time.monotonic()
    waves = _waves(state)
    left = stop_recorded(waves, grace=args.grace)
    if left:
        print(f"still alive after SIGKILL: PIDs {left} (recorded in {state_dir / STATE_FILE})", file=sys.stderr)
        return 1
    import shutil

    for folder in state.get("remove_dirs", []):  # the nodes' temporary folders that up made
        if Path(folder).name.startswith("memsel-ray-"):
            shutil.rmtree(folder, ignore_errors=True)
    (state_dir / STATE_FILE).replace(state_dir / f"{STATE_FILE}.stopped")  # kept for the record
    names = ", ".join(g.name for wave in waves for g in wave)
    print(f"stopped {names} in {time.monotonic() - start:.0f} s; none of their processes is left "
          f"(MLflow's store stays in {state_dir / 'mlflow'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``up`` and ``down`` commands and their options."""
    parser = argparse.ArgumentParser(prog="python -m memsel.standing_cluster", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    u = sub.add_parser("up", help="start a Ray head, N workers and an mlflow server on 127.0.0.1")
    u.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (default 1)")
    u.add_argument("--cpus-per-node", type=int, default=1, help="CPUs each node offers (default 1)")
    u.add_argument("--dashboard-port", type=int, default=8265, help="dashboard and Jobs API (default 8265)")
    u.add_argument("--mlflow-port", type=int, default=5000, help="mlflow server (default 5000)")
    u.add_argument("--port", type=int, default=None, help="the head's GCS port (default: a free one)")
    u.add_argument("--python", default=sys.executable, help="the nodes' Python (default: this one)")
    d = sub.add_parser("down", help="stop what `up` recorded in the state folder, by PID")
    d.add_argument("--grace", type=float, default=20, help="seconds between SIGTERM and SIGKILL (default 20)")
    for p in (u, d):
        p.add_argument("--state", default=".cluster", help="folder of state.json, logs and MLflow's store "
                                                           "(default: .cluster)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """``python -m memsel.standing_cluster up|down``: exit 0, 1 (processes left) or 2 (refused, failed to start)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if getattr(args, "workers", 0) < 0 or getattr(args, "cpus_per_node", 1) < 1:
        print("memsel.standing_cluster: --workers must be >= 0 and --cpus-per-node >= 1", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(up(args) if args.action == "up" else down(args))
    except ClusterError as e:
        print(f"memsel.standing_cluster: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
