"""House rules that hold for the whole code base (STYLE.md): short functions, imports that flow one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_60_lines():
    files = [p for folder in ("src", "experiments", "bench") for p in (REPO / folder).rglob("*.py")]
    assert len(files) > 20
    long = [f"{p.relative_to(REPO)}:{line} {name} ({n} lines)" for p in files for name, line, n in _functions(p)
            if n > MAX_FUNCTION_LINES]
    assert not long, "functions over 60 lines: " + "; ".join(long)


@pytest.mark.parametrize("module", ["memsel.config", "memsel.network", "memsel.families", "memsel.losses",
                                    "memsel.data.budget", "memsel.env",
                                    "memsel.manager.streams", "memsel.manager.network", "memsel.manager.budget",
                                    "memsel.manager.env"])
def test_pure_modules_import_no_framework(module):
    """Networks, losses, data and the environment know nothing of Lightning, Ray or MLflow."""
    code = (f"import {module}, sys; "
            "print(*(m for m in ('ray', 'lightning', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
