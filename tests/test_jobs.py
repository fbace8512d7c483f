"""memsel.jobs without a cluster: what ships with a job (packaged by Ray's own code), how the command's
paths reach the job, the checks before submission, the token lookup, the lines that explain a failed
job, and a dashboard that is dead or never answers (real processes, real sockets)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from memsel import jobs

SRC = Path(__file__).resolve().parents[1] / "src"


def _checkout(root: Path) -> None:
    files = ["pyproject.toml", "configs/a.yaml", "src/memsel/__init__.py", "src/memsel/data/__init__.py",
             "src/memsel/data/babi.py", "src/memsel/tune_jobs/ppo.py", "data/helper.py", "data/stories.txt",
             "data/gen/qa1_train.txt", "runs/x/mlflow.db", "runs/x/ppo/selector.pt", "mlruns/1/meta.yaml",
             ".venv/bin/python", ".git/HEAD", "model.pt", "mlflow.db", "babi/en/qa1_train.txt",
             ".cluster/state.json", "src/memsel/__pycache__/cli.cpython-311.pyc", "experiments/run.py"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")


def _packaged(path: Path, out: Path, parent: bool) -> set[str]:
    from ray._private.runtime_env.packaging import create_package

    create_package(str(path), out, include_gitignore=True, include_parent_dir=parent, excludes=jobs.EXCLUDES)
    with zipfile.ZipFile(out) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_a_job_ships_the_code_and_configs_without_runs_stores_data_or_environments(tmp_path):
    """Packaged by Ray's own packaging code with the job's excludes: the working dir and the py_module."""
    root = tmp_path / "checkout"
    _checkout(root)
    working_dir = _packaged(root, tmp_path / "wd.zip", parent=False)
    assert working_dir == {"pyproject.toml", "configs/a.yaml", "src/memsel/__init__.py", "src/memsel/data/__init__.py",
                           "src/memsel/data/babi.py", "src/memsel/tune_jobs/ppo.py", "data/helper.py",
                           "experiments/run.py"}
    # Ray applies the same excludes to the py_module, anchored at its own folder: memsel's data package must stay.
    module = _packaged(root / "src" / "memsel", tmp_path / "mod.zip", parent=True)
    assert module == {"memsel/__init__.py", "memsel/data/__init__.py", "memsel/data/babi.py", "memsel/tune_jobs/ppo.py"}
    # is_shipped (which decides whether a --config path is read from the shipped copy) agrees with Ray.
    every = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert {f for f in every if jobs.is_shipped(Path(f))} == working_dir


def test_the_real_package_ships_every_file_of_memsel():
    real = SRC / "memsel"
    on_disk = {str(p.relative_to(real.parent)) for p in real.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        assert _packaged(real, Path(tmp) / "m.zip", parent=True) == on_disk


def test_the_job_gets_absolute_run_dir_and_tracking_uri_and_shipped_configs(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    _checkout(root)
    elsewhere = tmp_path / "mine.yaml"
    elsewhere.write_text("x")
    monkeypatch.chdir(root)
    argv = ["tune", "--config", "configs/a.yaml", "--run-dir", "runs/x", "--set", "tune.num_samples=2",
            "--data=babi/en/qa1_train.txt", "--tracking-uri", "http://old:5000"]
    run_dir, uri = root / "runs" / "x", "http://127.0.0.1:5000"
    assert jobs.job_argv(argv, root, run_dir, uri) == [
        "tune", "--config", "configs/a.yaml", "--set", "tune.num_samples=2",
        f"--data={root / 'babi/en/qa1_train.txt'}", "--run-dir", str(run_dir), "--tracking-uri", uri]
    monkeypatch.chdir(tmp_path)
    assert jobs.job_argv(["pretrain", "--config", "mine.yaml"], root, run_dir, uri)[:3] == [
        "pretrain", "--config", str(elsewhere)]
    assert jobs.job_argv(["pretrain", "--config", "checkout/configs/a.yaml"], root, run_dir, uri)[2] == "configs/a.yaml"
    # not a stage command: nothing added, its own paths absolute
    assert jobs.job_argv(["data", "generate", "--out", "gen"], root, None, None) == [
        "data", "generate", "--out", str(tmp_path / "gen")]


def test_commands_that_cannot_run_are_refused_before_submission():
    with pytest.raises(jobs.JobsError, match="no memsel command"):
        jobs.resolve_command([])
    with pytest.raises(jobs.JobsError, match="runs where you are"):
        jobs.resolve_command(["jobs", "list"])
    with pytest.raises(jobs.JobsError, match="does not parse"):
        jobs.resolve_command(["tune", "--no-such-option"])
    with pytest.raises(jobs.JobsError, match="tune.num_samples"):
        jobs.resolve_command(["tune", "--run-dir", "runs/x", "--set", "tune.num_samples=-1"])
    args, cfg = jobs.resolve_command(["tune", "--run-dir", "runs/x", "--tracking-uri", "http://h:1"])
    assert args.command == "tune" and cfg.run_path == Path("runs/x").resolve()
    assert cfg.resolved_tracking_uri == "http://h:1"


def test_a_sqlite_store_on_several_nodes_needs_shared_storage(tmp_path):
    uri, run = f"sqlite:///{tmp_path}/mlflow.db", tmp_path
    with pytest.raises(jobs.JobsError, match=r"2 nodes: MLflow is written by the job's driver only .*--shared-storage"):
        jobs.check_tracking(uri, run, lambda: 2, shared_storage=False)
    jobs.check_tracking(uri, run, lambda: 1, shared_storage=False)
    jobs.check_tracking(uri, run, lambda: pytest.fail("not asked"), shared_storage=True)
    jobs.check_tracking("postgresql://db/mlflow", run, lambda: pytest.fail("not asked"), shared_storage=False)


def test_an_mlflow_server_that_does_not_answer_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(jobs.JobsError, match=f"MLflow server http://127.0.0.1:{port} does not answer; start it"):
        jobs.check_tracking(f"http://127.0.0.1:{port}", Path("."), lambda: 1, shared_storage=False)


def test_the_token_is_looked_up_where_ray_clients_look(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", " abc \n")
    assert jobs.auth_token() == ("abc", "$RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / "tok").write_text("def\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert jobs.auth_token() == ("def", str(tmp_path / "tok"))
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    token, source = jobs.auth_token()
    assert token is None and source.startswith("no token") and str(tmp_path / "missing") in source


def test_a_failed_job_is_explained_in_one_line():
    from ray.job_submission import JobInfo, JobStatus

    failed = "Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 chars):\n..."
    info = JobInfo(status=JobStatus.FAILED, entrypoint="python -m memsel.cli tune", message=failed,
                   driver_exit_code=2)
    logs = "16:00 INFO x\nmemsel: error: /r: no pretrained selector; run `memsel pretrain` first\nbye\n"
    assert jobs.job_error(info, logs) == "memsel: error: /r: no pretrained selector; run `memsel pretrain` first"
    assert jobs.job_error(info, "a\nIntel oneMKL FATAL ERROR: Cannot load x.so.\n") == \
        "Intel oneMKL FATAL ERROR: Cannot load x.so. (exit code 2)"
    assert jobs.driver_node_died(info) is None
    # Ray 2.60's words after SIGKILL to the node of a job's driver (observed; the pid and ids vary)
    message = ("Job supervisor actor died: The actor died unexpectedly before finishing this task.\n\tclass_name: "
               "JobSupervisor\n\tpid: 12533\n\tip: 127.0.0.1\nThe actor died because its node has died. Node Id: "
               "1bad2b40\n\tthe actor's node was terminated unexpectedly: health check failed due to missing too many "
               "heartbeats")
    died = JobInfo(status=JobStatus.FAILED, entrypoint="e", error_type="JOB_SUPERVISOR_ACTOR_DIED", message=message)
    assert jobs.driver_node_died(died) == (
        "The actor died because its node has died. Node Id: 1bad2b40; the actor's node was terminated unexpectedly: "
        "health check failed due to missing too many heartbeats")


def _memsel(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_JOBS_ADDRESS", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "memsel.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_a_dashboard_that_never_answers_costs_one_timeout_and_one_line():
    """A socket that accepts connections (the kernel's backlog) and never answers, as a hung dashboard."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        start = time.monotonic()
        proc = _memsel("jobs", "status", "raysubmit_x", "--address", f"127.0.0.1:{port}", "--timeout", "2")
        took = time.monotonic() - start
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"memsel: error: the Ray dashboard at http://127.0.0.1:{port} does not answer (no answer "
        "within 2 s); is the cluster up (cluster/up.sh) and is that its dashboard address (--address, "
        "$RAY_JOBS_ADDRESS)?"]
    assert took < 2 + 15, took  # the one timeout plus imports on a busy machine


@pytest.mark.slow
def test_a_dead_dashboard_is_one_line_for_every_jobs_command():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{s.getsockname()[1]}"
    for args in (["jobs", "list"], ["submit", "--", "data", "inspect", "nowhere"]):
        proc = _memsel(*args, "--address", address) if args[0] == "jobs" else \
            _memsel("submit", "--address", address, *args[1:])
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"memsel: error: the Ray dashboard at {address} does not answer (connection refused); is the cluster "
            "up (cluster/up.sh) and is that its dashboard address (--address, $RAY_JOBS_ADDRESS)?"], args
