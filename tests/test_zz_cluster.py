"""A real two-node Ray cluster (`ray start` head + worker, memsel.local_cluster), token authentication
on, and memsel drivers joined to it: a local run beside it, a sweep whose worker cannot see the run
directory, a worker killed mid-sweep. (Jobs submitted with `memsel submit` to a cluster of
cluster/up.sh: tests/test_zz_jobs.py.)

The head and the worker run with `--block`, each in its own process session, and are stopped by
signalling those sessions only: `ray stop` would end every Ray process on the machine, including a
user's jobs that happen to run beside the tests. Named test_zz_* to run last (the shared test
session's local Ray is shut down first, to leave the two cores to the cluster)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memsel.local_cluster import LocalCluster

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray
    from ray._common.utils import get_default_ray_temp_dir

    if ray.is_initialized():  # the shared session's local Ray would compete for the 2 cores
        ray.shutdown()
    # Ray's default temporary folder: the head records itself there, as a plain `ray start` does, so
    # that the first test checks that a local run does not join it.
    local = LocalCluster(temp_dir=get_default_ray_temp_dir(), log_dir=tmp_path_factory.mktemp("cluster_logs"))
    with local:
        head = local.start_head(num_cpus=1)
        # The worker node does not see the folder where drivers keep their run directories.
        hidden = tmp_path_factory.mktemp("driver_only")
        worker = local.add_worker(num_cpus=1, hide=[hidden])
        nodes = local.wait_for_nodes(2, timeout=60)
        yield {"gcs": local.address, "cluster": local, "hidden": hidden, "worker": worker,
               "head_id": local.node_id(head, nodes), "worker_id": local.node_id(worker, nodes)}
    left = local.alive_pids()
    assert not left, f"Ray processes left running: {left}"


def test_a_local_run_starts_its_own_ray_beside_a_running_cluster(cluster):
    """memsel without --ray-address must not join (and then die with) a cluster that `ray start` runs."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = ("import ray; from memsel.config import load_config; from memsel.pipeline import init_ray; "
            "init_ray(load_config()); print('GCS', ray.get_runtime_context().gcs_address)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    gcs = [ln for ln in proc.stdout.splitlines() if ln.startswith("GCS")][-1].split()[1]
    assert not gcs.endswith(":" + cluster["gcs"].rsplit(":", 1)[1])


def _driver(cluster, args: list[str], log: Path) -> subprocess.Popen:
    """A memsel command joined to the cluster (as a driver on the head's machine), stderr to ``log``."""
    env = {**os.environ, **cluster["cluster"].client_env()}
    return subprocess.Popen([str(BIN / "memsel"), *args], env=env, stdout=subprocess.PIPE, stderr=open(log, "w"),
                            text=True, start_new_session=True)


SWEEP = ["--set", "tune.scheduler=none", "--set", "tune.num_samples=4", "--set", "tune.max_concurrent_trials=2",
         "--set", "tune.register_model=false", "--set", "tune.search_space={lr: {choice: [1.0e-4, 3.0e-4]}}"]


CLUSTER_CONFIG = """
seed: 3
data: {train_stories: 40, test_stories: 10}
pretrain: {max_epochs: 3}
ppo: {iterations: 3, train_batch_size: 128, minibatch_size: 64, num_epochs: 1, num_envs_per_env_runner: 2}
tune: {iterations: 3}
"""


@pytest.fixture(scope="module")
def hidden_run(cluster, tmp_path_factory):
    """A pretrained run directory in the folder the worker node cannot see; checkpoints go to a folder both
    nodes reach (as a bucket or a shared mount would on a real cluster)."""
    config = tmp_path_factory.mktemp("cluster_cfg") / "sweep.yaml"
    config.write_text(CLUSTER_CONFIG, encoding="utf-8")
    run = cluster["hidden"] / "sweep"
    proc = subprocess.run([str(BIN / "memsel"), "pretrain", "--config", str(config), "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    storage = tmp_path_factory.mktemp("shared_storage")
    return ["--config", str(config), "--run-dir", str(run), "--set", f"tune.storage_path={storage}"]


def test_a_sweep_runs_trials_on_both_nodes_without_the_driver_files(cluster, hidden_run, tmp_path):
    """The worker cannot read the run directory: its trials get data and teacher through Ray."""
    proc = _driver(cluster, ["tune", *hidden_run, *SWEEP, "--json"], tmp_path / "stderr.txt")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    summary = json.loads(out)
    assert summary["counts"] == {"finished": 4, "stopped": 0, "failed": 0}
    nodes = {t["node_id"] for t in summary["trials"]}
    assert nodes == {cluster["head_id"], cluster["worker_id"]}, nodes


def test_a_worker_killed_mid_sweep_has_its_trial_retried(cluster, hidden_run, tmp_path):
    """SIGKILL to the worker node while both trials run: its trial fails and is retried on the head
    (tune.max_failures) from its last checkpoint; the summary counts both trials. Runs last: the worker
    is gone afterwards."""
    log = tmp_path / "stderr.txt"
    sets = ["--fresh", *SWEEP, "--set", "tune.num_samples=2", "--set", "tune.iterations=20", "--set",
            "ppo.checkpoint_every=1", "--set", "tune.max_failures=1"]
    proc = _driver(cluster, ["tune", *hidden_run, *sets, "--json"], log)
    try:
        deadline = time.time() + 300
        while len(set(re.findall(r"tune (\S+) iter [3-9]/20", log.read_text()))) < 2:
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert cluster["cluster"].kill_worker(cluster["worker"]) == []
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(out)
    assert summary["trials_total"] == 2 and summary["counts"] == {"finished": 2, "stopped": 0, "failed": 0}
    assert all(t["iterations"] == 20 and t["node_id"] == cluster["head_id"] for t in summary["trials"])
    assert "restarting it (tune.max_failures)" in log.read_text()
