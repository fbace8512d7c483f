"""Shared fixtures: the real bAbI folder (skipped when absent) and one Ray session for all tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BABI = Path(os.environ.get("MEMSEL_BABI", Path(__file__).resolve().parents[2] / "shared" / "babi"
                           / "tasks_1-20_v1-2"))


@pytest.fixture(scope="session")
def babi_en() -> Path:
    """../shared/babi/tasks_1-20_v1-2/en, or skip the test when the real data is not there."""
    folder = BABI / "en"
    if not folder.is_dir():
        pytest.skip(f"real bAbI data not found at {folder} (set MEMSEL_BABI to its tasks_1-20_v1-2 folder)")
    return folder


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (ray.init costs ~5 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
