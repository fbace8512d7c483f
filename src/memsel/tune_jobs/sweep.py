"""A sweep's identity and attempts, and what it leaves behind once it ends.

``<run_dir>/<stage>/sweep.json`` names the sweep (``sweep_id``), its attempt (1 for a new sweep, +1 for
each ``--resume``), where Tune keeps its state (``tune.storage_path``/<stage>) and its parent MLflow
run. ``memsel tune`` on a run directory that holds a sweep refuses without ``--resume`` (continue
it: finished trials kept, unfinished ones from their last checkpoint, each in the MLflow run it
had) or ``--fresh`` (replace it: its Tune state is deleted, its MLflow runs stay, marked KILLED if
they were left RUNNING).
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memsel.config import Config, ConfigError
from memsel.files import write_text_atomic

log = logging.getLogger(__name__)

MODES = ("new", "resume", "fresh")
"""How a stage treats a sweep already in the run directory: refuse it, continue it, replace it."""
STATE_FILE = "sweep.json"


@dataclass
class SweepState:
    """What ``sweep.json`` holds."""

    sweep_id: str
    attempt: int
    path: str
    """Tune's experiment folder or URI (``tune.storage_path``/<stage>)."""
    parent_run_id: str | None = None
    search_space: dict = field(default_factory=dict)
    """The searched fields and ranges (a resumed sweep must search the same)."""

    @property
    def resuming(self) -> bool:
        return self.attempt > 1


def storage_root(cfg: Config) -> str:
    """Where Tune writes: ``tune.storage_path`` (a folder or URI), else ``<run_dir>/ray_results``."""
    root = cfg.tune.storage_path
    if not root:
        return str(cfg.layout.ray_results)
    return root if "://" in root else str(Path(root).resolve())


def experiment_path(cfg: Config, stage: str) -> str:
    """Tune's experiment folder (or URI) of ``stage``."""
    return f"{storage_root(cfg).rstrip('/')}/{stage}"


def state_file(cfg: Config, stage: str) -> Path:
    return cfg.layout.stage(stage) / STATE_FILE


def read_state(cfg: Config, stage: str) -> SweepState | None:
    """The run directory's sweep of ``stage``, or None; a corrupt file is refused naming it."""
    path = state_file(cfg, stage)
    if not path.is_file():
        return None
    try:
        return SweepState(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not a memsel sweep state ({e}); remove it or run with --fresh") from None


def write_state(cfg: Config, stage: str, state: SweepState) -> None:
    write_text_atomic(state_file(cfg, stage), json.dumps(asdict(state), indent=2))


def _tune_state_exists(path: str) -> bool:
    from ray import tune

    try:
        return tune.Tuner.can_restore(path)
    except Exception:  # an unreachable storage URI: nothing we can resume from there
        return False


def check_mode(cfg: Config, stage: str, mode: str) -> None:
    """Before anything runs: refuse a sweep over one the run directory holds (without --resume or --fresh),
    a --resume with nothing to resume, or one whose search space changed."""
    state = read_state(cfg, stage)
    exists = state is not None or Path(experiment_path(cfg, stage)).is_dir()
    run = cfg.run_path
    if mode == "new" and exists:
        what = f"sweep {state.sweep_id} (attempt {state.attempt})" if state else "a sweep"
        raise ConfigError(f"{run}: holds {what}; `memsel tune --resume` continues it, `memsel tune --fresh` "
                          "replaces it")
    if mode == "resume":
        if state is None or not _tune_state_exists(state.path):
            raise ConfigError(f"{run}: no sweep to resume (no {STATE_FILE} and Tune state under "
                              f"{experiment_path(cfg, stage)}); run `memsel tune` without --resume")
        if state.search_space != cfg.tune.search_space:
            raise ConfigError(f"field 'tune.search_space': the sweep being resumed searched {state.search_space}, "
                              f"not {cfg.tune.search_space}; resume with the same config, or --fresh")


def begin(cfg: Config, stage: str, mode: str) -> SweepState:
    """This attempt's state (written to sweep.json): a new sweep, or the next attempt of the one resumed.
    --fresh first deletes the old Tune state (its MLflow runs stay)."""
    old = read_state(cfg, stage)
    if mode == "resume" and old is not None:
        state = SweepState(old.sweep_id, old.attempt + 1, old.path, old.parent_run_id, old.search_space)
    else:
        if mode == "fresh" or old is not None:
            remove_tune_state(old.path if old else experiment_path(cfg, stage))
        state = SweepState(uuid.uuid4().hex[:12], 1, experiment_path(cfg, stage),
                           search_space=dict(cfg.tune.search_space))
    write_state(cfg, stage, state)
    return state


def remove_tune_state(path: str) -> None:
    """Delete a sweep's Tune folder (local or on a pyarrow filesystem)."""
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        return
    import pyarrow.fs

    fs, fs_path = pyarrow.fs.FileSystem.from_uri(path)
    try:
        fs.delete_dir(fs_path)
    except (FileNotFoundError, OSError) as e:
        log.warning("could not delete the old sweep state %s: %s", path, e)


def copy_from_checkpoint(checkpoint: Any, name: str, dest: Path) -> Path:
    """Copy file ``name`` out of a Tune checkpoint (local or remote) to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as folder:
        shutil.copyfile(Path(folder) / name, dest)
    return dest
