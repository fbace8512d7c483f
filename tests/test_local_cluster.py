"""memsel.local_cluster: a real two-node Ray cluster (`ray start` head + worker) on this machine, a
worker that cannot see a folder, a worker killed as a node failure, and nothing left running after.

The drivers run as separate processes (the cluster's client_env), so this file neither uses nor
shuts down the test session's shared local Ray and may run in any order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memsel.lifecycle import process_start
from memsel.local_cluster import LocalCluster, check_hidden

WORKER = {"worker_node": 1}

DRIVER = """
import json, os, sys, ray
ray.init(logging_level="WARNING")  # RAY_ADDRESS and the rest come from LocalCluster.client_env()

@ray.remote(num_cpus=1, resources={"worker_node": 1})
def look(path):
    return {"exists": os.path.exists(path), "listing": os.listdir(os.path.dirname(path)),
            "node": ray.get_runtime_context().get_node_id()}

print("RESULT", json.dumps({"alive": sum(n["Alive"] for n in ray.nodes()), "driver_sees": os.path.exists(sys.argv[1]),
                            "worker": ray.get(look.remote(sys.argv[1]))}))
"""


def _leftovers(recorded: dict[int, str], temp_dir: Path) -> list[str]:
    """Recorded processes still alive (same PID, same start), and any process naming the cluster's folder."""
    left = [f"PID {pid}" for pid, start in recorded.items() if process_start(pid) == start]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if str(temp_dir).encode() in Path(f"/proc/{entry}/cmdline").read_bytes() and process_start(int(entry)):
                    left.append(f"PID {entry} ({temp_dir} in its command line)")
            except OSError:
                pass
    return left


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hidden_from_worker")
    (folder / "secret.txt").write_text("only the head's machine has this")
    return folder / "secret.txt"


@pytest.fixture(scope="module")
def cluster(secret, tmp_path_factory):
    # The GCS declares a node dead after 5 missed health checks: 3 s apart by default, 1 s here.
    with LocalCluster(log_dir=tmp_path_factory.mktemp("local_cluster_logs"),
                      env={"RAY_health_check_period_ms": "1000"}) as c:
        c.start_head(num_cpus=1)
        worker = c.add_worker(num_cpus=1, hide=[secret.parent], resources=WORKER)
        nodes = c.wait_for_nodes(2, timeout=60)
        yield {"cluster": c, "worker": worker, "nodes": nodes}


@pytest.mark.slow
def test_a_task_on_the_worker_does_not_see_the_hidden_folder(cluster, secret):
    c = cluster["cluster"]
    env = {**os.environ, **c.client_env()}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(secret)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1].split(" ", 1)[1])
    assert result["alive"] == 2
    assert result["driver_sees"] is True
    assert result["worker"] == {"exists": False, "listing": [],
                                "node": c.node_id(cluster["worker"], cluster["nodes"])}


@pytest.mark.slow
def test_every_node_listens_on_the_loopback_address_only(cluster):
    if shutil.which("ss") is None:
        pytest.skip("needs `ss` (iproute2)")
    pids = set(cluster["cluster"].alive_pids())
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ours = [ln.split() for ln in out.splitlines() if any(f"pid={pid}," in ln for pid in pids)]
    assert len(ours) >= 8  # GCS, raylets, agents, client server, ...
    local = {"127.0.0.1", "[::ffff:127.0.0.1]"}
    assert [f for f in ours if f[3].rsplit(":", 1)[0] not in local] == []


@pytest.mark.slow
def test_a_second_cluster_beside_it_is_stopped_even_when_its_user_fails(cluster, tmp_path):
    recorded: dict[int, str] = {}
    with pytest.raises(RuntimeError, match="midway"):
        with LocalCluster(log_dir=tmp_path) as other:
            other.start_head(num_cpus=1)
            assert other.address != cluster["cluster"].address
            recorded.update(other.head.pids)
            raise RuntimeError("a test failing midway")
    assert recorded and _leftovers(recorded, other.temp_dir) == []
    assert not other.temp_dir.exists()


@pytest.mark.slow
def test_a_killed_worker_leaves_the_cluster(cluster):
    c, worker = cluster["cluster"], cluster["worker"]
    recorded = dict(worker.pids)
    assert len(recorded) >= 3 and worker.alive_pids()
    assert c.kill_worker(worker) == []
    assert [pid for pid, start in recorded.items() if process_start(pid) == start] == []
    alive = c.wait_for_nodes(1, timeout=60)
    assert [n["node_manager_port"] for n in alive] == [c.head.node_manager_port]


@pytest.mark.slow
def test_stop_leaves_no_process_of_any_node(cluster):
    c = cluster["cluster"]
    recorded = {pid: start for node in [c.head, *c.workers] for pid, start in node.pids.items()}
    assert c.stop() == []
    assert _leftovers(recorded, c.temp_dir) == []
    assert not c.temp_dir.exists()
    assert c.stop() == []  # idempotent (the fixture stops it again)


def test_folders_a_worker_needs_cannot_be_hidden(tmp_path):
    temp_dir = tmp_path / "ray"
    temp_dir.mkdir()
    assert check_hidden([tmp_path / "ray" / ".." / "ray"], Path("/elsewhere")) == (temp_dir,)
    with pytest.raises(ValueError, match="temporary folder"):
        check_hidden([tmp_path], temp_dir)
    with pytest.raises(ValueError, match="Python environment"):
        check_hidden([Path(sys.prefix)], temp_dir)
    with pytest.raises(ValueError, match="not an existing folder"):
        check_hidden([tmp_path / "missing"], temp_dir)
