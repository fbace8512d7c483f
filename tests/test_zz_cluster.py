"""A real two-node Ray cluster (`ray start` head + worker) and a memsel job submitted to it with
the scripts in cluster/, token authentication on.

The head and the worker run with `--block`, each in its own process session, and are stopped by
signalling those sessions only: `ray stop` would end every Ray process on the machine, including a
user's jobs that happen to run beside the tests. Named test_zz_* to run last (the shared test
session's local Ray is shut down first, to leave the two cores to the cluster)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(script: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`cluster/<script> ... --block` in a new process session (so that it can be stopped alone)."""
    with open(log, "w") as out:
        return subprocess.Popen([str(REPO / "cluster" / script), *args, "--block"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"ray start exited early ({proc.returncode}): {log.read_text()[-2000:]}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"nothing listens on port {port} after {timeout:.0f} s: {log.read_text()[-2000:]}")


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(pid) for pid, s in (line.split() for line in out.splitlines()) if int(s) == sid]


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each node's process session, then SIGKILL to whatever of it is left."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        for p in procs:
            for pid in _session_pids(p.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_session_pids(p.pid) for p in procs):
            for p in procs:
                p.poll()  # reap the `ray start` process itself
            time.sleep(0.5)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _forget_cluster(port: int) -> None:
    """`ray start` records its address for later plain `ray.init()` calls to join; `ray stop` would
    delete that record, and so do we, when it names the cluster we stopped."""
    from ray._common.utils import get_ray_address_file

    record = Path(get_ray_address_file(None))
    if record.is_file() and record.read_text().strip().endswith(f":{port}"):
        record.unlink()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    if ray.is_initialized():  # the shared session's local Ray would compete for the 2 cores
        ray.shutdown()
    logs = tmp_path_factory.mktemp("cluster_logs")
    port, dash = _free_port(), _free_port()
    env = {**os.environ, "PORT": str(port), "DASHBOARD_PORT": str(dash), "NUM_CPUS": "1",
           "MEMSEL_VENV": str(BIN.parent)}
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(_start("start-head.sh", [], env, logs / "head.log"))
        _wait_for_port(port, nodes[0], logs / "head.log")
        _wait_for_port(dash, nodes[0], logs / "head.log")
        nodes.append(_start("start-worker.sh", [f"127.0.0.1:{port}"], env, logs / "worker.log"))
        yield {"gcs": f"127.0.0.1:{port}", "jobs": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _stop(nodes)
        _forget_cluster(port)
        left = [pid for p in nodes for pid in _session_pids(p.pid)]
        assert not left, f"Ray processes left running: {left}"


def _job(jobs_address: str, code: str, auth: bool) -> subprocess.CompletedProcess:
    """`ray job submit` a Python snippet from a separate client process, with or without the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    if auth:
        env["RAY_AUTH_MODE"] = "token"  # the client then reads ~/.ray/auth_token
    return subprocess.run([str(BIN / "ray"), "job", "submit", "--address", jobs_address,
                           "--entrypoint-num-cpus", "0", "--", sys.executable, "-c", code],
                          env=env, capture_output=True, text=True, timeout=180)


def _alive_nodes(jobs_address: str) -> int:
    proc = _job(jobs_address, "import ray; ray.init(); print('NODES', sum(n['Alive'] for n in ray.nodes()))",
                auth=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return int([ln for ln in proc.stdout.splitlines() if ln.startswith("NODES")][-1].split()[1])


def test_a_local_run_starts_its_own_ray_beside_a_running_cluster(cluster):
    """memsel without --ray-address must not join (and then die with) a cluster that `ray start` runs."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = ("import ray; from memsel.config import load_config; from memsel.pipeline import init_ray; "
            "init_ray(load_config()); print('GCS', ray.get_runtime_context().gcs_address)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    gcs = [ln for ln in proc.stdout.splitlines() if ln.startswith("GCS")][-1].split()[1]
    assert not gcs.endswith(":" + cluster["gcs"].rsplit(":", 1)[1])


def test_pipeline_job_runs_on_a_two_node_cluster(cluster, tiny_config, tmp_path):
    # Authentication stays on: a client without the token is turned away.
    refused = _job(cluster["jobs"], "print('should not run')", auth=False)
    assert refused.returncode != 0 and "token" in (refused.stdout + refused.stderr).lower()
    deadline = time.time() + 60
    while (n := _alive_nodes(cluster["jobs"])) < 2 and time.time() < deadline:
        time.sleep(2)
    assert n == 2

    run_dir = tmp_path / "cluster_run"
    env = {**cluster["env"], "RAY_JOBS_ADDRESS": cluster["jobs"]}
    env.pop("RAY_AUTH_MODE", None)  # submit.sh must set it by itself
    proc = subprocess.run([str(REPO / "cluster" / "submit.sh"), "--", "pipeline", "--config", str(tiny_config),
                           "--run-dir", str(run_dir), "--set", "tune.num_samples=2", "--json"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in (proc.stdout + proc.stderr).lower()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["pretrained"]["selection_accuracy"] > results["most_recent"]["selection_accuracy"] + 0.2
    assert (run_dir / "ppo" / "selector.pt").is_file() and (run_dir / "tune" / "selector.pt").is_file()
    trials = json.loads((run_dir / "tune" / "outcome.json").read_text())["trials"]
    assert len(trials) == 2
