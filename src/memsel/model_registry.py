"""A trained selector as an MLflow pyfunc model, logged to a run and registered in the Model Registry.

    >>> from memsel.model_registry import register_selector
    >>> register_selector("http://127.0.0.1:5000", run_id, Path("runs/quickstart/ppo/selector.pt"), "memsel-quickstart")
    ('memsel-quickstart', 3)

Anyone with MLflow, torch and memsel installed then loads and calls it by name and version:

    >>> import mlflow, pandas as pd
    >>> model = mlflow.pyfunc.load_model("models:/memsel-quickstart/3")
    >>> model.predict(pd.DataFrame([{"query": "Where is Mary?",
    ...                              "memories": ["Mary went to the kitchen.", "John moved to the garden."]}]))
    [[{'index': 0, 'text': 'Mary went to the kitchen.', 'probability': 0.97}, {'index': 1, ...}]]

``mlflow.pyfunc.load_model(uri, model_config={"device": "cuda"})`` runs it on a GPU. The model's
files are the selector file (weights and vocabulary) and a pickled reference to
:class:`SelectorModel`, so memsel itself must be importable where the model is loaded; its pip
requirements pin the torch and MLflow it was logged with. The model has no MLflow signature on
purpose: MLflow's schema check would answer bad input with its own MlflowException (and drop
columns it does not know), while :meth:`SelectorModel.predict` names the row and field (ValueError).

Pure of Ray and Lightning.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from memsel.inference import SelectorPredictor

ARTIFACT = "selector"  # the artifact key (and file name) of the selector file inside the model
FIELDS = ("query", "memories", "ages", "top")
INPUT_EXAMPLE = pd.DataFrame([{"query": "Where is Mary?",
                               "memories": ["Mary went to the kitchen.", "John moved to the garden."]}])


class _Request(NamedTuple):
    query: str
    memories: list[str]
    ages: list[int] | None
    top: int | None


class SelectorModel(mlflow.pyfunc.PythonModel):
    """A memsel selector behind MLflow's pyfunc interface: raw-text queries in, ranked memories out.

    Input (``predict``'s ``model_input``), one request per row: a pandas DataFrame, a dict (one
    request) or a list of dicts, with the fields

    - ``query`` (str): the question;
    - ``memories`` (list of str): the memories, oldest first;
    - ``ages`` (list of int >= 0, optional): one age per memory; default len-1 ... 0 (the last is the newest);
    - ``top`` (int >= 1, optional): return only the ``top`` most probable memories; default all.

    Output: a list with one list per input row, in input order; each inner list holds one dict
    ``{"index": int, "text": str, "probability": float}`` per memory (``index`` is its position in
    ``memories``), most probable first, exactly :meth:`memsel.inference.SelectorPredictor.rank`'s
    ranking. A row's probabilities sum to 1 over its memories, unless ``top`` cut the list, or the
    network has fewer memory slots than the row has memories (the oldest then get probability 0).
    Text with words the selector never saw is ranked anyway, with SelectorPredictor's warnings logged.

    Bad input raises ValueError naming the row and field and what was expected. ``params`` is not used.
    """

    def __init__(self) -> None:
        self.predictor: SelectorPredictor | None = None

    def load_context(self, context) -> None:
        """Load the selector file of the ``selector`` artifact, on ``model_config["device"]`` (default cpu)."""
        if ARTIFACT not in context.artifacts:
            raise ValueError(f"the model has no artifact {ARTIFACT!r} (artifacts: {sorted(context.artifacts)}): "
                             "log it with memsel.model_registry.log_selector_model")
        device = (context.model_config or {}).get("device", "cpu")
        self.predictor = SelectorPredictor.load(context.artifacts[ARTIFACT], device=device)

    # pandas.DataFrame is the one annotation MLflow accepts without building a schema from it (no
    # annotation warns); dicts and lists of dicts reach predict unchanged all the same.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[list[dict]]:
        """Rank each row's memories for its query; see the class docstring for input and output."""
        if self.predictor is None:
            raise RuntimeError("SelectorModel.predict before load_context: load it with mlflow.pyfunc.load_model")
        requests = [_request(i, row) for i, row in enumerate(_rows(model_input))]  # all checked before any runs
        out = []
        for i, r in enumerate(requests):
            try:
                ranked = self.predictor.rank(r.memories, r.query, r.ages)
            except ValueError as e:
                raise ValueError(f"row {i}: {e}") from None
            out.append([{"index": x.index, "text": x.text, "probability": x.probability} for x in ranked[:r.top]])
        return out


def _rows(model_input) -> list[dict]:
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        return [model_input]
    if isinstance(model_input, (list, tuple)):
        for i, row in enumerate(model_input):
            if not isinstance(row, dict):
                raise ValueError(f"row {i}: expected a dict with 'query' and 'memories', got {type(row).__name__}")
        return list(model_input)
    raise ValueError("model input: expected a pandas DataFrame with columns 'query' and 'memories', a dict or "
                     f"a list of dicts, got {type(model_input).__name__}")


def _missing(value) -> bool:
    # a DataFrame fills a field that some rows lack with NaN (or None)
    return value is None or (isinstance(value, float) and math.isnan(value))


def _request(i: int, row: dict) -> _Request:
    unknown = sorted(map(str, set(row) - set(FIELDS)))
    if unknown:
        raise ValueError(f"row {i}: unknown field(s) {', '.join(unknown)}: expected 'query', 'memories' and "
                         "optionally 'ages', 'top'")
    query = row.get("query")
    if _missing(query) or not isinstance(query, str):
        got = "nothing" if _missing(query) else type(query).__name__
        raise ValueError(f"row {i}: 'query': expected the question as a string, got {got}")
    memories = _sequence(i, "memories", row.get("memories"), (str,), "strings (the memories, oldest first)")
    ages = row.get("ages")
    ages = None if _missing(ages) else _sequence(i, "ages", ages, (int, np.integer), "integers >= 0, one per memory")
    top = row.get("top")
    if not _missing(top):
        whole = isinstance(top, (int, np.integer)) or (isinstance(top, float) and top.is_integer())
        if isinstance(top, (bool, np.bool_)) or not whole or top < 1:
            raise ValueError(f"row {i}: 'top': expected an integer >= 1 (how many memories to return), got {top!r}")
    return _Request(query, memories, ages, None if _missing(top) else int(top))


def _sequence(i: int, field: str, value, types: tuple[type, ...], what: str) -> list:
    if not isinstance(value, (list, tuple, np.ndarray)):
        got = "nothing" if _missing(value) else repr(value) if isinstance(value, str) else type(value).__name__
        raise ValueError(f"row {i}: {field!r}: expected a list of {what}, got {got}")
    bad = [j for j, v in enumerate(value) if not isinstance(v, types) or isinstance(v, (bool, np.bool_))]
    if bad:
        raise ValueError(f"row {i}: {field!r}: expected a list of {what}, but item {bad[0]} is "
                         f"{type(value[bad[0]]).__name__}")
    return [v.item() if isinstance(v, np.generic) else v for v in value]


def pip_requirements() -> list[str]:
    """What the pyfunc needs besides memsel: the torch and MLflow installed here (memsel pins both), so
    that MLflow does not infer requirements by loading the model. A local tag (``+cpu``) is dropped."""
    return [f"{pkg}=={importlib.metadata.version(pkg).split('+')[0]}" for pkg in ("torch", "mlflow")]


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` in the block, then exactly what it was before: unset
    or set, and the MLFLOW_TRACKING_URI variable that ``mlflow.set_tracking_uri`` also writes."""
    from mlflow.tracking._tracking_service import utils  # private: whether a URI was set at all

    saved, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def log_selector_model(tracking_uri: str, run_id: str, selector_path: Path, artifact_path: str = "model") -> str:
    """Log the selector file ``selector_path`` as a pyfunc :class:`SelectorModel` named ``artifact_path``
    to the existing run ``run_id`` on ``tracking_uri``; returns the model's URI (``models:/<model id>``,
    MLflow 3's LoggedModel; ``runs:/<run_id>/<artifact_path>`` finds it too).

    The file is loaded first, so a missing file, one without vocabulary or another format is refused
    before anything is logged. The run's status, the caller's active run and tracking URI are left
    as they were (MLflow's global tracking URI is switched during the call: not thread-safe).
    """
    SelectorPredictor.load(selector_path)
    with _tracking_uri(tracking_uri):
        return _log(MlflowClient(tracking_uri), run_id, Path(selector_path), artifact_path).model_uri


def _log(client: MlflowClient, run_id: str, selector_path: Path, artifact_path: str):
    """Model.log to ``run_id`` (MLflow's global tracking URI must be ``client``'s): ModelInfo."""
    run = client.get_run(run_id)
    # Model.log with run_id, to a LoggedModel created in the run's experiment: mlflow.pyfunc.log_model
    # needs an active run (start_run(run_id) would reopen the run and end it FINISHED), and without
    # one it puts the LoggedModel in the default experiment instead of the run's.
    logged = client.create_logged_model(run.info.experiment_id, name=artifact_path, source_run_id=run_id,
                                        params=run.data.params, tags={"memsel.kind": "selector"})
    return Model.log(artifact_path=None, name=artifact_path, flavor=mlflow.pyfunc, run_id=run_id,
                     model_id=logged.model_id, python_model=SelectorModel(),
                     artifacts={ARTIFACT: str(selector_path)}, pip_requirements=pip_requirements(),
                     # signature=False: keep the example, infer no schema from it (see the module docstring)
                     input_example=INPUT_EXAMPLE, signature=False)


def register_selector(tracking_uri: str, run_id: str, selector_path: Path, name: str) -> tuple[str, int]:
    """Log ``selector_path`` to run ``run_id`` (:func:`log_selector_model`) and register it as a new
    version of the registered model ``name`` (created if needed) on ``tracking_uri``, with the run as
    the version's source run; returns ``(name, version)``."""
    selector_path = Path(selector_path)
    SelectorPredictor.load(selector_path)
    about = ("memsel memory selector (pyfunc): predict takes a query and its memories as raw text and "
             "returns the memories ranked most probable first with their probabilities")
    # The whole block under the global URI: a SQL registry looks up a models:/ source through the
    # global tracking URI, not its own database (elsewhere it finds no model, or a ./mlflow.db).
    with _tracking_uri(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        info = _log(client, run_id, selector_path, "model")
        try:
            client.create_registered_model(name, tags={"memsel.kind": "selector"}, description=about)
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        version = client.create_model_version(
            name, source=info.model_uri, run_id=run_id, model_id=info.model_id,
            tags={"memsel.kind": "selector", "memsel.selector_file": str(selector_path.resolve())},
            description=f"{about}. Selector file {selector_path.resolve()} of run {run_id}.")
    return name, int(version.version)
