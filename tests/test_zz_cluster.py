"""A real two-node Ray cluster (`ray start` head + worker) and a memsel job submitted to it with
the scripts in cluster/, token authentication on. Named test_zz_* to run last: `ray stop` ends
every Ray process on the machine, the shared test session's included."""

from __future__ import annotations

import json
import os
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


def _stop_all() -> None:
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cluster():
    import ray

    if ray.is_initialized():  # the shared session's local Ray would compete for the 2 cores
        ray.shutdown()
    port, dash = _free_port(), _free_port()
    env = {**os.environ, "PORT": str(port), "DASHBOARD_PORT": str(dash), "NUM_CPUS": "1",
           "MEMSEL_VENV": str(BIN.parent)}
    try:
        head = subprocess.run([str(REPO / "cluster" / "start-head.sh")], env=env, capture_output=True,
                              text=True, timeout=180)
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        worker = subprocess.run([str(REPO / "cluster" / "start-worker.sh"), f"127.0.0.1:{port}"], env=env,
                                capture_output=True, text=True, timeout=180)
        assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
        yield {"gcs": f"127.0.0.1:{port}", "jobs": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _stop_all()


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
