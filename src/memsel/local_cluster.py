"""A real multi-node Ray cluster on this machine: one ``ray start --head`` and ``ray start`` workers,
each a ``--block`` process in a process session of its own, stopped by PID (never ``ray stop``,
which ends every Ray on the machine, other people's included).

    with LocalCluster() as cluster:
        cluster.start_head(num_cpus=1)
        worker = cluster.add_worker(num_cpus=1, hide=["/data/private"], resources={"worker_node": 1})
        cluster.wait_for_nodes(2, timeout=60)
        subprocess.run([sys.executable, "driver.py"], env={**os.environ, **cluster.client_env()})
        cluster.kill_worker(worker)          # SIGKILL to that node's whole process session
    # stop(): SIGTERM, wait, SIGKILL; nothing of either node is left running

What it takes care of:

* Everything listens on 127.0.0.1, on ports picked at random, so that clusters run side by side.
  ``--node-ip-address=127.0.0.1`` alone does not do it: Ray turns the loopback address into the
  machine's external one unless its single-node switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``)
  is set, and with that switch set ``ray start`` refuses to add a worker node. Nodes are therefore
  started by a small wrapper of Ray's CLI (:data:`_RAY_CLI`) that passes that check and says that
  this machine's address is 127.0.0.1; the processes each node starts inherit the switch.
* A driver must connect with the same switch set *before it imports Ray*, and with token
  authentication asked for: :meth:`LocalCluster.client_env` (otherwise Ray rewrites the
  cluster's 127.0.0.1 address and the driver hangs for minutes trying the external address).
* Token authentication stays on (``RAY_AUTH_MODE=token`` on every node; the token is Ray's usual
  ``~/.ray/auth_token``, or ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` when set; a missing token
  file is generated with ``ray get-auth-token --generate``).
* A worker with ``hide=[...]`` runs in a mount namespace of its own (``unshare --mount
  --map-root-user``) with an empty tmpfs over each hidden folder: its processes see an empty
  folder where the host has files (and what they write there stays in that tmpfs, 64 MB at most).
* Each cluster has a temporary folder of its own (Ray's ``--temp-dir``: sessions, logs, sockets)
  unless given one, so that it neither records itself as the machine's "current" cluster in
  ``/tmp/ray`` (where a plain ``ray.init()`` of somebody else would find and join it) nor moves
  ``/tmp/ray/session_latest``. :meth:`LocalCluster.stop` removes that folder.
* Each worker node has a temporary folder of its own, as it would on a machine of its own. Nodes that
  share one share ``runtime_resources``: a node unpacking a job's ``working_dir`` replaces the folder
  that the job's driver, on another node, has as its current directory (torch's MKL then dies with
  "Cannot load libtorch_cpu.so", found with ``memsel submit``).
* A cluster may outlive the process that started it (``cluster/up.sh``, memsel.standing_cluster):
  :meth:`LocalCluster.detach` returns what identifies its processes (each node's session leader, its
  start time, the PIDs recorded from it), and :func:`stop_recorded` stops exactly those, and what
  they started since, from any process.

Whether the nodes are up is asked of the GCS by a short separate process (:data:`_PROBE`), so the
calling process never joins the cluster (nor imports Ray) to wait for it.

Limits: hiding hides files only (the worker shares the network, the process list and /dev/shm with
the host; ``/proc/<host pid>/root`` is refused to it). A process that has already imported Ray
without the single-node switch (a test session with a local Ray) cannot join: run drivers as
separate processes with :meth:`LocalCluster.client_env`. If the calling process is SIGKILLed, its
nodes keep running (own sessions; ``atexit`` does not run): their PIDs are in its log.
Costs on 2 busy cores: head 8-14 s, a worker 5-7 s, :meth:`LocalCluster.stop` 2-5 s.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from memsel.lifecycle import descendants, process_start, process_stats

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray's single-node switch: off ("0") keeps a node's address the loopback one (see module docstring).
SINGLE_NODE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# `ray ...` (Ray's own CLI) for a machine whose address is 127.0.0.1: passes `ray start`'s refusal to
# add a worker node while the single-node switch is set, and answers "127.0.0.1" where Ray asks for
# this machine's address (it would resolve 127.0.0.1 to the external address otherwise).
_RAY_CLI = """
import sys
from ray._private import ray_constants, services
ray_constants.ENABLE_RAY_CLUSTER = True
services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"
from ray.scripts.scripts import main
sys.argv[0] = "ray"
main()
"""

# Polls the GCS at argv[1] until exactly argv[2] nodes are alive (or argv[3] seconds have passed);
# prints the alive nodes as JSON; exit status 0 when the count was reached.
_PROBE = """
import json, sys, time
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
address, want, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
client, alive = GcsClient(address=address), None
while True:
    try:
        nodes = client.get_all_node_info(timeout=5, state_filter=gcs_pb2.GcsNodeInfo.ALIVE)
        alive = [{"node_id": nid.hex(), "node_manager_port": n.node_manager_port,
                  "resources": dict(n.resources_total)} for nid, n in nodes.items()]
    except Exception as e:
        print(f"GCS not answering: {e}", file=sys.stderr)
    if alive is not None and len(alive) == want or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(alive))
sys.exit(0 if alive is not None and len(alive) == want else 1)
"""

_STARTED = "Ray runtime started"  # what `ray start` prints once its node's processes are up


class ClusterError(RuntimeError):
    """A node did not start, exited on its own, or the cluster did not reach the expected size."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 now (held together while they are picked).

    Another process may still take one before Ray binds it; the window is a second or two."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (session id, start time) of every live (not zombie) process."""
    return {pid: (sid, start) for pid, (_, sid, start) in process_stats().items()}


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class NodeHandle:
    """One ``ray start --block`` node: its process (the leader of its process session, so its PID is
    the session id), its ``ray start`` output, its node manager port (which tells its node apart in
    the GCS) and the PIDs recorded from its session (pid -> start time, to tell a reused PID)."""

    name: str
    proc: subprocess.Popen
    log: Path
    node_manager_port: int
    pids: dict[int, str] = field(default_factory=dict)
    killed: bool = False  # by kill_worker: its end is expected

    @property
    def pid(self) -> int:
        """PID of the node's ``ray start`` process, and id of its process session."""
        return self.proc.pid

    def session_pids(self) -> dict[int, str]:
        """pid -> start time of the live processes of this node's process session."""
        return {pid: start for pid, (sid, start) in _process_table().items() if sid == self.pid}

    def record(self) -> None:
        """Remember the processes its session has now (a process that leaves the session is still
        stopped by PID)."""
        self.pids.update(self.session_pids())

    def alive_pids(self) -> list[int]:
        """The node's processes still alive: its session now, and recorded PIDs not reused since."""
        self.proc.poll()  # reap the `ray start` process itself when it has exited
        alive = set(self.session_pids())
        alive |= {pid for pid, start in self.pids.items() if process_start(pid) == start}
        return sorted(alive)

    def leader_alive(self) -> bool:
        """Whether the node's ``ray start`` process still runs."""
        return self.proc.poll() is None

    def sigterm_targets(self) -> list[int]:
        """Who gets the SIGTERM that stops this node: its ``ray start`` process (which stops the node's
        processes in order), else, when it has gone, whatever of the node is left."""
        return [self.pid] if self.leader_alive() else self.alive_pids()

    def reap(self, timeout: float = 5) -> None:
        """Collect the ``ray start`` process's exit status once it has ended."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)

    def to_record(self) -> dict:
        """What another process needs to stop this node later (:class:`RecordedGroup`)."""
        self.record()
        return {"name": self.name, "pid": self.pid, "start": process_start(self.pid),
                "pids": {str(pid): start for pid, start in self.pids.items()}}

    def output_tail(self, chars: int | None = 3000) -> str:
        """The end of the node's ``ray start`` output (for error messages); None: all of it."""
        try:
            text = self.log.read_text(errors="replace")
            return text[-chars:] if chars else text
        except OSError:
            return ""


@dataclass
class WorkerHandle(NodeHandle):
    """A worker node; ``hidden``: the folders its processes see empty."""

    hidden: tuple[Path, ...] = ()


def _in_mount_namespace(cmd: list[str], hidden: Sequence[Path]) -> list[str]:
    """``cmd`` run in a mount namespace of its own, with an empty tmpfs over each of ``hidden``.

    The current folder is entered again after the mounts: a process keeps the folder it was in, so
    a worker started inside a hidden folder would otherwise still read it through relative paths."""
    mounts = " && ".join(f"mount -t tmpfs -o size=64m memsel-hidden {shlex.quote(str(p))}" for p in hidden)
    script = f'{mounts} && {{ cd -- "$1" 2>/dev/null || cd /; }} && shift && exec "$@"'
    # private propagation (unshare's default, spelled out): the mounts never reach the host's namespace
    return ["unshare", "--mount", "--propagation=private", "--map-root-user", "sh", "-c", script, "sh",
            os.getcwd(), *cmd]


def _needed_by_nodes(temp_dir: Path, python: str) -> dict[str, Path]:
    """What every node reads; a hidden folder must not hold any of it."""
    import importlib.util

    needed = {"the cluster's temporary folder": temp_dir, "the Python environment": Path(sys.prefix),
              "the Python installation": Path(sys.base_prefix), "the nodes' Python": Path(python).parent}
    spec = importlib.util.find_spec("ray")  # finds the package without importing it
    if spec is not None and spec.origin:
        needed["Ray's package"] = Path(spec.origin).parent
    if not os.environ.get("RAY_AUTH_TOKEN"):
        needed["the auth token"] = token_file()
    return {what: path.resolve() for what, path in needed.items()}


def token_file() -> Path:
    """Where Ray's clients and nodes read the auth token from: ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``
    (``$RAY_AUTH_TOKEN``, when set, is the token itself)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def check_hidden(hide: Iterable[str | Path], temp_dir: Path, python: str = sys.executable) -> tuple[Path, ...]:
    """The folders of ``hide``, resolved, after checking that each can be hidden from a worker node
    (whose Ray runs on ``python``): an existing folder that holds nothing the node needs (raises
    ValueError otherwise)."""
    paths = tuple(Path(p).resolve() for p in hide)
    if paths and shutil.which("unshare") is None:
        raise ValueError("hiding folders from a worker node needs util-linux's `unshare`")
    needed = _needed_by_nodes(temp_dir, python)
    for path in paths:
        if not path.is_dir():
            raise ValueError(f"hide: {path} is not an existing folder (only folders can be hidden)")
        for what, need in needed.items():
            if need == path or path in need.parents:
                raise ValueError(f"hide: {path} holds {what} ({need}), which every node needs")
    return paths


class LocalCluster:
    """A Ray cluster of ``ray start`` nodes on this machine, stopped by PID (a context manager).

    ``temp_dir``: Ray's ``--temp-dir`` for the head; None (the default) makes a folder of this
    cluster's own, removed by :meth:`stop`. Each worker node has a temporary folder of its own (as on
    a machine of its own): ``<temp_dir>/<worker name>`` in the cluster's own folder, else a new folder
    in /tmp, removed by :meth:`stop`. Given a folder (Ray's default ``/tmp/ray``, say), the
    head records its address there for plain ``ray.init()`` calls to find, and :meth:`stop` deletes
    that record again if it still names this cluster. ``log_dir``: where each node's ``ray start``
    output goes (``<name>.log``; default: ``temp_dir``). ``env``: more environment for every node,
    such as Ray's ``RAY_<setting>`` variables (``RAY_health_check_period_ms``: the GCS declares a
    node dead after 5 missed health checks, 3 s apart by default). ``python``: the interpreter with Ray.
    """

    def __init__(self, temp_dir: str | Path | None = None, log_dir: str | Path | None = None,
                 env: dict[str, str] | None = None, python: str = sys.executable):
        self.python = python
        self.env = dict(env or {})
        self._own_temp_dir = temp_dir is None
        self.temp_dir = Path(temp_dir) if temp_dir is not None else None
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.head: NodeHandle | None = None
        self.workers: list[WorkerHandle] = []
        self.port: int | None = None
        self.dashboard_port: int | None = None
        self._stopped = False
        self._worker_dirs: list[Path] = []  # workers' temporary folders outside temp_dir

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """The head's GCS address, ``127.0.0.1:PORT`` (what ``ray.init(address=...)`` takes)."""
        if self.port is None:
            raise ClusterError("the cluster has no head yet (start_head)")
        return f"{LOOPBACK}:{self.port}"

    @property
    def dashboard_url(self) -> str | None:
        """``http://127.0.0.1:PORT`` of the dashboard and Jobs API, or None when started without."""
        return f"http://{LOOPBACK}:{self.dashboard_port}" if self.dashboard_port else None

    def client_env(self) -> dict[str, str]:
        """The environment variables a driver process needs to join this cluster (set them before it
        imports Ray): its address, token authentication, and Ray's single-node switch, without which
        Ray rewrites the 127.0.0.1 address to the machine's external one and never connects."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", SINGLE_NODE_SWITCH: "0"}

    def _node_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(self.env)
        env.update({SINGLE_NODE_SWITCH: "0", "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"})
        return env

    def _prepare(self) -> None:
        """A temporary folder, a log folder and an auth token, before the head starts."""
        if self._stopped:
            raise ClusterError("this cluster was stopped; make a new LocalCluster")
        if self.temp_dir is None:
            # short: Ray's Unix sockets live under it (at most 107 characters a path)
            self.temp_dir = Path(tempfile.mkdtemp(prefix="memsel-ray-", dir="/tmp"))
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.log_dir or self.temp_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # a caller that forgets stop() leaves no Ray running at exit
        env = self._node_env()
        if not (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH") or token_file().is_file()):
            log.info("no Ray auth token yet: generating ~/.ray/auth_token")
            subprocess.run([self.python, "-c", _RAY_CLI, "get-auth-token", "--generate"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)

    def _ray_start(self, args: list[str], num_cpus: int, resources: dict | None, ports: list[int],
                   temp_dir: Path | None = None) -> list[str]:
        """The ``ray start ... --block`` command of one node; ``ports``: 6 free ports for its own servers;
        ``temp_dir``: its temporary folder (default: the cluster's)."""
        manager, objects, agent, agent_grpc, runtime_env, metrics = ports
        args = [*args, f"--node-ip-address={LOOPBACK}", f"--num-cpus={num_cpus}",
                f"--node-manager-port={manager}", f"--object-manager-port={objects}",
                f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                # 0: each Ray worker process binds a port the OS picks (default: a fixed shared range)
                "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={temp_dir or self.temp_dir}",
                "--disable-usage-stats", "--log-style=record", "--log-color=false", "--block"]
        if resources:
            args.append("--resources=" + json.dumps(resources))
        return [self.python, "-c", _RAY_CLI, "start", *args]

    def _spawn(self, cls: type, name: str, cmd: list[str], env: dict, manager_port: int, **extra) -> NodeHandle:
        path = self.log_dir / f"{name}.log"
        with open(path, "w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        log.info("%s: `ray start` PID %d (its process session)", name, proc.pid)
        return cls(name=name, proc=proc, log=path, node_manager_port=manager_port, **extra)

    def start_head(self, num_cpus: int, port: int | None = None, dashboard: bool = False,
                   resources: dict | None = None, timeout: float = 120,
                   dashboard_port: int | None = None) -> NodeHandle:
        """Start the head node (GCS on ``port``, a free one when None; with ``dashboard``, the dashboard
        and Jobs API on ``dashboard_port``, a free one when None) and wait until ``ray start`` reports
        it up."""
        if self.head is not None:
            raise ClusterError("the head is already started")
        self._prepare()
        gcs, dash, client, autoscaler_metrics, dashboard_metrics, *node_ports = free_ports(11)
        self.port = port or gcs
        dash = dashboard_port or dash
        args = ["--head", f"--port={self.port}", f"--ray-client-server-port={client}",
                f"--dashboard-host={LOOPBACK}", f"--include-dashboard={str(dashboard).lower()}",
                f"--dashboard-port={dash}"]  # passed without the dashboard too: its head process still starts
        # The autoscaler's and the dashboard's metrics servers have fixed default ports (44217, 44227)
        # that a second cluster on the machine could not bind.
        env = {**self._node_env(), "AUTOSCALER_METRIC_PORT": str(autoscaler_metrics),
               "DASHBOARD_METRIC_PORT": str(dashboard_metrics)}
        self.head = self._spawn(NodeHandle, "head", self._ray_start(args, num_cpus, resources, node_ports), env,
                                node_ports[0])
        self._wait_started(self.head, timeout)
        if dashboard:
            self._wait_port(dash, self.head, timeout)
            self.dashboard_port = dash
        return self.head

    def add_worker(self, num_cpus: int, hide: Iterable[str | Path] = (), resources: dict | None = None,
                   timeout: float = 120) -> WorkerHandle:
        """Start a worker node that joins the head, with ``resources`` (custom ones to place tasks on
        it, e.g. ``{"worker_node": 1}``) and an empty tmpfs over each folder of ``hide`` (its
        processes do not see what the host has there); wait until ``ray start`` reports it up."""
        if self.head is None:
            raise ClusterError("start_head() before add_worker()")
        hidden = check_hidden(hide, self.temp_dir, self.python)
        ports = free_ports(6)
        name = f"worker-{len(self.workers) + 1}"
        cmd = self._ray_start([f"--address={self.address}"], num_cpus, resources, ports, self._worker_dir(name))
        if hidden:
            cmd = _in_mount_namespace(cmd, hidden)
        worker = self._spawn(WorkerHandle, name, cmd, self._node_env(), ports[0], hidden=hidden)
        self.workers.append(worker)
        self._wait_started(worker, timeout)
        return worker

    def _worker_dir(self, name: str) -> Path:
        """A worker node's own temporary folder. Nodes sharing one would share ``runtime_resources``: a
        node unpacking a job's working_dir replaces the folder that the job's driver, on another node,
        runs in (its cwd is then deleted; torch's MKL dies with "Cannot load libtorch_cpu.so")."""
        if self._own_temp_dir:
            folder = self.temp_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        folder = Path(tempfile.mkdtemp(prefix=f"memsel-ray-{name}-", dir="/tmp"))
        self._worker_dirs.append(folder)
        return folder

    def _wait_started(self, node: NodeHandle, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _STARTED not in node.output_tail(None):
            if node.proc.poll() is not None:
                raise ClusterError(f"{node.name}: `ray start` exited ({node.proc.returncode}):\n{node.output_tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{node.name}: not up after {timeout:.0f} s:\n{node.output_tail()}")
            time.sleep(0.3)
        node.record()
        log.info("%s is up (%d processes)", node.name, len(node.pids))

    def _wait_port(self, port: int, node: NodeHandle, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, port)) == 0:
                    return
            if node.proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"{node.name}: nothing listens on port {port}:\n{node.output_tail()}")
            time.sleep(0.3)

    def _check_running(self) -> None:
        """Raise when a node that nobody killed has exited."""
        for node in [self.head, *self.workers]:
            if node is not None and not node.killed and node.proc.poll() is not None:
                raise ClusterError(f"{node.name}: `ray start` exited ({node.proc.returncode}):\n"
                                   f"{node.output_tail()}")

    def wait_for_nodes(self, n: int, timeout: float = 60) -> list[dict]:
        """Wait until exactly ``n`` nodes are alive in the GCS; returns them (``node_id``,
        ``node_manager_port``, ``resources``). Asked by a separate short process: the calling process
        neither joins the cluster nor imports Ray. Raises ClusterError when a node exits on its own
        or the count is not reached in ``timeout`` seconds."""
        probe = subprocess.Popen([self.python, "-c", _PROBE, self.address, str(n), str(timeout)],
                                 env={**os.environ, **self.client_env()}, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            while True:
                try:
                    out, err = probe.communicate(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    self._check_running()
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.communicate()
        lines = out.strip().splitlines()
        alive = json.loads(lines[-1]) if lines else None
        if probe.returncode != 0:
            seen = "no answer from the GCS" if alive is None else f"{len(alive)} alive"
            raise ClusterError(f"expected {n} alive nodes at {self.address} within {timeout:.0f} s, {seen}:\n"
                               f"{err[-2000:]}")
        for node in [self.head, *self.workers]:
            if node is not None and not node.killed:
                node.record()
        return alive

    def node_id(self, node: NodeHandle, nodes: list[dict]) -> str:
        """The Ray node id of ``node`` among ``nodes`` (as :meth:`wait_for_nodes` returns them)."""
        for info in nodes:
            if info["node_manager_port"] == node.node_manager_port:
                return info["node_id"]
        raise ClusterError(f"{node.name} is not among the nodes given")

    def kill_worker(self, worker: WorkerHandle, sig: int = signal.SIGKILL, timeout: float = 10) -> list[int]:
        """Send ``sig`` to every process of ``worker``'s node (its process session and the PIDs
        recorded from it), as a node failure would; wait up to ``timeout`` s for them to end and
        return those still alive. The GCS notices the node's death later (:meth:`wait_for_nodes`)."""
        worker.killed = True
        _signal_all(worker.alive_pids(), sig)
        deadline = time.monotonic() + timeout
        while (left := worker.alive_pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        log.info("%s: %s sent, %d processes left", worker.name, signal.Signals(sig).name, len(left))
        return left

    def alive_pids(self) -> list[int]:
        """Every process of every node still alive (process sessions and recorded PIDs)."""
        return sorted(pid for node in [self.head, *self.workers] if node is not None for pid in node.alive_pids())

    def detach(self) -> dict:
        """Leave the nodes running after this process ends (a cluster that outlives the command that
        started it, memsel.standing_cluster): no stop at exit; returns what :func:`stop_recorded`
        needs, in another process, to stop exactly these nodes (JSON-ready)."""
        atexit.unregister(self.stop)
        self._stopped = True  # this object no longer owns the nodes
        nodes = [node for node in [*self.workers, self.head] if node is not None]
        own = [self.temp_dir] if self._own_temp_dir else []
        return {"temp_dir": str(self.temp_dir), "remove_dirs": [str(d) for d in [*own, *self._worker_dirs]],
                "groups": [node.to_record() for node in nodes]}

    def stop(self, grace: float = 20) -> list[int]:
        """Stop every node: SIGTERM to each node's ``ray start`` (workers first), which ends its
        node's processes in order; after ``grace`` seconds SIGKILL to whatever of the nodes is left.
        Then forget the cluster's address record and remove its own temporary folder. Returns the
        PIDs still alive after all that (empty unless a process ignores SIGKILL). Idempotent."""
        if self._stopped:
            return self.alive_pids()
        self._stopped = True
        atexit.unregister(self.stop)
        start = time.monotonic()
        for group in (self.workers, [self.head] if self.head else []):
            _terminate(group, grace)
        self._forget_cluster()
        left = self.alive_pids()
        if left:
            log.error("Ray processes still alive after stop: %s", left)
        if self._own_temp_dir and self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        for folder in self._worker_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        log.info("cluster %s stopped in %.1f s", self.port, time.monotonic() - start)
        return left

    def _forget_cluster(self) -> None:
        """``ray start`` records its address for later plain ``ray.init()`` calls to join; ``ray stop``
        would delete that record, and so do we, when it names this cluster."""
        if self.temp_dir is None or self.port is None:
            return
        record = self.temp_dir / "ray_current_cluster"
        with contextlib.suppress(OSError):
            if record.read_text().strip().endswith(f":{self.port}"):
                record.unlink()


@dataclass
class RecordedGroup:
    """A process session that another process started and recorded (a node of a detached
    :class:`LocalCluster`, an ``mlflow server``): its leader's PID (which is the session id) and start
    time, and the PIDs recorded from it (pid -> start time, to tell a reused PID), so that any process
    can stop exactly it. ``term``: "leader" sends the SIGTERM to the leader only (``ray start`` then
    stops its node in order) and to recorded processes that left the session (a Ray job's driver runs
    in a session of its own); "all" sends it to every process of the group."""

    name: str
    pid: int
    start: str | None
    pids: dict[int, str] = field(default_factory=dict)
    term: str = "leader"

    @classmethod
    def from_record(cls, record: dict) -> "RecordedGroup":
        """The group that :meth:`NodeHandle.to_record` (or a record of the same keys) describes."""
        return cls(name=record["name"], pid=int(record["pid"]), start=record.get("start"),
                   pids={int(pid): start for pid, start in record.get("pids", {}).items()},
                   term=record.get("term", "leader"))

    def leader_alive(self) -> bool:
        """Whether the leader still runs (same PID, same start time)."""
        return self.start is not None and process_start(self.pid) == self.start

    def _session(self) -> dict[int, str]:
        # A session id is its leader's PID: trusted while the leader is alive or its PID is not reused.
        table = _process_table()
        if not self.leader_alive() and self.pid in table:
            return {}
        return {pid: start for pid, (sid, start) in table.items() if sid == self.pid}

    def record(self) -> None:
        """Add the group's session now, and every live descendant of its processes (a job's driver)."""
        self.pids.update(self._session())
        for pid in self.alive_pids():
            self.pids.update(descendants(pid))

    def alive_pids(self) -> list[int]:
        """The group's processes still alive: its session now, and recorded PIDs not reused since."""
        alive = set(self._session())
        alive |= {pid for pid, start in self.pids.items() if process_start(pid) == start}
        return sorted(alive)

    def sigterm_targets(self) -> list[int]:
        """Who gets the first SIGTERM (see ``term``)."""
        alive = self.alive_pids()
        if self.term == "all" or not self.leader_alive():
            return alive
        session = self._session()
        return [self.pid] + [pid for pid in alive if pid not in session]

    def reap(self, timeout: float = 5) -> None:
        """Nothing to collect: the group's processes are not this process's children."""


def stop_recorded(waves: Sequence[Sequence[RecordedGroup]], grace: float = 20) -> list[int]:
    """Stop recorded groups wave after wave (workers, then the head, then what served them), the
    groups of a wave together: SIGTERM, up to ``grace`` seconds, SIGKILL (:func:`_terminate`).
    Every group's processes and their descendants are recorded first. Returns the PIDs still alive
    after all that (empty unless a process ignores SIGKILL)."""
    for wave in waves:
        for group in wave:
            group.record()
    for wave in waves:
        _terminate(wave, grace)
    return sorted(pid for wave in waves for group in wave for pid in group.alive_pids())


def _wait_gone(nodes: Sequence[NodeHandle | RecordedGroup], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(node.alive_pids() for node in nodes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _terminate(nodes: Sequence[NodeHandle | RecordedGroup], grace: float) -> None:
    """SIGTERM to each node's ``ray start`` process, else (it has gone) to what is left of its node
    (``sigterm_targets``); SIGKILL to all of it after ``grace`` seconds.

    Only ``ray start`` gets the SIGTERM: it stops its node's processes in order in 2-4 s, while a
    SIGTERM to every process at once leaves the GCS and the autoscaler monitor lingering ~30 s."""
    for node in nodes:
        _signal_all(node.sigterm_targets(), signal.SIGTERM)
    if not _wait_gone(nodes, grace):
        for node in nodes:
            if left := node.alive_pids():
                log.warning("%s: still running %.0f s after SIGTERM, sending SIGKILL", node.name, grace)
                _signal_all(left, signal.SIGKILL)
        _wait_gone(nodes, 10)
    for node in nodes:
        node.reap()
