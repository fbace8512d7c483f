"""Shared fixtures: the real bAbI folder (skipped when absent) and one Ray session for all tests."""

from __future__ import annotations

import os
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
