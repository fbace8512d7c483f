"""memsel.model_registry: a selector logged to a run, registered, loaded back with mlflow.pyfunc and
called on raw text, on a SQLite store and through a real `mlflow server` (real MLflow, no mocks)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

import memsel
from memsel.config import SelectorConfig
from memsel.data.encode import DataSpec
from memsel.inference import SelectorPredictor
from memsel.model_registry import _tracking_uri, log_selector_model, pip_requirements, register_selector

# The tiny vocabulary and story of tests/test_inference.py (test modules are not importable here).
WORDS = ["<pad>", "<unk>", "mary", "went", "to", "the", "kitchen", "john", "moved", "garden", "where", "is"]
STORY = ["Mary went to the kitchen.", "John moved to the garden.", "Mary moved to the garden."]
ROWS = [
    {"query": "Where is Mary?", "memories": STORY},
    {"query": "Where is John?", "memories": [*STORY, "John went to the kitchen."], "ages": [7, 5, 2, 0]},
    {"query": "where is mary", "memories": ["Mary went to the zoo.", "Zorg blub.", "John moved to the garden."],
     "top": 2},  # 'zoo', 'zorg' and 'blub' are outside the vocabulary: memory #1 has no known word
]


def _selector_file(path: Path, vocab: bool = True) -> Path:
    torch.manual_seed(0)
    net = memsel.Selector(SelectorConfig(), DataSpec(vocab_size=len(WORDS), max_memories=4, max_sentence_len=6))
    net.vocab = list(WORDS) if vocab else None
    return net.save(path)


def _store(root: Path) -> SimpleNamespace:
    """A SQLite store with an experiment whose artifacts stay under ``root``, and one finished run."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("memsel", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "lr", "0.001")
    client.set_terminated(run.info.run_id, "FINISHED")
    return SimpleNamespace(uri=uri, client=client, experiment_id=exp, run_id=run.info.run_id,
                           selector=_selector_file(root / "selector.pt"))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SimpleNamespace:
    """One SQLite store (and run, and selector file) for the module: creating a store costs ~2 s."""
    return _store(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def loaded(store):
    """Version 1 of 'memsel-tiny', loaded back through the registry."""
    name, version = register_selector(store.uri, store.run_id, store.selector, "memsel-tiny")
    with _tracking_uri(store.uri):
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


@pytest.fixture
def no_global_tracking_uri(monkeypatch):
    """MLflow's global tracking URI unset, as in a fresh process; put back after the test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    saved = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(None)
    yield
    mlflow.set_tracking_uri(saved)


def _expected(store, row: dict) -> list[dict]:
    ranked = SelectorPredictor.load(store.selector).rank(row["memories"], row["query"], row.get("ages"))
    return [r._asdict() for r in ranked][:row.get("top")]


def _assert_same(got: list[dict], expected: list[dict]) -> None:
    assert [(g["index"], g["text"]) for g in got] == [(e["index"], e["text"]) for e in expected]
    assert [g["probability"] for g in got] == pytest.approx([e["probability"] for e in expected], abs=1e-6)


def test_register_twice_gives_versions_1_and_2_and_leaves_callers_state(store, no_global_tracking_uri):
    stray_db, existed = Path.cwd() / "mlflow.db", (Path.cwd() / "mlflow.db").exists()
    run_before = store.client.get_run(store.run_id).info
    assert register_selector(store.uri, store.run_id, store.selector, "memsel-twice") == ("memsel-twice", 1)
    assert tracking_utils._tracking_uri is None and "MLFLOW_TRACKING_URI" not in os.environ
    mlflow.set_tracking_uri(store.uri)
    with mlflow.start_run(experiment_id=store.experiment_id) as caller:  # a caller's own active run
        assert register_selector(store.uri, store.run_id, store.selector, "memsel-twice") == ("memsel-twice", 2)
        assert mlflow.active_run().info.run_id == caller.info.run_id
        assert mlflow.get_tracking_uri() == store.uri
    run_after = store.client.get_run(store.run_id)
    assert (run_after.info.status, run_after.info.end_time) == (run_before.status, run_before.end_time)
    assert len(run_after.outputs.model_outputs) >= 2  # the logged models are the run's outputs
    registry = MlflowClient(store.uri, registry_uri=store.uri)
    for v in ("1", "2"):
        version = registry.get_model_version("memsel-twice", v)
        assert version.run_id == store.run_id and version.tags["memsel.kind"] == "selector"
        assert "ranked most probable first" in version.description
        logged = store.client.get_logged_model(version.source.removeprefix("models:/"))
        assert logged.experiment_id == store.experiment_id and logged.source_run_id == store.run_id
    assert "memsel" in registry.get_registered_model("memsel-twice").description
    assert stray_db.exists() == existed  # MLflow's default store in the current folder was not touched


def test_loaded_model_ranks_like_the_predictor(store, loaded, caplog):
    caplog.clear()
    got = loaded.predict(pd.DataFrame(ROWS))  # rows 0 and 2 have no ages, 0 and 1 no top: NaN in the frame
    # The out-of-vocabulary row is ranked, with SelectorPredictor's warning.
    assert "1 of 3 memories without a word the selector's vocabulary knows (#1)" in caplog.text
    assert isinstance(got, list) and len(got) == len(ROWS)
    for row, ranking in zip(ROWS, got):
        _assert_same(ranking, _expected(store, row))
        assert all(isinstance(r["index"], int) and isinstance(r["probability"], float) for r in ranking)
    for ranking in got[:2]:
        assert sum(r["probability"] for r in ranking) == pytest.approx(1.0, abs=1e-6)
        probs = [r["probability"] for r in ranking]
        assert probs == sorted(probs, reverse=True)
    assert len(got[2]) == 2  # top
    # A dict and a list of dicts are one row and several.
    assert loaded.predict(ROWS[1]) == [got[1]]
    assert loaded.predict(ROWS) == got


@pytest.mark.parametrize("model_input, message", [
    (pd.DataFrame([{"memories": STORY}]), r"row 0: 'query': expected the question as a string, got nothing"),
    ([ROWS[0], {"query": 3, "memories": STORY}], r"row 1: 'query': expected .* string, got int"),
    ({"query": "Where is Mary?", "memories": STORY[0]}, r"row 0: 'memories': expected a list of strings .* got 'Mary"),
    ({"query": "Where is Mary?", "memories": [STORY[0], 5]}, r"row 0: 'memories': .* item 1 is int"),
    ({"query": "Where is Mary?"}, r"row 0: 'memories': expected a list of strings .* got nothing"),
    ({"query": "Where is Mary?", "memories": STORY, "ages": [1, 0]}, r"row 0: ages: expected 3 integers"),
    ({"query": "Where is Mary?", "memories": STORY, "ages": ["2", "1", "0"]}, r"row 0: 'ages': .* item 0 is str"),
    ({"query": "Where is Mary?", "memories": STORY, "top": 0}, r"row 0: 'top': expected an integer >= 1"),
    ({"query": "Where is Mary?", "memory": STORY}, r"row 0: unknown field\(s\) memory: expected 'query'"),
    ("Where is Mary?", r"model input: expected a pandas DataFrame"),
])
def test_bad_input_names_the_row_and_field(loaded, model_input, message):
    with pytest.raises(ValueError, match=message):
        loaded.predict(model_input)


def test_log_selector_model_returns_a_loadable_uri_and_refuses_a_file_without_vocabulary(store, tmp_path):
    n_outputs = len(store.client.get_run(store.run_id).outputs.model_outputs)
    with pytest.raises(ValueError, match="holds no vocabulary"):
        log_selector_model(store.uri, store.run_id, _selector_file(tmp_path / "old.pt", vocab=False))
    assert len(store.client.get_run(store.run_id).outputs.model_outputs) == n_outputs  # nothing logged
    uri = log_selector_model(store.uri, store.run_id, store.selector, artifact_path="selector_model")
    assert uri.startswith("models:/m-")
    with _tracking_uri(store.uri):
        model = mlflow.pyfunc.load_model(uri)
        by_run = mlflow.pyfunc.load_model(f"runs:/{store.run_id}/selector_model")
        requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    _assert_same(model.predict(ROWS[0])[0], _expected(store, ROWS[0]))
    assert by_run.predict(ROWS[0]) == model.predict(ROWS[0])
    assert requirements == pip_requirements() == ["torch==2.13.0", "mlflow==3.17.2"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_model_config_device_runs_it_there(store, loaded, device):
    with _tracking_uri(store.uri):
        model = mlflow.pyfunc.load_model("models:/memsel-tiny/1", model_config={"device": device})
    assert model.unwrap_python_model().predictor.device.type == device
    _assert_same(model.predict(ROWS[1])[0], _expected(store, ROWS[1]))


# --------------------------------------------------------------------------------------- a real server
@pytest.fixture
def mlflow_server(tmp_path, mlflow_server_at):
    """`mlflow server` on loopback in its own session, with a SQLite store and proxied artifacts."""
    with mlflow_server_at(tmp_path) as url:
        yield url


@pytest.mark.slow
def test_register_load_and_predict_through_an_mlflow_server(mlflow_server, tmp_path, no_global_tracking_uri):
    client = MlflowClient(mlflow_server)
    run = client.create_run(client.create_experiment("memsel"))
    selector = _selector_file(tmp_path / "selector.pt")
    assert register_selector(mlflow_server, run.info.run_id, selector, "memsel-served") == ("memsel-served", 1)
    assert tracking_utils._tracking_uri is None
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/memsel-served/1")
    got = model.predict(pd.DataFrame(ROWS[:2]))
    for row, ranking in zip(ROWS, got):
        _assert_same(ranking, [r._asdict() for r in SelectorPredictor.load(selector).rank(
            row["memories"], row["query"], row.get("ages"))])
    version = MlflowClient(mlflow_server).get_model_version("memsel-served", "1")
    assert version.run_id == run.info.run_id
