"""Shared fixtures: the real bAbI folder (skipped when absent) and one Ray session for all tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

BABI = Path(os.environ.get("MEMSEL_BABI", Path(__file__).resolve().parents[2] / "shared" / "babi"
                           / "tasks_1-20_v1-2"))


def _babi_folder(name: str) -> Path:
    folder = BABI / name
    if not folder.is_dir():
        pytest.skip(f"real bAbI data not found at {folder} (set MEMSEL_BABI to its tasks_1-20_v1-2 folder)")
    return folder


@pytest.fixture(scope="session")
def babi_en() -> Path:
    """../shared/babi/tasks_1-20_v1-2/en, or skip the test when the real data is not there."""
    return _babi_folder("en")


@pytest.fixture(scope="session")
def babi_en10k() -> Path:
    """../shared/babi/tasks_1-20_v1-2/en-10k (10,000 training questions per task), or skip."""
    return _babi_folder("en-10k")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (ray.init costs ~5 s)."""
    import ray

    if not ray.is_initialized():
        # "local": a new Ray of our own, never a cluster that `ray start` left running on the machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


TINY_CONFIG = """
name: tiny
seed: 3
data: {train_stories: 60, test_stories: 20}
pretrain: {max_epochs: 6}
ppo: {iterations: 3, train_batch_size: 256, minibatch_size: 64, num_epochs: 2}
tune:
  num_samples: 4
  iterations: 2
  grace_period: 1
  search_space:
    lr: {loguniform: [1.0e-5, 1.0e-3]}
    distill_coeff: {choice: [0.0, 0.5]}
"""


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """A config for end-to-end runs that finish in about a minute on 2 cores."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- sweeps, through MLflow

QUERY, MEMORIES = "Where is Mary?", ["Mary went to the kitchen.", "John moved to the garden.", "Mary went to the office."]


def sweep_runs(client, sweep_id: str) -> tuple:
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"tags.`memsel.sweep_id` = '{sweep_id}'")
    parents = [r for r in runs if r.data.tags.get("memsel.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    return parents[0], [r for r in runs if "memsel.trial_id" in r.data.tags]


def check_tracking(client, summary: dict, searched: list[str]) -> tuple:
    """Parent and children as the issue asks; returns them."""
    parent, children = sweep_runs(client, summary["sweep_id"])
    assert parent.info.status == "FINISHED"
    assert len(children) == summary["trials_total"] == len(summary["trials"])
    by_trial = {r.data.tags["memsel.trial_id"]: r for r in children}
    for trial in summary["trials"]:
        run = by_trial[trial["trial_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == set(searched)
        history = client.get_metric_history(run.info.run_id, "val/selection_accuracy")
        assert sorted(m.step for m in history) == list(range(1, trial["iterations"] + 1))
        assert all(0.0 <= m.value <= 1.0 for m in history)
    assert parent.data.tags["memsel.best_trial"] == summary["best"]["trial_id"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"top_trials.md", "trials.json", "best_config.json", "search.png"} <= artifacts
    return parent, by_trial


def check_registered(uri: str, summary: dict) -> None:
    """The registered version loads as a pyfunc and ranks raw memories as the exported selector does."""
    import mlflow

    from memsel.inference import SelectorPredictor

    model = summary["registered_model"]
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pyfunc.load_model(model["uri"])
        out = loaded.predict([{"query": QUERY, "memories": MEMORIES}])
    finally:
        mlflow.set_tracking_uri(saved)
    expected = SelectorPredictor.load(summary["selector"]).rank(MEMORIES, QUERY)
    assert [r["index"] for r in out[0]] == [r.index for r in expected]
    assert [r["probability"] for r in out[0]] == pytest.approx([r.probability for r in expected], abs=1e-6)
    assert sum(r["probability"] for r in out[0]) == pytest.approx(1.0, abs=1e-5)



@pytest.fixture
def sweep_checks():
    """Checks of a finished sweep through the MLflow client: ``tracking(client, summary, searched)`` (a parent
    run, a nested child per trial with its sampled values as params and the validation metric at every
    iteration, the parent's artifacts) and ``registered(uri, summary)`` (the registered version loads as a
    pyfunc and ranks raw text as the exported selector does)."""
    from types import SimpleNamespace

    return SimpleNamespace(tracking=check_tracking, registered=check_registered)


# ----------------------------------------------------------------------------- a real MLflow server

@contextlib.contextmanager
def _mlflow_server_at(folder: Path):
    """`mlflow server` on a free loopback port, started as cluster/up.sh starts it (its own process session,
    SQLite store and proxied artifacts under ``folder``, no job runner); yields its URL; stopped by its
    process group (SIGTERM, then SIGKILL)."""
    from memsel.local_cluster import ClusterError, free_ports
    from memsel.standing_cluster import start_mlflow, wait_http

    port = free_ports(1)[0]
    proc = start_mlflow(folder, port)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/health", proc, 120, "mlflow server")
        except ClusterError as e:
            pytest.fail(f"{e}; log:\n{(folder / 'logs' / 'mlflow.log').read_text()[-2000:]}")
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
                break


@pytest.fixture(scope="session")
def mlflow_server_at():
    """``with mlflow_server_at(folder) as url:`` a real `mlflow server` for the block (see _mlflow_server_at)."""
    return _mlflow_server_at
