"""`cluster/up.sh` -> `memsel submit` -> `memsel jobs` -> MLflow -> `cluster/down.sh`, with real processes:
a Ray head and a worker node (1 CPU each) and an `mlflow server`, all on 127.0.0.1 with token
authentication, started once for the module; the tests run in file order and the last one stops it.

What is checked: a client without the token (or with a wrong one) is refused in one line; a dead
MLflow server, a SQLite store on two nodes and an invalid config are refused before anything is
submitted (the job list does not change); a job whose command fails exits 1 with the command's own
error line; a running job stops on request; a sweep submitted with --follow succeeds and its parent
and child runs, with reward and KL metrics, are in the MLflow server; a job whose driver's node dies
is reported as such; while up, nothing of the cluster (its jobs included) listens beyond 127.0.0.1;
after down.sh none of its processes is left, and a bystander process is untouched.
Named test_zz_* to run at the end: the shared test session's local Ray is shut down first."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memsel.lifecycle import process_start
from memsel.local_cluster import free_ports
from memsel.standing_cluster import STATE_FILE, _waves

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
seed: 3
data: {train_stories: 40, test_stories: 10}
pretrain: {max_epochs: 3}
ppo: {iterations: 2, train_batch_size: 128, minibatch_size: 64, num_epochs: 1, num_envs_per_env_runner: 2}
tune: {num_samples: 2, iterations: 2, register_model: false}
"""
REWARD, KL = "env_runners/episode_return_mean", "learners/default_policy/mean_kl_loss"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}",
               MEMSEL_VENV=str(Path(sys.executable).parent.parent), **extra)
    return env


def _seen(state: dict) -> dict[int, str]:
    """pid -> start time of every live process of the recorded cluster (sessions, recorded PIDs, descendants)."""
    seen = {}
    for wave in _waves(state):
        for group in wave:
            group.record()
            seen.update({pid: start for pid, start in group.pids.items() if process_start(pid) == start})
    return seen


def _outside_loopback(pids) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    marks = {f"pid={p}," for p in pids}
    return [f"{cols[3]} {cols[-1]}" for cols in map(str.split, out.splitlines())
            if any(m in cols[-1] for m in marks) and not re.match(r"(\[::ffff:)?127\.0\.0\.1\]?:", cols[3])]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """cluster/up.sh --workers 1 on free ports, and meanwhile a local `memsel pretrain` of the run directory
    the sweep starts from; down.sh at the end if the last test has not run it."""
    import ray

    if ray.is_initialized():  # the shared session's local Ray would compete for the 2 cores
        ray.shutdown()
    if shutil.which("ss") is None:
        pytest.skip("needs `ss` (iproute2)")
    base = tmp_path_factory.mktemp("jobs_cluster")
    (base / "sweep.yaml").write_text(CONFIG, encoding="utf-8")
    dashboard, mlflow = free_ports(2)
    state_dir, run_dir, env = base / "state", base / "run", _env()
    # The nodes inherit Ray's settings from up.sh's environment: the GCS declares a node dead after 5 missed
    # health checks, 1 s apart here (3 s by default), for the test of a driver's node dying.
    up_env = {**env, "RAY_health_check_period_ms": "1000"}
    pretrain = subprocess.Popen([sys.executable, "-m", "memsel.cli", "pretrain", "--config", str(base / "sweep.yaml"),
                                 "--run-dir", str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(base / "pretrain.txt", "w"), cwd=base)
    up = subprocess.run([str(REPO / "cluster" / "up.sh"), "--workers", "1", "--cpus-per-node", "1", "--dashboard-port",
                         str(dashboard), "--mlflow-port", str(mlflow), "--state", str(state_dir)],
                        env=up_env, capture_output=True, text=True, timeout=300)
    info = {"base": base, "state_dir": state_dir, "run_dir": run_dir, "up": up, "seen": {},
            "jobs": f"http://127.0.0.1:{dashboard}", "mlflow": f"http://127.0.0.1:{mlflow}"}
    try:
        assert pretrain.wait(timeout=300) == 0, (base / "pretrain.txt").read_text()[-3000:]
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        info["state"] = json.loads((state_dir / STATE_FILE).read_text())
        info["seen"].update(_seen(info["state"]))
        yield info
    finally:
        if pretrain.poll() is None:
            pretrain.kill()
        if (state_dir / STATE_FILE).exists():  # a test failed before down.sh ran
            subprocess.run([str(REPO / "cluster" / "down.sh"), "--state", str(state_dir)], env=env, timeout=120)


def memsel(cluster, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """A `memsel` command (submit, jobs) as a client process of the cluster (RAY_JOBS_ADDRESS set)."""
    env = env or _env(RAY_JOBS_ADDRESS=cluster["jobs"])
    return subprocess.run([sys.executable, "-m", "memsel.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cluster["base"])


def _job_ids(cluster) -> list[str]:
    proc = memsel(cluster, "jobs", "list")
    assert proc.returncode == 0, proc.stderr
    return re.findall(r"^(raysubmit_\w+)", proc.stdout, re.M)


def test_up_says_where_everything_is(cluster):
    out = cluster["up"].stdout
    assert f"dashboard / Jobs API: {cluster['jobs']}" in out and f"MLflow:               {cluster['mlflow']}" in out
    assert f"export RAY_JOBS_ADDRESS={cluster['jobs']}" in out and "cluster/down.sh --state" in out
    names = [g["name"] for g in cluster["state"]["groups"]]
    assert names == ["worker-1", "head", "mlflow"]
    assert _outside_loopback(cluster["seen"]) == []


def test_a_client_without_the_right_token_is_refused_in_one_line(cluster, tmp_path):
    for extra in ({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}, {"RAY_AUTH_TOKEN": "not-the-token"}):
        proc = memsel(cluster, "jobs", "list", env=_env(RAY_JOBS_ADDRESS=cluster["jobs"], **extra))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"memsel: error: the Ray cluster at {cluster['jobs']} "), lines
        assert ("none was sent" if "RAY_AUTH_TOKEN_PATH" in extra else "refused the token") in lines[0]


def test_submissions_that_cannot_work_are_refused_before_anything_runs(cluster):
    before = _job_ids(cluster)
    cfg = ["--config", str(cluster["base"] / "sweep.yaml"), "--run-dir", str(cluster["run_dir"])]
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    cases = {
        f"MLflow server {dead} does not answer; start it (cluster/up.sh starts one) or give --tracking-uri":
            ["tune", *cfg, "--tracking-uri", dead],
        "is a SQLite file and this cluster has 2 nodes: MLflow is written by the job's driver only": ["tune", *cfg],
        "field 'tune.num_samples'": ["tune", *cfg, "--set", "tune.num_samples=-1"],
    }
    for expected, command in cases.items():
        start = time.monotonic()
        proc = memsel(cluster, "submit", "--follow", "--", *command)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
        assert time.monotonic() - start < 30
    assert _job_ids(cluster) == before


def test_a_job_whose_command_fails_exits_1_with_its_error_line(cluster, tmp_path):
    """`tune` on a run directory without a pretrained selector: memsel's own pre-flight, inside the job."""
    empty = tmp_path / "no_pretrain"
    proc = memsel(cluster, "submit", "--follow", "--", "tune", "--config", str(cluster["base"] / "sweep.yaml"),
                  "--run-dir", str(empty), "--tracking-uri", cluster["mlflow"], "--set",
                  f"tune.storage_path={tmp_path / 'storage'}")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    job = re.search(r"^job: +(raysubmit_\w+)", proc.stdout, re.M).group(1)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"memsel: job {job} FAILED after ") and "no pretrained selector" in last, last
    assert "memsel: error:" in proc.stdout  # the job's own line, streamed
    status = memsel(cluster, "jobs", "status", job)
    assert status.returncode == 0 and re.search(r"^status: +FAILED$", status.stdout, re.M), status.stdout
    assert not empty.exists() or not any(empty.iterdir())


def test_a_running_job_is_stopped_on_request(cluster, tmp_path):
    """A job that waits without using a CPU: a download from a server that accepts and never answers."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/babi.tar.gz"
        proc = memsel(cluster, "submit", "--no-wait", "--", "data", "download", "--dest", str(tmp_path), "--url", url)
        assert proc.returncode == 0, proc.stderr
        job = re.search(r"^job: +(raysubmit_\w+)", proc.stdout, re.M).group(1)
        assert job in _job_ids(cluster)
        deadline = time.monotonic() + 60
        while "RUNNING" not in (status := memsel(cluster, "jobs", "status", job)).stdout:
            assert time.monotonic() < deadline, status.stdout + status.stderr
        stop = memsel(cluster, "jobs", "stop", job, "--wait")
        assert stop.returncode == 0 and stop.stdout.splitlines()[-1] == f"job {job}: STOPPED", stop.stdout + stop.stderr
    logs = memsel(cluster, "jobs", "logs", job, "--follow")
    assert logs.returncode == 1 and logs.stderr.strip().splitlines()[-1].startswith(f"memsel: job {job} STOPPED")


def test_a_sweep_submitted_to_the_cluster_is_tracked_in_the_mlflow_server(cluster, tmp_path):
    storage = tmp_path / "shared_storage"  # where both nodes write checkpoints (a bucket, a shared mount)
    args = ["submit", "--follow", "--", "tune", "--config", str(cluster["base"] / "sweep.yaml"), "--run-dir",
            str(cluster["run_dir"]), "--tracking-uri", cluster["mlflow"], "--set", f"tune.storage_path={storage}"]
    proc = subprocess.Popen([sys.executable, "-m", "memsel.cli", *args], env=_env(RAY_JOBS_ADDRESS=cluster["jobs"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cluster["base"])
    out, checked = [], False
    for line in proc.stdout:  # while trials run, nothing of the cluster (jobs included) listens beyond loopback
        out.append(line)
        if not checked and re.search(r"tune \S+ iter 1/2", line):
            cluster["seen"].update(_seen(cluster["state"]))
            assert _outside_loopback(cluster["seen"]) == []
            checked = True
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, "".join(out)[-3000:] + err[-3000:]
    assert checked, "".join(out)[-3000:]
    text = "".join(out)
    job = re.search(r"^job: +(raysubmit_\w+)", text, re.M).group(1)
    assert f"MLflow:     {cluster['mlflow']}" in text and re.search(rf"^job {job} SUCCEEDED after \d+ s$", text, re.M)
    status = memsel(cluster, "jobs", "status", job)
    assert re.search(r"^status: +SUCCEEDED$", status.stdout, re.M), status.stdout
    _check_sweep_runs(cluster["mlflow"])


def test_a_job_whose_driver_node_dies_is_reported_as_such(cluster):
    """Ray places a job's driver on the head unless told otherwise: a job pinned to the worker node (by Ray's
    node-id label), then SIGKILL to every process of that node, as a machine failure would."""
    from memsel.jobs import connect
    from memsel.standing_cluster import _waves

    client = connect(cluster["jobs"])
    nodes = client.get_json("/api/v0/nodes?detail=true")["data"]["result"]["result"]
    worker = [n["node_id"] for n in nodes if not n["is_head_node"] and n["state"] == "ALIVE"]
    job = client.submit_job(entrypoint="python -c 'import time; time.sleep(120)'", entrypoint_num_cpus=0,
                            entrypoint_label_selector={"ray.io/node-id": worker[0]})
    deadline = time.monotonic() + 60
    while client.get_job_status(job).value != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert client.get_job_info(job).driver_node_id == worker[0]
    group = [g for wave in _waves(cluster["state"]) for g in wave if g.name == "worker-1"][0]
    group.record()
    for pid in group.alive_pids():
        os.kill(pid, 9)
    while not client.get_job_status(job).is_terminal():
        assert time.monotonic() < deadline + 60
        time.sleep(0.5)
    status = memsel(cluster, "jobs", "status", job)
    assert status.returncode == 0 and re.search(r"^status: +FAILED$", status.stdout, re.M), status.stdout
    assert re.search(r"^cause: +the job's driver died with its node;", status.stdout, re.M), status.stdout
    assert re.search(r"^node: +The actor died because its node has died\. Node Id: \w+", status.stdout, re.M)
    logs = memsel(cluster, "jobs", "logs", job)  # kept on the dead node: one line, no traceback
    assert logs.returncode == 2 and len(logs.stderr.strip().splitlines()) == 1, logs.stderr


def _check_sweep_runs(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, filter_string="tags.`memsel.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [r.info.run_name for r in parents]
    parent = parents[0]
    children = client.search_runs(exps, filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert parent.data.metrics["trials/finished"] == 2
    for run in children:
        for key in (REWARD, KL):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == [1, 2], (run.info.run_name, key)


def test_down_stops_every_process_of_the_cluster_and_nothing_else(cluster):
    seen = {**cluster["seen"], **_seen(cluster["state"])}
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # not the cluster's
    try:
        proc = subprocess.run([str(REPO / "cluster" / "down.sh"), "--state", str(cluster["state_dir"])], env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.match(r"stopped worker-1, head, mlflow in \d+ s; none of their processes is left", proc.stdout)
        # (worker-1 was SIGKILLed by the test before: nothing of it was left to stop)
        assert [pid for pid, start in seen.items() if process_start(pid) == start] == []
        temp = cluster["state"]["temp_dir"]
        assert cluster["state"]["remove_dirs"] == [temp]  # the workers' folders are inside it
        assert not Path(temp).exists()
        named = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(int(p), temp)]
        assert named == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert not (cluster["state_dir"] / STATE_FILE).exists()
    again = subprocess.run([str(REPO / "cluster" / "down.sh"), "--state", str(cluster["state_dir"])], env=_env(),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing stopped" in again.stdout


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
